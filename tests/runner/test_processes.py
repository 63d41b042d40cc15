"""Runners as real processes: sharing one job's tasks, and leaving tasks behind on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.contract.jobs import JobState, task_seed
from services.settings import KafkaSettings, RunnerSettings
from services.simulators.merge import TaskResult, merge_results
from tests.runner.conftest import (
    ROOT,
    beam,
    of_type,
    processes_under,
    simulators,
    stack,
    with_,
)

pytestmark = pytest.mark.kafka

S = JobState
ASSIGNED = re.compile(r"worker (\S+): assigned tasks partitions \[([0-9, ]*)\]")


def runner_env(kafka: KafkaSettings, settings: RunnerSettings, tmp_path: Path, name: str,
               step_seconds: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMJOBS_", "FAKE_SIM_"))}
    env.update({
        "SIMJOBS_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "SIMJOBS_TOPIC_PREFIX": kafka.topic_prefix,
        "SIMJOBS_JOBS_PARTITIONS": str(kafka.jobs_partitions),
        "SIMJOBS_TASKS_PARTITIONS": str(kafka.tasks_partitions),
        "SIMJOBS_STATE_DIR": str(tmp_path / f"state-{name}"),
        "SIMJOBS_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "SIMJOBS_SIM_SHIELDHIT_EXE": settings.executables["shieldhit"],
        "SIMJOBS_RUNNER_CONCURRENCY": "2",
        "SIMJOBS_RUNNER_GRACE_SECONDS": "2",
        "SIMJOBS_RUNNER_WORKDIR": str(tmp_path / f"work-{name}"),
        "SIMJOBS_RUNNER_COORDINATOR_GROUP": settings.coordinator_group,
        "SIMJOBS_RUNNER_WORKER_GROUP": settings.worker_group,
        "SIMJOBS_RUNNER_NAME": name,
        "FAKE_SIM_STEP_SECONDS": str(step_seconds),
    })
    return env


@contextlib.asynccontextmanager
async def runner_process(env: dict[str, str], log: Path
                         ) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.runner", "--role", "both", cwd=ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def assignments(logs: dict[str, Path]) -> dict[str, set[int]]:
    """Each runner's latest tasks-partition assignment, from its log."""
    latest: dict[str, set[int]] = {}
    for name, path in logs.items():
        for match in ASSIGNED.finditer(path.read_text(errors="replace")):
            latest[name] = {int(p) for p in match.group(2).replace(",", " ").split()}
    return latest


async def wait_for(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process, within: float = 20.0) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), within)


async def test_two_runner_processes_share_the_tasks_of_one_job(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("r1", "r2")}
    envs = {name: runner_env(kafka_settings, runner_settings, tmp_path, name, 0.1)
            for name in logs}
    async with runner_process(envs["r1"], logs["r1"]) as r1, \
            runner_process(envs["r2"], logs["r2"]) as r2, \
            stack(kafka_settings, None, tmp_path) as st:

        def balanced() -> bool:
            latest = assignments(logs)
            return (len(latest) == 2 and all(latest.values())
                    and latest["r1"] | latest["r2"] == {0, 1, 2, 3}
                    and not latest["r1"] & latest["r2"])

        await wait_for(balanced, f"both runners in the group: {logs}")
        job_id = await st.submit(beam(8000), ntasks=8, primaries=8000)
        view = await st.wait_state(job_id, S.COMPLETED, S.FAILED, S.CANCELED)
        assert view.state is S.COMPLETED, view.failure_reason
        events = await st.wait_events(job_id, lambda es: bool(of_type(es, "JobCompleted")))
        assert await stop(r1) == 0
        assert await stop(r2) == 0

    started = of_type(events, "TaskStarted")
    assert sorted(e.payload["task_index"] for e in started) == list(range(8))
    workers = [e.payload["worker"] for e in started]
    assert set(workers) == {"r1", "r2"}, workers
    completed = sorted(of_type(events, "TaskCompleted"), key=lambda e: e.payload["task_index"])
    (done,) = of_type(events, "JobCompleted")
    merged = st.artifacts.get_json(done.payload["result_ref"])
    assert merged == merge_results([TaskResult(e.payload["simulated_primaries"],
                                               st.artifacts.get_json(e.payload["result_ref"]))
                                    for e in completed])


async def test_sigterm_leaves_running_tasks_to_the_next_runner(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path) -> None:
    log = tmp_path / "r1.log"
    env = runner_env(kafka_settings, runner_settings, tmp_path, "r1", 1.0)
    async with stack(kafka_settings, None, tmp_path) as st:
        async with runner_process(env, log) as r1:
            job_id = await st.submit(beam(200), ntasks=2, primaries=200, base_seed=9)
            workdir = tmp_path / "work-r1"
            await wait_for(lambda: len(simulators(workdir)) == 2, "r1's simulators")
            pids = processes_under(workdir)
            assert await stop(r1) == 0
            assert not any(pid in processes_under(workdir) for pid in pids)
        events = await st.events(job_id)
        assert len(of_type(events, "TaskStarted")) == 2
        assert not [e for e in events if e.type in ("TaskCompleted", "TaskFailed")]

    # The next runner (in-process, same groups and artifact store) re-runs both tasks.
    async with stack(kafka_settings, with_(runner_settings, worker_name="r2"), tmp_path) as st2:
        view = await st2.wait_state(job_id, S.COMPLETED, S.FAILED, S.CANCELED)
        assert view.state is S.COMPLETED, view.failure_reason
        events = await st2.wait_events(job_id, lambda es: bool(of_type(es, "JobCompleted")))
    started = of_type(events, "TaskStarted")
    assert sorted(e.payload["worker"] for e in started) == ["r1", "r1", "r2", "r2"]
    for e in of_type(events, "TaskCompleted"):
        text = st2.artifacts.get_bytes(e.payload["log_ref"]).decode()
        assert f": {task_seed(9, e.payload['task_index'])}\n" in text  # the same seed again
    assert len(of_type(events, "TaskScheduled")) == 2


async def test_sigkill_of_a_runner_kills_its_simulators_and_the_job_still_completes(
        kafka_settings: KafkaSettings, runner_settings: RunnerSettings, tmp_path: Path) -> None:
    log = tmp_path / "r1.log"
    env = runner_env(kafka_settings, runner_settings, tmp_path, "r1", 1.0)
    env["FAKE_SIM_KEEP_GOING"] = "1"  # only the kernel can stop it once r1 is gone
    async with stack(kafka_settings, None, tmp_path) as st, runner_process(env, log) as r1:
        job_id = await st.submit(beam(200), ntasks=2, primaries=200, base_seed=11)
        workdir = tmp_path / "work-r1"
        await wait_for(lambda: len(simulators(workdir)) == 2, "r1's simulators")
        pids = processes_under(workdir)
        r1.kill()
        await r1.wait()
        await wait_for(lambda: not any(pid in processes_under(workdir) for pid in pids),
                       "the killed runner's simulators to die", within=5.0)
    async with stack(kafka_settings, with_(runner_settings, worker_name="r2"), tmp_path) as st2:
        view = await st2.wait_state(job_id, S.COMPLETED, S.FAILED, S.CANCELED)
        assert view.state is S.COMPLETED, view.failure_reason
        events = await st2.wait_events(job_id, lambda es: bool(of_type(es, "JobCompleted")))
    for e in of_type(events, "TaskCompleted"):
        text = st2.artifacts.get_bytes(e.payload["log_ref"]).decode()
        assert f": {task_seed(11, e.payload['task_index'])}\n" in text  # same seed re-run
