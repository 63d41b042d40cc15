"""End to end: an editor project submitted to the real API runs through the real runner to
COMPLETED, and its results come back under the project's output names, in project order.

The project is a water phantom with a cylindrical dose detector (``z_profile``)
and an entrance slab (``entrance``): project order is not alphabetical, while
the merged result lists estimators as their files sort, so the order served
proves the matching by name. The simulator for ``shieldhit`` is the SHIELD-HIT
stand-in, configured as an operator configures the real binary; it writes one
``<stem>_<NNNN>.bdo`` per ``Output`` block of the generated detect.dat, which the
plug-in reads with pymchelper, as with SHIELD-HIT12A itself. For ``builtin`` the
built-in engine itself runs the converted files: real physics.
"""

from __future__ import annotations

import asyncio
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from services.artifacts.store import ArtifactStore
from services.converter import convert
from services.runner.service import Runner
from services.settings import KafkaSettings, RunnerSettings
from tests.api.conftest import Stack, call
from tests.api.test_jobs import submit
from tests.converter.fixtures import project

pytestmark = pytest.mark.kafka

FAKE_SIMULATOR = Path(__file__).resolve().parents[1] / "support" / "fake_simulator.py"


def shieldhit_stand_in() -> dict[str, str]:
    mode = FAKE_SIMULATOR.stat().st_mode
    if not mode & stat.S_IXUSR:
        FAKE_SIMULATOR.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"shieldhit": str(FAKE_SIMULATOR)}


#: sim_type -> the runner's executables for it (the built-in engine needs none: the runner
#: starts it with its own interpreter).
SIMULATORS: dict[str, Callable[[], dict[str, str]]] = {"shieldhit": shieldhit_stand_in,
                                                       "builtin": dict}


@pytest.mark.parametrize("sim_type", sorted(SIMULATORS))
async def test_editor_project_runs_to_completed(stack: Stack, module_kafka: KafkaSettings,
                                                tmp_path: Path, sim_type: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "0.02")
    prefix = f"{module_kafka.topic_prefix}-{uuid.uuid4().hex[:6]}"
    settings = RunnerSettings(
        concurrency=2, wall_time_limit=120, grace_seconds=2.0, workdir_root=tmp_path / "work",
        executables=SIMULATORS[sim_type](), coordinator_group=f"{prefix}-coordinator",
        worker_group=f"{prefix}-workers", worker_name="editor-e2e")
    runner = Runner(module_kafka, settings, ArtifactStore(stack.settings.artifacts.root))
    running = asyncio.create_task(runner.run())
    try:
        session = await stack.user()
        doc = project("water_phantom")
        job_id = await submit(session, {"sim_type": sim_type, "ntasks": 2,
                                        "input_type": "editor", "title": "water phantom",
                                        "input_json": doc})
        async with asyncio.timeout(120):
            while True:
                status, reply = await call(session, "GET", f"/jobs/direct?job_id={job_id}")
                assert status == 200
                assert reply["job_state"] not in ("FAILED", "CANCELED"), reply
                if reply["job_state"] == "COMPLETED":
                    break
                assert not running.done(), running
                await asyncio.sleep(0.1)
        tasks = reply["job_tasks_status"]
        assert [t["task_state"] for t in tasks] == ["COMPLETED", "COMPLETED"]
        assert sum(t["simulated_primaries"] for t in tasks) == 1000

        names = convert(doc, sim_type).outputs
        assert names == ["z_profile", "entrance"] and names != sorted(names)
        status, reply = await call(session, "GET", f"/results?job_id={job_id}")
        assert status == 200
        estimators = reply["estimators"]
        assert [e["name"] for e in estimators] == names
        z_profile, entrance = estimators
        # z_profile: Dose and Fluence (one page each) over the 40 depth bins of its Cyl
        # detector; entrance: the dose in Gy in its one bin.
        assert [len(p["data"]["values"]) for p in z_profile["pages"]] == [40, 40]
        assert [len(p["data"]["values"]) for p in entrance["pages"]] == [1]
        status, reply = await call(session, "GET", f"/estimators?job_id={job_id}")
        assert [e["name"] for e in reply["estimators_metadata"]] == names
        pages = {e["name"]: [p["page_number"] for p in e["pages_metadata"]]
                 for e in reply["estimators_metadata"]}
        assert pages == {"z_profile": [0, 1], "entrance": [0]}
        for name in names:
            status, reply = await call(session, "GET",
                                       f"/results?job_id={job_id}&estimator_name={name}")
            assert status == 200 and reply["name"] == name
        status, reply = await call(session, "GET", f"/inputs?job_id={job_id}")
        assert reply["input"]["input_files"] == convert(doc, sim_type).files
    finally:
        await runner.shutdown()
        await running
