"""The direct platform end to end: real broker, real projector, real simulator processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.artifacts.store import ArtifactStore
from services.contract.envelope import Event
from services.contract.jobs import JobState, split_primaries, task_seed
from services.contract.kafka_io import make_consumer
from services.settings import KafkaSettings, RunnerSettings
from services.simulators.merge import TaskResult, merge_results
from services.simulators.shieldhit import seed_offset
from tests.runner.conftest import beam, helpers, of_type, processes_under, stack, with_

pytestmark = pytest.mark.kafka

S = JobState
TERMINAL = (S.COMPLETED, S.FAILED, S.CANCELED)


def task_results(artifacts: ArtifactStore, completed: list[Event]) -> list[TaskResult]:
    ordered = sorted(completed, key=lambda e: e.payload["task_index"])
    return [TaskResult(e.payload["simulated_primaries"],
                       artifacts.get_json(e.payload["result_ref"])) for e in ordered]


@pytest.mark.parametrize("ntasks", [1, 8])
async def test_job_completes_with_merged_result(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path,
        ntasks: int) -> None:
    total = 8003
    async with stack(kafka_settings, runner_settings, tmp_path) as st:
        job_id = await st.submit(beam(total), ntasks=ntasks, primaries=total)
        view = await st.wait_state(job_id, *TERMINAL)
        assert view.state is S.COMPLETED, view.failure_reason
        events = await st.wait_events(job_id, lambda es: bool(of_type(es, "JobCompleted")))

    shares = split_primaries(total, ntasks)
    scheduled = sorted(of_type(events, "TaskScheduled"), key=lambda e: e.payload["task_index"])
    assert [e.payload["requested_primaries"] for e in scheduled] == shares
    assert [e.payload["seed"] for e in scheduled] == [task_seed(4242, i) for i in range(ntasks)]
    completed = of_type(events, "TaskCompleted")
    assert len(completed) == ntasks
    assert sum(e.payload["simulated_primaries"] for e in completed) == total
    assert sum(t.simulated_primaries for t in view.tasks) == total
    assert all(t.state is S.COMPLETED for t in view.tasks)

    for index, share in enumerate(shares):
        progress = [e.payload["simulated_primaries"] for e in of_type(events, "TaskProgress")
                    if e.payload["task_index"] == index]
        assert progress, f"task {index} reported no progress"
        assert progress == sorted(progress) and len(set(progress)) == len(progress)
        assert progress[-1] == share

    (done,) = of_type(events, "JobCompleted")
    results = task_results(st.artifacts, completed)
    merged = st.artifacts.get_json(done.payload["result_ref"])
    assert merged == merge_results(results)
    assert done.payload["simulated_primaries"] == total
    assert view.result_ref == done.payload["result_ref"] and not view.result_partial
    if ntasks > 1:  # each task has its own seed, so its own noise
        values = [r.document["estimators"][0]["pages"][0]["data"]["values"] for r in results]
        assert len({tuple(v) for v in values}) == ntasks
    (merge_started,) = of_type(events, "MergeStarted")
    assert sorted(merge_started.payload["completed_tasks"]) == list(range(ntasks))
    log_text = st.artifacts.get_bytes(completed[0].payload["log_ref"]).decode()
    assert "Primary particle no." in log_text


async def test_failing_task_gives_partial_result(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path) -> None:
    ntasks, total, base_seed = 4, 4000, 77
    bad = seed_offset(task_seed(base_seed, 2))  # the stand-in's FAIL card names -N values
    async with stack(kafka_settings, runner_settings, tmp_path) as st:
        job_id = await st.submit(beam(total, f"FAIL {bad}\n"), ntasks=ntasks, primaries=total,
                                 base_seed=base_seed)
        view = await st.wait_state(job_id, *TERMINAL)
        events = await st.wait_events(job_id, lambda es: bool(of_type(es, "JobFailed")))

    assert view.state is S.FAILED
    assert view.result_partial and view.result_ref is not None
    assert view.failure_reason == "1 of 4 tasks failed"
    (failed,) = of_type(events, "TaskFailed")
    assert failed.payload["task_index"] == 2 and failed.payload["exit_status"] == 2
    assert "FAIL card" in failed.payload["reason"]
    assert "ERROR: FAIL card" in st.artifacts.get_bytes(failed.payload["log_ref"]).decode()
    (job_failed,) = of_type(events, "JobFailed")
    assert job_failed.payload["task_failures"][0]["task_index"] == 2
    assert job_failed.payload["simulated_primaries"] == 3000
    partial = st.artifacts.get_json(view.result_ref)
    assert partial.pop("partial") is True
    assert partial.pop("tasks_merged_indices") == [0, 1, 3]
    assert partial == merge_results(task_results(st.artifacts,
                                                 of_type(events, "TaskCompleted")))


async def test_all_tasks_failing_fails_the_job(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path) -> None:
    async with stack(kafka_settings, runner_settings, tmp_path) as st:
        job_id = await st.submit(beam(200, "FAIL\n"), ntasks=2, primaries=200)
        view = await st.wait_state(job_id, *TERMINAL)
        events = await st.wait_events(job_id, lambda es: bool(of_type(es, "JobFailed")))
    assert view.state is S.FAILED and view.result_ref is None and not view.result_partial
    assert view.failure_reason is not None
    assert view.failure_reason.startswith("every task failed")
    (job_failed,) = of_type(events, "JobFailed")
    assert [f["task_index"] for f in job_failed.payload["task_failures"]] == [0, 1]
    assert not of_type(events, "JobCompleted")


async def test_unconfigured_simulator_fails_at_once(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path) -> None:
    settings = with_(runner_settings, executables={})
    async with stack(kafka_settings, settings, tmp_path) as st:
        job_id = await st.submit(beam(100), ntasks=2, primaries=100)
        view = await st.wait_state(job_id, *TERMINAL, within=20)
        events = await st.events(job_id)
    assert view.state is S.FAILED
    assert not of_type(events, "TaskStarted")
    reasons = {e.payload["reason"] for e in of_type(events, "TaskFailed")}
    assert reasons == {"simulator 'shieldhit' is not configured on this runner: set "
                       "SIMJOBS_SIM_SHIELDHIT_EXE to the path of its executable"}
    assert "SIMJOBS_SIM_SHIELDHIT_EXE" in (view.failure_reason or "")


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["sigint", "sigkill"])
async def test_cancel_kills_the_process_groups(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, ignore_sigint: bool) -> None:
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "1.0")
    monkeypatch.setenv("FAKE_SIM_CHILD", "1")  # each simulator has a helper in its group
    if ignore_sigint:
        monkeypatch.setenv("FAKE_SIM_IGNORE_SIGINT", "1")
    settings = with_(runner_settings, grace_seconds=0.3 if ignore_sigint else 2.0)
    workdirs = settings.workdir_root
    async with stack(kafka_settings, settings, tmp_path) as st:
        job_id = await st.submit(beam(3000), ntasks=3, primaries=3000)
        deadline = time.monotonic() + 20
        # A simulator starts its helper once it is set up (signal handlers included).
        while len(helpers(workdirs)) < 3:
            assert time.monotonic() < deadline, f"simulators not running: {helpers(workdirs)}"
            await asyncio.sleep(0.05)
        pids = processes_under(workdirs)
        await st.cancel(job_id)
        canceled_at = time.monotonic()
        while any(pid in processes_under(workdirs) for pid in pids):
            assert time.monotonic() - canceled_at < 1.0, \
                f"still running 1 s after the cancel: {processes_under(workdirs)}"
            await asyncio.sleep(0.02)
        view = await st.wait_state(job_id, *TERMINAL)
        events = await st.wait_events(job_id, lambda es: bool(of_type(es, "JobCanceled")))
    assert view.state is S.CANCELED
    assert all(t.state is S.CANCELED for t in view.tasks)
    stopped = of_type(events, "TaskCanceled")
    assert len(stopped) == 3
    expected = {"signal": 9, "exit_code": None} if ignore_sigint else \
        {"signal": None, "exit_code": 130}
    for e in stopped:
        assert {k: e.payload["platform_state"][k] for k in expected} == expected
    (confirmed,) = of_type(events, "JobCanceled")
    assert confirmed.payload == {"reason": "canceled by u:test", "tasks_stopped": 3}
    assert not of_type(events, "TaskCompleted")


async def test_restarted_coordinator_does_not_schedule_again(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path) -> None:
    async with stack(kafka_settings, runner_settings, tmp_path) as st:
        done_job = await st.submit(beam(300), ntasks=3, primaries=300)
        await st.wait_state(done_job, S.COMPLETED)
    before = await st.events(done_job)
    # A new coordinator (a fresh group: it rebuilds from offset 0) with the same topics.
    settings = with_(runner_settings, coordinator_group=f"{kafka_settings.topic_prefix}-c2")
    async with stack(kafka_settings, settings, tmp_path, artifacts_dir=tmp_path / "artifacts"
                     ) as st2:
        second = await st2.submit(beam(200), ntasks=2, primaries=200)
        await st2.wait_state(second, S.COMPLETED)
        after = await st2.events(done_job)
    assert [e.event_id for e in after] == [e.event_id for e in before]


async def test_wall_time_limit_stops_and_fails_the_task(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One 1 s step fits in the limit even when the stand-in's interpreter is slow to start
    # on a loaded machine (seen: > 0.5 s); its ten steps never do.
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "1.0")
    settings = with_(runner_settings, wall_time_limit=3.0, grace_seconds=0.5)
    async with stack(kafka_settings, settings, tmp_path) as st:
        job_id = await st.submit(beam(100), ntasks=1, primaries=100)
        view = await st.wait_state(job_id, *TERMINAL, within=20)
        events = await st.events(job_id)
    assert view.state is S.FAILED
    (failed,) = of_type(events, "TaskFailed")
    assert failed.payload["reason"] == "wall-time limit of 3 s reached"
    assert failed.payload["platform_state"]["state"] == "TIMEOUT"
    assert "Primary particle no." in st.artifacts.get_bytes(failed.payload["log_ref"]).decode()
    assert not processes_under(settings.workdir_root)


async def test_coordinator_given_back_its_partitions_mid_job_still_finishes_it(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebalance of the coordinator group mid-job (another member joins, then leaves)
    hands the job's partition back to the coordinator that already folded its events:
    it must fold them again, or the job is stuck MERGING_QUEUED (seen in CI)."""
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "0.3")
    async with stack(kafka_settings, runner_settings, tmp_path) as st:
        job_id = await st.submit(beam(400), ntasks=2, primaries=400)
        await st.wait_state(job_id, S.RUNNING)
        intruder = make_consumer(kafka_settings, group_id=runner_settings.coordinator_group)
        intruder.subscribe([kafka_settings.jobs_topic])
        await intruder.start()
        try:
            deadline = time.monotonic() + 30
            while not intruder.assignment():  # the group has rebalanced around it
                assert time.monotonic() < deadline, "the intruder never joined the group"
                await intruder.getmany(timeout_ms=100)
        finally:
            await intruder.stop()  # leaves the group: a second rebalance
        view = await st.wait_state(job_id, *TERMINAL)
    assert view.state is S.COMPLETED, view.failure_reason
