"""Faults around the batch platform: a dropped SSH connection, a SIGKILLed bridge, replays.

The log is the bridge's memory: whatever happens to the bridge or its connection,
every SLURM job is submitted once, tracked to its end, and nothing is run again
when the log is read again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.contract.envelope import Event
from services.contract.jobs import JobState
from services.platform.inputs import task_input_files
from services.projector.state import JobView
from services.settings import KafkaSettings
from services.simulators.registry import plugin_for
from services.slurm_bridge.cluster import ClusterClient
from services.slurm_bridge.ssh import AsyncSSHBackend
from services.slurm_bridge.submission import plan_submission
from tests.runner.conftest import Stack, beam, of_type, stack
from tests.slurm.conftest import (
    BridgeProcess,
    ClusterSite,
    batch_job_event,
    batch_stack,
    bridge_settings,
    client_address,
    cluster_json,
    cluster_run,
    kill_ssh_connection,
    running_bridge,
    slurm_jobs_named,
)
from tests.support.fault_tally import TALLY, FaultRow
from tests.test_audit import audit, wait_caught_up

pytestmark = [pytest.mark.slurm, pytest.mark.kafka]

S = JobState
SLOW = ("export FAKE_SIM_STEP_SECONDS=0.6",)  # ten steps: about 6 s per task
REF = "ref"  # the cluster of the undisturbed reference runs (fast steps)


def tally_job(events: list[Event], ntasks: int, row: FaultRow, *, ended: str,
              ) -> None:
    """Count into ``row`` what the job's log shows, then assert none lost or doubled.

    A task is lost without an ``ended`` event, doubled with two of them under different
    event ids (a retried publish repeats the id, which the fold applies once).
    """
    by_task: dict[int, set[str]] = {}
    for event in events:
        if event.type in ("TaskCompleted", "TaskFailed", "TaskCanceled"):
            by_task.setdefault(event.payload["task_index"], set()).add(event.event_id)
    row.lost_events += sum(1 for i in range(ntasks) if i not in by_task)
    row.doubled_events += sum(len(ids) - 1 for ids in by_task.values())
    row.rerun_tasks += max(0, len(of_type(events, "TaskStarted")) - ntasks)
    assert sorted(by_task) == list(range(ntasks)), by_task
    assert all(len(ids) == 1 for ids in by_task.values()), by_task
    assert sorted(e.payload["task_index"] for e in of_type(events, ended)) == \
        list(range(ntasks))


async def undisturbed_result(base: Stack, files: dict[str, str], *, ntasks: int,
                             primaries: int, base_seed: int) -> Any:
    """The merged result of the same job (input, seeds) run on the ``ref`` cluster, unharmed.

    ``ref`` is the same SLURM reached through the same bridge, only with fast simulator
    steps (the step time changes when outputs appear, not what they hold).
    """
    event = batch_job_event(base.artifacts, files, ntasks=ntasks, primaries=primaries,
                            cluster=REF, base_seed=base_seed)
    await base.producer.publish(event)
    done = await base.wait_state(event.job_id, S.COMPLETED, S.FAILED, within=90)
    assert done.state is S.COMPLETED, done.failure_reason
    assert done.result_ref is not None
    return base.artifacts.get_json(done.result_ref)


async def compare_result(base: Stack, done: JobView, files: dict[str, str], *,
                         ntasks: int, primaries: int, base_seed: int, row: FaultRow) -> None:
    """The disturbed job's merged result equals an undisturbed run's with the same seeds."""
    assert done.result_ref is not None
    disturbed = base.artifacts.get_json(done.result_ref)
    reference = await undisturbed_result(base, files, ntasks=ntasks, primaries=primaries,
                                         base_seed=base_seed)
    assert disturbed == reference
    row.results_equal += 1


async def verify_read_model(base: Stack, row: FaultRow) -> None:
    """``python -m services.audit verify`` (in process): the read model equals a rebuild."""
    await wait_caught_up(base.engine, base.kafka)
    url = base.engine.url.render_as_string(hide_password=False)
    code, out = await audit("verify", "--database", url, kafka=base.kafka)
    row.verify_ok = code == 0 and "read model equals rebuild" in out
    assert row.verify_ok, out


@pytest.mark.faults
async def test_dropped_ssh_connection_is_reopened_and_the_job_completes(
        tmp_path: Path, kafka_settings: KafkaSettings, cluster_site: ClusterSite,
        ) -> None:
    row = FaultRow("drop SSH of slurm bridge")
    TALLY.rows.append(row)
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config(setup=SLOW),
                               cluster_site.config(REF))
    files, seed = beam(2000), 5151
    async with batch_stack(kafka_settings, tmp_path, settings) as batch:
        job_id = await batch.submit(files, ntasks=2, primaries=2000, base_seed=seed)
        row.jobs += 1
        await batch.base.wait_state(job_id, S.RUNNING, within=60)
        backend = batch.backends["local"]
        assert backend.connects == 1
        bystander = AsyncSSHBackend(cluster_site.config())  # another user of the sshd
        try:
            assert (await bystander.run("true", time_limit=30)).returncode == 0
            kill_ssh_connection(cluster_site, client_address(backend))
            done = await batch.base.wait_state(job_id, S.COMPLETED, S.FAILED, within=90)
            alive = await bystander.run("echo alive", time_limit=30)
            assert (alive.returncode, alive.stdout_text, bystander.connects) == \
                (0, "alive\n", 1), "the other SSH session was dropped too"
        finally:
            await bystander.close()
        assert done.state is S.COMPLETED, done.failure_reason
        row.completed += 1
        assert backend.connects >= 2
        events = await batch.base.events(job_id)
        tally_job(events, 2, row, ended="TaskCompleted")
        assert len(of_type(events, "BatchSubmitted")) == 1
        assert len(await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")) == 2
        await compare_result(batch.base, done, files, ntasks=2, primaries=2000,
                             base_seed=seed, row=row)
        await verify_read_model(batch.base, row)


async def kill_bridge_once_running(base: Stack, bridge: BridgeProcess, row: FaultRow,
                                   event: Event, tasks: int = 1) -> str:
    """Publish the batch job, SIGKILL the bridge once ``tasks`` of its tasks run; its id."""
    await base.producer.publish(event)
    row.jobs += 1
    await base.wait_events(
        event.job_id, lambda es: len(of_type(es, "TaskStarted")) >= tasks, within=60)
    bridge.kill()
    return event.job_id


@pytest.mark.faults
async def test_bridge_killed_mid_job_resumes_without_a_second_sbatch(
        tmp_path: Path, kafka_settings: KafkaSettings, cluster_site: ClusterSite,
        bridge_process: BridgeProcess) -> None:
    row = FaultRow("SIGKILL slurm bridge")
    TALLY.rows.append(row)
    files, seed = beam(3000), 6262
    async with stack(kafka_settings, None, tmp_path) as base:
        bridge_process.env["SIMJOBS_CLUSTERS"] = cluster_json(
            cluster_site.config(setup=SLOW), cluster_site.config(REF))
        bridge_process.start()
        job_id = await kill_bridge_once_running(
            base, bridge_process, row, batch_job_event(
                base.artifacts, files, ntasks=3, primaries=3000, base_seed=seed))
        slurm_before = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")
        assert any(line.endswith("|RUNNING") for line in slurm_before), slurm_before

        bridge_process.start()
        done = await base.wait_state(job_id, S.COMPLETED, S.FAILED, within=120)
        assert done.state is S.COMPLETED, done.failure_reason
        row.completed += 1
        events = await base.events(job_id)
        assert [e.type for e in events].count("BatchSubmitted") == 1
        tally_job(events, 3, row, ended="TaskCompleted")
        array = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")
        collect = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}-collect")
        assert [line.split("|")[1] for line in array] == ["COMPLETED"] * 3
        assert len(collect) == 1
        assert {line.split("_")[0] for line in array} == {done.array_job_id}
        await compare_result(base, done, files, ntasks=3, primaries=3000, base_seed=seed,
                             row=row)
        await verify_read_model(base, row)


def scancels_logged(log: Path, job_id: str) -> int:
    """How many scancel commands the bridge process logged for this job (all its lives)."""
    return sum(1 for line in log.read_text().splitlines()
               if "scancel" in line and job_id in line)


@pytest.mark.faults
async def test_cancel_while_the_bridge_is_killed_is_carried_out_once_it_restarts(
        tmp_path: Path, kafka_settings: KafkaSettings, cluster_site: ClusterSite,
        bridge_process: BridgeProcess) -> None:
    row = FaultRow("cancel while bridge killed")
    TALLY.rows.append(row)
    async with stack(kafka_settings, None, tmp_path) as base:
        bridge_process.start()
        event = batch_job_event(base.artifacts, beam(1000, extra="HANG\n"), ntasks=2,
                                primaries=1000)
        job_id = event.job_id
        try:
            await kill_bridge_once_running(base, bridge_process, row, event, tasks=2)
            await base.cancel(job_id)  # nobody is there to carry it out
            await base.wait_events(job_id, lambda es: bool(of_type(es, "CancelRequested")))
            slurm_down = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")
            assert all(line.endswith("|RUNNING") for line in slurm_down), slurm_down
            assert scancels_logged(bridge_process.log, job_id) == 0

            bridge_process.start()
            # The read model shows CANCELED from the request on; JobCanceled confirms the stop.
            events = await base.wait_events(
                job_id, lambda es: bool(of_type(es, "JobCanceled")), within=90)
            done = await base.wait_state(job_id, S.CANCELED, S.COMPLETED, S.FAILED)
            assert done.state is S.CANCELED, done.failure_reason
            row.completed += 1
            tally_job(events, 2, row, ended="TaskCanceled")
            assert len(of_type(events, "BatchSubmitted")) == 1
            assert len(of_type(events, "JobCanceled")) == 1
            array = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}")
            collect = await slurm_jobs_named(cluster_site, f"simjobs-{job_id}-collect")
            assert [line.split("|")[1] for line in array + collect] == ["CANCELLED"] * 3
            assert scancels_logged(bridge_process.log, job_id) == 1
            await verify_read_model(base, row)
        finally:  # a failed run must not leave its hanging tasks holding the node's CPUs
            for name in (f"simjobs-{job_id}", f"simjobs-{job_id}-collect"):
                await cluster_run(cluster_site, f"scancel --name={name}")


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
