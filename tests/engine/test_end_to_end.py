"""The built-in engine through the whole service: API, Kafka, projector, runner, merge."""

from __future__ import annotations

import asyncio
import asyncio.subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.artifacts.store import ArtifactStore
from services.runner.service import Runner
from services.settings import RunnerSettings
from tests.api.conftest import (
    Realm,
    Stack,
    api_settings,
    call,
    make_settings,
    realm,  # noqa: F401 - a fixture used by the stack below
    running_stack,
)
from tests.conftest import fresh_topics
from tests.engine.helpers import beam, depth_dose_detect, distal_r80, files, pstar_range

pytestmark = pytest.mark.kafka

CSDA_150 = 15.77


@pytest.fixture
async def service(kafka_bootstrap: str, realm: Realm,  # noqa: F811
                  tmp_path: Path) -> AsyncIterator[Stack]:
    """API + projector (SQLite) + a runner with no simulator configured at all."""
    kafka = await fresh_topics(kafka_bootstrap, tasks_partitions=4, client_id="test-engine")
    settings = make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'rm.sqlite3'}",
                             tmp_path / "state")
    prefix = kafka.topic_prefix
    runner = Runner(kafka, RunnerSettings(
        concurrency=2, wall_time_limit=300, grace_seconds=2.0, workdir_root=tmp_path / "work",
        executables={}, coordinator_group=f"{prefix}-coordinator",
        worker_group=f"{prefix}-workers", worker_name="engine-test"),
        ArtifactStore(settings.artifacts.root))
    async with running_stack(settings, api_settings(realm)) as stack:
        task = asyncio.create_task(runner.run())
        try:
            yield stack
        finally:
            await runner.shutdown()
            await task


async def job_state(stack: Stack, session: Any, job_id: str, within: float) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            status, body = await call(session, "GET", f"/jobs/direct?job_id={job_id}")
            assert status == 200, body
            if body["job_state"] in ("COMPLETED", "FAILED", "CANCELED"):
                return dict(body)
            await asyncio.sleep(0.2)


async def test_builtin_job_runs_to_a_merged_depth_dose(service: Stack) -> None:
    session = await service.user()
    inputs = files(beam(150.0, 2000), depth_dose_detect(20.0, 200))
    status, reply = await call(session, "POST", "/jobs/direct", json={
        "sim_type": "builtin", "ntasks": 4, "input_type": "files", "input_files": inputs,
        "title": f"engine {uuid.uuid4().hex[:6]}"})
    assert status == 202, reply
    job_id = reply["job_id"]
    final = await job_state(service, session, job_id, within=150)
    assert final["job_state"] == "COMPLETED", final
    tasks = final["job_tasks_status"]
    assert len(tasks) == 4
    assert all(t["task_state"] == "COMPLETED" and t["simulated_primaries"] == 500
               for t in tasks), tasks
    status, results = await call(session, "GET", f"/results?job_id={job_id}")
    assert status == 200, results
    (estimator,) = results["estimators"]
    assert estimator["name"] == "dd"
    page = estimator["pages"][0]
    assert page["data"]["name"] == "DOSE" and page["axis_dim1"]["name"] == "Position (Z)"
    z = np.asarray(page["axis_dim1"]["values"])
    dose = np.asarray(page["data"]["values"])
    error = np.asarray(page["data"]["error"])  # the merge's spread over the 4 tasks
    assert len(dose) == 200 and np.all(error[dose > 0] > 0)
    assert distal_r80(z, dose) == pytest.approx(pstar_range(150.0), rel=0.01)


@pytest.mark.parametrize(("name", "text", "card"), [
    ("beam.dat", beam(150.0, 100, "USECBEAM sobp.dat\n"), "USECBEAM"),
    ("detect.dat", depth_dose_detect(20.0, 10) + "    Diff1 0 160 640\n", "DIFF1"),
    ("geo.dat", "    0    0          t\n  TRC    1       0.0       0.0       0.0       1.0"
                "       1.0       1.0\n                 1.0       2.0\n  END\n", "TRC"),
], ids=["beam", "detect", "geo"])
async def test_builtin_input_outside_the_subset_is_refused_at_submit(
        service: Stack, name: str, text: str, card: str) -> None:
    session = await service.user()
    inputs = {**files(beam(150.0, 100), depth_dose_detect(20.0, 10)), name: text}
    status, reply = await call(session, "POST", "/jobs/direct", json={
        "sim_type": "builtin", "ntasks": 2, "input_type": "files", "input_files": inputs})
    assert status == 400
    assert f"{name}:" in reply["message"] and f": {card}: " in reply["message"]
    assert (reply["file"], reply["card"]) == (name, card) and reply["line"] > 0
    # Nothing half-made is left: after a good submission, the user has that job only.
    status, reply = await call(session, "POST", "/jobs/direct", json={
        "sim_type": "builtin", "ntasks": 1, "input_type": "files",
        "input_files": files(beam(150.0, 10), depth_dose_detect(20.0, 10))})
    assert status == 202, reply
    async with asyncio.timeout(30):
        while True:
            status, listing = await call(session, "GET", "/user/simulations")
            assert status == 200
            if listing["simulations_count"]:
                break
            await asyncio.sleep(0.1)
    assert [s["job_id"] for s in listing["simulations"]] == [reply["job_id"]]
