"""The batch platform end to end: API, Kafka, projector, bridge, sshd and a real SLURM.

Every test starts its own bridge (own consumer group and topics), on the session's
SLURM cluster; the simulator on the cluster is the SHIELD-HIT12A stand-in.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from services.contract.envelope import Event
from services.contract.jobs import JobState, task_seed
from services.converter import convert
from services.ops.metrics import exposition
from services.settings import KafkaSettings, RunnerSettings
from services.simulators.shieldhit import seed_offset, set_nstat
from tests.api.conftest import Realm, call
from tests.converter.fixtures import project
from tests.runner.conftest import FAKE_SIMULATOR, beam, of_type
from tests.slurm.conftest import (
    ApiBatchStack,
    ClusterSite,
    api_batch_stack,
    bridge_settings,
    cluster_run,
    slurm_jobs_named,
)

pytestmark = [pytest.mark.slurm, pytest.mark.kafka]

S = JobState
TERMINAL = (S.COMPLETED, S.FAILED, S.CANCELED)


async def wait_view(stack: ApiBatchStack, job_id: str, *states: JobState,
                    within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    view = None
    while time.monotonic() < deadline:
        view = (await stack.views(job_id)).get(job_id)
        if view is not None and view.state in states:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"{job_id} not in {states} after {within} s: "
                         f"{view.state if view else None}")


async def submit_batch(session: Any, files: dict[str, str], ntasks: int,
                       sim_type: str = "shieldhit",
                       **batch_options: Any) -> tuple[int, dict[str, Any]]:
    return await call(session, "POST", "/jobs/batch", json={
        "sim_type": sim_type, "ntasks": ntasks, "input_type": "files",
        "input_files": files, "batch_options": {"cluster_name": "local", **batch_options}})


def runner_settings(tmp_path: Path, kafka: KafkaSettings) -> RunnerSettings:
    os.environ.setdefault("FAKE_SIM_STEP_SECONDS", "0.05")
    return RunnerSettings(
        concurrency=4, wall_time_limit=60, grace_seconds=2.0, workdir_root=tmp_path / "direct",
        executables={"shieldhit": str(FAKE_SIMULATOR)},
        coordinator_group=f"{kafka.topic_prefix}-coordinator",
        worker_group=f"{kafka.topic_prefix}-workers", worker_name="direct-twin")


# --- a whole job ----------------------------------------------------------------------------


def job_input(sim_type: str) -> dict[str, str]:
    """4000 primaries: the SHIELD-HIT stand-in's input, or the water phantom for the engine."""
    if sim_type == "shieldhit":
        return beam(4000)
    files = convert(project("water_phantom"), sim_type).files
    return {**files, "beam.dat": set_nstat(files["beam.dat"], 4000)}


@pytest.mark.parametrize("sim_type", ["shieldhit", "builtin"])
async def test_batch_job_completes_and_merges_as_the_direct_platform(
        sim_type: str, tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings,
                               runner=runner_settings(tmp_path, kafka_settings)) as stack:
        session = await stack.api.keycloak_user(realm)
        status, body = await submit_batch(session, job_input(sim_type), 4, sim_type=sim_type,
                                          array_options={"time": "00:05:00"})
        assert (status, body["message"]) == (202, "Batch job submitted"), body
        job_id = body["job_id"]
        view = (await stack.views(job_id))[job_id]
        assert view.array_job_id and view.collect_job_id and view.cluster_name == "local"

        done = await wait_view(stack, job_id, *TERMINAL, within=90)
        assert done.state is S.COMPLETED, done.failure_reason
        assert [(t.state, t.platform_state, t.platform_exit_code) for t in done.tasks] == \
            [(S.COMPLETED, "COMPLETED", 0)] * 4
        assert sum(t.simulated_primaries for t in done.tasks) == 4000

        events = await stack.events(job_id)
        submitted = of_type(events, "JobSubmitted")[0]
        seeds = {e.payload["task_index"]: e.payload["seed"]
                 for e in of_type(events, "TaskScheduled")}
        assert seeds == {i: task_seed(submitted.payload["base_seed"], i) for i in range(4)}
        assert [e.type for e in events].count("BatchSubmitted") == 1
        if sim_type == "shieldhit":  # the stand-in runs 2 s per task: polls see it running
            progress = of_type(events, "TaskProgress")
            assert any(0 < e.payload["simulated_primaries"] < 1000 for e in progress), \
                "progress was read from the task logs while the tasks ran"
        started = of_type(events, "TaskStarted")
        assert sorted(e.payload["task_index"] for e in started) == [0, 1, 2, 3]
        assert all(e.payload["worker"].startswith("slurm:local:") for e in started)

        slurm = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")
        assert slurm == [f"{view.array_job_id}_{i}|COMPLETED" for i in range(4)]
        metrics = exposition().decode()
        for line in ('simjobs_slurm_submissions_total{cluster="local",outcome="submitted"}',
                     'simjobs_slurm_polls_total{cluster="local",outcome="ok"}',
                     'simjobs_slurm_round_trips_total{cluster="local",kind="exec"}'):
            assert line in metrics

        # The direct platform, same input and base seed: the same merged result.
        twin = f"20261201-000000-{job_id[16:-5]}DIRECT"
        await stack.producer.publish(Event(
            type="JobSubmitted", job_id=twin, producer="test",
            payload={**{k: v for k, v in submitted.payload.items() if k != "batch_options"},
                     "platform": "direct"}))
        direct = await wait_view(stack, twin, *TERMINAL, within=60)
        assert direct.state is S.COMPLETED, direct.failure_reason
        status, batch_results = await call(session, "GET", f"/results?job_id={job_id}")
        assert status == 200
        status, direct_results = await call(session, "GET", f"/results?job_id={twin}")
        assert status == 200
        assert batch_results["estimators"] == direct_results["estimators"]
        assert batch_results["estimators"][0]["pages"][0]["data"]["error"] is not None


# --- failures on the cluster ----------------------------------------------------------------


async def test_failed_and_timed_out_tasks_keep_exit_code_log_and_slurm_state(
        tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    base_seed = 777
    failing, stuck = (seed_offset(task_seed(base_seed, i)) for i in (0, 1))
    files = beam(3000, extra=f"FAIL {failing}\nHANG {stuck}\n")
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        session = await stack.api.keycloak_user(realm, "plgfail")
        job_id = await stack.publish_batch(
            files, ntasks=3, primaries=3000, owner="kc:plgfail", base_seed=base_seed,
            batch_options={"array_options": {"time": "1"}})
        # SLURM enforces time limits in whole minutes, checked periodically: ~65-90 s.
        done = await wait_view(stack, job_id, *TERMINAL, within=180)
        assert done.state is S.FAILED and done.result_partial
        assert done.failure_reason == "2 of 3 tasks failed"
        failed, timed_out, completed = done.tasks
        assert (failed.state, failed.exit_status, failed.platform_state,
                failed.platform_exit_code) == (S.FAILED, 2, "FAILED", 2)
        assert failed.failure_reason == \
            f"simulator exited with status 2: ERROR: FAIL card in beam.dat (offset {failing})"
        assert (timed_out.state, timed_out.platform_state) == (S.FAILED, "TIMEOUT")
        assert timed_out.failure_reason == "time limit reached (SLURM state TIMEOUT)"
        assert timed_out.simulated_primaries > 0  # its progress before it got stuck
        assert (completed.state, completed.platform_state) == (S.COMPLETED, "COMPLETED")

        status, body = await call(session, "GET", f"/logfiles?job_id={job_id}")
        assert status == 200
        logs = body["logfiles"]
        assert any("ERROR: FAIL card in beam.dat" in text for name, text in logs.items()
                   if name.startswith("task_1"))
        assert any("DUE TO TIME LIMIT" in text for name, text in logs.items()
                   if name.startswith("task_2"))
        events = await stack.events(job_id)
        timeout_event = next(e for e in of_type(events, "TaskFailed")
                             if e.payload["task_index"] == 1)
        assert timeout_event.payload["platform_state"] == {
            "state": "TIMEOUT", "exit_code": 0, "signal": 15}


# --- cancel -----------------------------------------------------------------------------------


async def test_cancel_of_a_running_job_reaches_slurm_within_one_poll_interval(
        tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    interval = 10.0
    settings = bridge_settings(tmp_path, kafka_settings,
                               cluster_site.config(poll_interval=interval))
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        session = await stack.api.keycloak_user(realm)
        status, body = await submit_batch(session, beam(2000, extra="HANG\n"), 2)
        assert status == 202, body
        job_id = body["job_id"]
        view = await wait_view(stack, job_id, S.RUNNING, within=60)
        while not all(t.state is S.RUNNING for t in view.tasks):
            await asyncio.sleep(0.1)
            view = (await stack.views(job_id))[job_id]
        names = (f"simjobs-{job_id}", f"simjobs-{job_id}-collect")

        status, body = await call(session, "DELETE", f"/jobs/batch?job_id={job_id}")
        asked = time.monotonic()
        assert (status, body) == (200, {"message": "Job canceled"})
        status, body = await call(session, "GET", f"/jobs/batch?job_id={job_id}")
        assert body["job_state"] == "CANCELED"
        assert {t["task_state"] for t in body["job_tasks_status"]} == {"CANCELED"}
        while True:
            states = [line.split("|")[1] for name in names
                      for line in await slurm_jobs_named(cluster_site, name)]
            if states and set(states) == {"CANCELLED"}:
                break
            assert time.monotonic() - asked < interval, f"SLURM still shows {states}"
            await asyncio.sleep(0.2)
        assert len(states) == 3  # both tasks and the collect job

        events = await stack.events(job_id)
        while not of_type(events, "JobCanceled"):
            await asyncio.sleep(0.2)
            events = await stack.events(job_id)
        assert of_type(events, "JobCanceled")[0].payload["tasks_stopped"] == 2
        confirmed = {e.payload["task_index"]: e.payload["platform_state"]["state"]
                     for e in of_type(events, "TaskCanceled")}
        assert confirmed == {0: "CANCELLED", 1: "CANCELLED"}
        final = (await stack.views(job_id))[job_id]
        assert [t.platform_state for t in final.tasks] == ["CANCELLED", "CANCELLED"]


# --- results of any size ----------------------------------------------------------------------

MESH = """Geometry Mesh
    Name Cube
    X 0 10 60
    Y 0 10 60
    Z 0 20 60
Output
    Filename dose_mesh.bdo
    Geo Cube
    Quantity Dose
"""


async def test_results_over_a_megabyte_come_back_whole_and_verified(
        tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        job_id = await stack.publish_batch(beam(2000, detect=MESH), ntasks=2, primaries=2000)
        done = await wait_view(stack, job_id, *TERMINAL, within=120)
        assert done.state is S.COMPLETED, done.failure_reason
        sizes = await cluster_run(cluster_site, "stat -c %s "
                                  f"{cluster_site.config().work_root}/{job_id}/tasks/*/*.bdo")
        assert all(int(size) > 1_000_000 for size in sizes.stdout_text.split()), sizes
        result = stack.artifacts.get_json(done.result_ref)
        page = result["estimators"][0]["pages"][0]
        assert len(page["data"]["values"]) == 60 ** 3
        for task in done.tasks:
            task_result = stack.artifacts.get_json(task.result_ref)
            assert len(task_result["estimators"][0]["pages"][0]["data"]["values"]) == 60 ** 3


# --- editor projects ------------------------------------------------------------------------


async def test_editor_project_runs_on_the_cluster_with_results_in_project_order(
        tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        session = await stack.api.keycloak_user(realm)
        doc = project("water_phantom")
        status, body = await call(session, "POST", "/jobs/batch", json={
            "sim_type": "shieldhit", "ntasks": 2, "input_type": "editor",
            "input_json": doc, "batch_options": {"cluster_name": "local"}})
        assert (status, body["message"]) == (202, "Batch job submitted"), body
        done = await wait_view(stack, body["job_id"], *TERMINAL, within=90)
        assert done.state is S.COMPLETED, done.failure_reason
        status, reply = await call(session, "GET", f"/results?job_id={body['job_id']}")
        assert status == 200
        assert [e["name"] for e in reply["estimators"]] == convert(doc, "shieldhit").outputs
