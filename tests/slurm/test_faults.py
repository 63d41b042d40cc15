"""Faults around the batch platform: a dropped SSH connection, a SIGKILLed bridge, replays.

The log is the bridge's memory: whatever happens to the bridge or its connection,
every SLURM job is submitted once, tracked to its end, and nothing is run again
when the log is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devstack import process_alive, read_pid
from services.contract.envelope import Event
from services.contract.jobs import JobState
from services.platform.inputs import task_input_files
from services.settings import KafkaSettings
from services.simulators.registry import plugin_for
from services.slurm_bridge.cluster import ClusterClient
from services.slurm_bridge.ssh import AsyncSSHBackend
from services.slurm_bridge.submission import plan_submission
from tests.runner.conftest import beam, of_type, stack
from tests.slurm.conftest import (
    BridgeProcess,
    ClusterSite,
    batch_job_event,
    batch_stack,
    bridge_settings,
    cluster_json,
    running_bridge,
    slurm_jobs_named,
)
from tests.support.fault_tally import TALLY, FaultRow

pytestmark = [pytest.mark.slurm, pytest.mark.kafka]

S = JobState
SLOW = ("export FAKE_SIM_STEP_SECONDS=0.6",)  # ten steps: about 6 s per task


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines()
                     if line.startswith("PPid:")), None)
        if ppid == str(pid):
            found.append(int(entry.name))
    return found


def kill_ssh_sessions(site: ClusterSite) -> list[int]:
    """SIGKILL every process below the sshd listener: each open SSH connection drops.

    Parents go first, so no session lives on long enough to report how its command
    ended: the client sees the connection break, as when a network link dies.
    """
    master = read_pid(site.handle.sshd_pid_file)
    assert master is not None and process_alive(master)
    victims: list[int] = []
    level = _children(master)
    while level:  # the whole tree first: a killed parent's children move to PID 1
        victims.extend(level)
        level = [child for pid in level for child in _children(pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def single_terminal_events(events: list[Event], ntasks: int) -> None:
    ended = [e for e in events if e.type in ("TaskCompleted", "TaskFailed", "TaskCanceled")]
    by_task: dict[int, set[str]] = {}
    for event in ended:
        by_task.setdefault(event.payload["task_index"], set()).add(event.event_id)
    assert by_task == {i: by_task[i] for i in range(ntasks)}
    assert all(len(ids) == 1 for ids in by_task.values()), by_task


@pytest.mark.faults
async def test_dropped_ssh_connection_is_reopened_and_the_job_completes(
        tmp_path: Path, kafka_settings: KafkaSettings, cluster_site: ClusterSite,
        ) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config(setup=SLOW))
    async with batch_stack(kafka_settings, tmp_path, settings) as batch:
        job_id = await batch.submit(beam(2000), ntasks=2, primaries=2000)
        await batch.base.wait_state(job_id, S.RUNNING, within=60)
        backend = batch.backends["local"]
        assert backend.connects == 1
        assert kill_ssh_sessions(cluster_site), "no SSH session to drop"
        done = await batch.base.wait_state(job_id, S.COMPLETED, S.FAILED, within=90)
        assert done.state is S.COMPLETED, done.failure_reason
        assert backend.connects >= 2
        events = await batch.base.events(job_id)
        single_terminal_events(events, 2)
        assert len(of_type(events, "BatchSubmitted")) == 1
        assert len(await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")) == 2
        TALLY.rows.append(FaultRow("drop SSH of slurm bridge", 1, 1, 0, 0, 0, verify_ok=None))


@pytest.mark.faults
async def test_bridge_killed_mid_job_resumes_without_a_second_sbatch(
        tmp_path: Path, kafka_settings: KafkaSettings, cluster_site: ClusterSite,
        bridge_process: BridgeProcess) -> None:
    async with stack(kafka_settings, None, tmp_path) as base:
        bridge_process.env["SIMJOBS_CLUSTERS"] = cluster_json(cluster_site.config(setup=SLOW))
        bridge_process.start()
        event = batch_job_event(base.artifacts, beam(3000), ntasks=3, primaries=3000)
        await base.producer.publish(event)
        job_id = event.job_id
        await base.wait_events(job_id, lambda es: bool(of_type(es, "TaskStarted")), within=60)
        bridge_process.kill()
        slurm_before = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")
        assert any(line.endswith("|RUNNING") for line in slurm_before), slurm_before

        bridge_process.start()
        done = await base.wait_state(job_id, S.COMPLETED, S.FAILED, within=120)
        assert done.state is S.COMPLETED, done.failure_reason
        events = await base.events(job_id)
        assert [e.type for e in events].count("BatchSubmitted") == 1
        single_terminal_events(events, 3)
        array = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")
        collect = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}-collect")
        assert [line.split("|")[1] for line in array] == ["COMPLETED"] * 3
        assert len(collect) == 1
        assert {line.split("_")[0] for line in array} == {done.array_job_id}
        TALLY.rows.append(FaultRow("SIGKILL slurm bridge", 1, 1, 0, 0, 0, verify_ok=None))


async def test_a_submission_never_recorded_in_the_log_is_adopted_not_repeated(
        tmp_path: Path, kafka_settings: KafkaSettings, cluster_site: ClusterSite) -> None:
    config = cluster_site.config()
    settings = bridge_settings(tmp_path, kafka_settings, config)
    async with stack(kafka_settings, None, tmp_path) as base:
        event = batch_job_event(base.artifacts, beam(2000), ntasks=2, primaries=2000)
        await base.producer.publish(event)
        # What a bridge did before it was killed between sbatch and BatchSubmitted.
        plan = plan_submission(
            job_id=event.job_id, cluster=config,
            simulator=plugin_for("shieldhit", config.executables["shieldhit"]),
            input_files=await task_input_files(base.artifacts, event.payload["input_ref"]),
            total_primaries=2000, ntasks=2, base_seed=event.payload["base_seed"],
            batch_options=event.payload["batch_options"])
        backend = AsyncSSHBackend(config)
        try:
            ids = await ClusterClient(config, backend, command_timeout=30).submit(plan)
        finally:
            await backend.close()

        async with running_bridge(kafka_settings, settings, base.artifacts) as (_, backends):
            done = await base.wait_state(event.job_id, S.COMPLETED, S.FAILED, within=90)
            assert done.state is S.COMPLETED, done.failure_reason
            assert (done.array_job_id, done.collect_job_id) == (ids.array_job_id,
                                                                ids.collect_job_id)
            assert not [c for c in backends["local"].commands if "submit.sh" in c]
        array = await slurm_jobs_named(cluster_site, f"simjobs-{event.job_id}")
        assert len(array) == 2 and {line.split("_")[0] for line in array} == \
            {ids.array_job_id}


async def test_replaying_the_log_runs_no_sbatch_and_no_scancel(
        tmp_path: Path, kafka_settings: KafkaSettings, cluster_site: ClusterSite) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with batch_stack(kafka_settings, tmp_path, settings) as batch:
        finished = await batch.submit(beam(1000), ntasks=2, primaries=1000)
        canceled = await batch.submit(beam(1000, extra="HANG\n"), ntasks=2, primaries=1000)
        await batch.base.wait_state(canceled, S.RUNNING, within=60)
        await batch.base.cancel(canceled)
        await batch.base.wait_events(canceled, lambda es: bool(of_type(es, "JobCanceled")),
                                     within=60)
        await batch.base.wait_state(finished, S.COMPLETED, within=60)
        first = batch.backends["local"].commands
        assert sum("submit.sh" in c for c in first) == 2
        assert sum(c.startswith("scancel") for c in first) == 1

        # A second bridge that reads the whole log again (a fresh consumer group).
        again = replace(settings, group_id=f"{kafka_settings.topic_prefix}-replay")
        async with running_bridge(kafka_settings, again, batch.base.artifacts) as (
                bridge, backends):
            deadline = time.monotonic() + 30
            while not bridge.caught_up():
                assert time.monotonic() < deadline, "the replaying bridge never caught up"
                await asyncio.sleep(0.1)
            await asyncio.sleep(3 * settings.clusters[0].poll_interval)
            assert backends["local"].commands == []
            assert bridge.producer.sent == {}


async def test_cancel_racing_the_submission_leaves_nothing_running(
        tmp_path: Path, kafka_settings: KafkaSettings, cluster_site: ClusterSite) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with batch_stack(kafka_settings, tmp_path, settings) as batch:
        job_id = await batch.submit(beam(1000, extra="HANG\n"), ntasks=2, primaries=1000)
        await batch.base.cancel(job_id)  # before the bridge can have submitted it
        events = await batch.base.wait_events(
            job_id, lambda es: bool(of_type(es, "JobCanceled")), within=60)
        view = await batch.base.wait_state(job_id, S.CANCELED)
        submitted = of_type(events, "BatchSubmitted")
        if submitted:  # the submission won the race: what it started was cancelled
            states = {line.split("|")[1] for line in
                      await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")}
            collect = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}-collect")
            assert states <= {"CANCELLED"} and [c.split("|")[1] for c in collect] == \
                ["CANCELLED"]
            assert view.array_job_id == submitted[0].payload["array_job_id"]
        else:
            assert await slurm_jobs_named(cluster_site, f"simjobs-{job_id}") == []
