"""The SLURM bridge: batch jobs submitted, tracked, collected and cancelled over SSH.

It follows the jobs topic like the runner's coordinator does (the shared
:class:`~services.platform.follower.JobFollower`, consumer group
``slurm-bridge``): folding only while it rebuilds its partitions, so replaying
the log never runs sbatch or scancel; acting once caught up, on what the log
says is still to do.

* **Submission.** A JobSubmitted of the ``batch`` platform without BatchSubmitted:
  the request's SLURM options pass the allow-list again, the job's tasks (the
  direct platform's primaries and seeds) and scripts are built, uploaded over
  SFTP and submitted: an array job of one element per task and a collect job
  ``afterany`` on it. Then TaskScheduled for every task and BatchSubmitted with
  the ids, or BatchSubmitFailed with the reason (refused option, unknown host
  key, sbatch's error, or a cluster still unreachable after the submit deadline).
* **Tracking.** One poller per cluster sends one status query per poll
  interval for all the cluster's active jobs (squeue, plus the log tails of the
  running tasks for their progress, in the same round trip) and turns what
  changed into TaskStarted, TaskProgress, and, for an ended task, TaskCompleted
  (outputs downloaded over SFTP, checked against their checksums, collected by
  the simulator's plug-in) or TaskFailed (with its log, exit code and SLURM state).
* **Results.** Once every task ended, the job is merged and ended exactly as on
  the direct platform (:class:`~services.platform.finish.JobFinisher`).
* **Cancel.** CancelRequested: scancel of the array and the collect job at once
  (the poller is woken for it), then TaskCanceled with each task's SLURM state,
  then JobCanceled.

Every event it writes has an id derived from what it reports (job, type, task
and progress value), so a step redone after a crash or a reconnect writes
nothing new. A bridge killed mid-job resumes every in-flight SLURM job from
the event log; one killed between sbatch and BatchSubmitted finds the ids in
the job's directory on the cluster instead of submitting again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.artifacts.store import ArtifactStore
from services.contract.envelope import Event, derived_event_id, utc_now
from services.contract.jobs import JobState
from services.contract.kafka_io import EventProducer
from services.ops.metrics import (
    SLURM_ACTIVE_JOBS,
    SLURM_POLL_DURATION,
    SLURM_POLLS,
    SLURM_SUBMISSIONS,
)
from services.platform.finish import JobFinisher
from services.platform.follower import JobFollower, JobTrack
from services.platform.inputs import task_input_files
from services.projector.state import JobView
from services.settings import ClusterConfig, KafkaSettings, SlurmBridgeSettings
from services.simulators.base import Simulator
from services.simulators.errors import CollectError, SimulatorError, SimulatorUnavailable
from services.simulators.registry import plugin_for
from services.slurm_bridge import tracking
from services.slurm_bridge.cluster import ClusterClient
from services.slurm_bridge.commands import Phase, SlurmRecord, StatusSnapshot, SubmittedIds
from services.slurm_bridge.errors import (
    BridgeError,
    CommandFailed,
    OptionRefused,
    OutputError,
    RemoteError,
    RemoteFileError,
)
from services.slurm_bridge.options import check_operator_options
from services.slurm_bridge.scripts import JobLayout, check_work_root
from services.slurm_bridge.ssh import AsyncSSHBackend, RemoteBackend
from services.slurm_bridge.submission import SubmissionPlan, plan_submission

log = logging.getLogger(__name__)

PRODUCER = "slurm-bridge"
S = JobState
#: Polls in a row without a SLURM record of a task before it is given up as lost.
MISSING_POLLS = 3
#: Seconds between polls while a cancelled job's tasks are not all confirmed ended.
CONFIRM_INTERVAL = 1.0

BackendFactory = Callable[[ClusterConfig, SlurmBridgeSettings], RemoteBackend]


def default_backend(cluster: ClusterConfig, settings: SlurmBridgeSettings) -> RemoteBackend:
    """The asyncssh backend (the only one there is)."""
    return AsyncSSHBackend(cluster, connect_timeout=settings.connect_timeout)


def _at(epoch: int | None) -> datetime:
    """A SLURM time as an event time, never later than now (the clocks may differ)."""
    now = utc_now()
    if epoch is None:
        return now
    return min(datetime.fromtimestamp(epoch, UTC), now)


@dataclass
class BatchJob:
    """What the bridge keeps of a submitted job it tracks (the log has the rest)."""

    job_id: str
    cluster: str
    layout: JobLayout
    ids: SubmittedIds
    requested: tuple[int, ...]
    simulator: Simulator | None
    correlation: Event | None
    started: set[int] = field(default_factory=set)
    progress: dict[int, int] = field(default_factory=dict)
    #: Tasks whose terminal event is written (or known from the log).
    ended: set[int] = field(default_factory=set)
    fetching: set[int] = field(default_factory=set)
    missing: Counter[int] = field(default_factory=Counter)
    cancel_wanted: bool = False
    cancel_sent: bool = False

    @property
    def ntasks(self) -> int:
        return len(self.requested)

    def running(self) -> list[int]:
        """Tasks seen running and not ended: whose log tails the next poll reads."""
        return sorted(self.started - self.ended - self.fetching)


class ClusterPoller:
    """One cluster's active jobs: one status query per poll interval for all of them."""

    def __init__(self, bridge: Bridge, config: ClusterConfig, client: ClusterClient) -> None:
        self.bridge = bridge
        self.config = config
        self.client = client
        self.jobs: dict[str, BatchJob] = {}
        self.wake = asyncio.Event()
        self.polls = 0
        #: Round trips (by kind) and seconds of the last status poll (the benchmark reads them).
        self.last_poll_round_trips: Counter[str] = Counter()
        self.last_poll_seconds = 0.0
        self._fetches: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Poll until the bridge stops; connection trouble is retried with backoff."""
        settings = self.bridge.settings
        delay = settings.reconnect_min
        while not self.bridge.stopping():
            if not self.jobs:
                await self._sleep(None)
                continue
            try:
                await self._cancels()
                await self.poll_once()
                SLURM_POLLS.labels(self.config.name, "ok").inc()
                delay = settings.reconnect_min
                await self._sleep(self._interval())
            except (RemoteError, CommandFailed, OutputError) as exc:
                SLURM_POLLS.labels(self.config.name, "failed").inc()
                level = logging.WARNING if getattr(exc, "retriable", False) else logging.ERROR
                log.log(level, "cluster %s: poll failed (next try in %.1f s): %s",
                        self.config.name, delay, exc)
                await self._sleep(delay)
                delay = min(delay * 2, settings.reconnect_max)
        for task in list(self._fetches):
            task.cancel()
        await asyncio.gather(*self._fetches, return_exceptions=True)

    def _interval(self) -> float:
        """The poll interval, or at most a second while a cancel awaits SLURM's confirmation.

        SLURM takes a few seconds to clean up a cancelled task (COMPLETING, then
        CANCELLED): polling faster meanwhile makes JobCanceled follow sooner.
        """
        confirming = any(job.cancel_sent and len(job.ended) < job.ntasks
                         for job in self.jobs.values())
        return min(self.config.poll_interval, CONFIRM_INTERVAL) if confirming \
            else self.config.poll_interval

    async def _sleep(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        self.wake.clear()

    def add(self, job: BatchJob) -> None:
        self.jobs[job.job_id] = job
        SLURM_ACTIVE_JOBS.labels(self.config.name).set(len(self.jobs))
        self.wake.set()

    def remove(self, job_id: str) -> None:
        if self.jobs.pop(job_id, None) is not None:
            SLURM_ACTIVE_JOBS.labels(self.config.name).set(len(self.jobs))

    async def _cancels(self) -> None:
        """Send scancel for every job whose cancel was asked for and not yet sent."""
        for job in list(self.jobs.values()):
            if job.cancel_wanted and not job.cancel_sent:
                await self.client.cancel([job.ids.array_job_id, job.ids.collect_job_id])
                job.cancel_sent = True
                log.info("cluster %s: scancel %s %s (job %s)", self.config.name,
                         job.ids.array_job_id, job.ids.collect_job_id, job.job_id)

    async def poll_once(self) -> StatusSnapshot:
        """One status query for every active job, and what follows from it."""
        jobs = list(self.jobs.values())
        before = Counter(self.client.backend.round_trips)
        started = time.monotonic()
        snapshot = await self.client.status(
            [job.ids.array_job_id for job in jobs],
            [job.layout.log(i) for job in jobs for i in job.running()])
        self.last_poll_seconds = time.monotonic() - started
        SLURM_POLL_DURATION.labels(self.config.name).observe(self.last_poll_seconds)
        self.last_poll_round_trips = Counter(self.client.backend.round_trips) - before
        self.polls += 1
        for job in jobs:
            if job.job_id in self.jobs:
                await self._update(job, snapshot)
        return snapshot

    async def _update(self, job: BatchJob, snapshot: StatusSnapshot) -> None:
        seen = tracking.tasks_seen(snapshot.of_job(job.ids.array_job_id))
        for index in range(job.ntasks):
            if index in job.ended or index in job.fetching:
                continue
            record = seen.get(index)
            if record is None:
                job.missing[index] += 1
                if job.missing[index] >= MISSING_POLLS:
                    await self.bridge.task_lost(job, index)
                continue
            job.missing.pop(index, None)
            if record.phase is Phase.RUNNING:
                await self.bridge.task_running(job, index, record,
                                               snapshot.logs.get(job.layout.log(index)))
            elif record.phase.ended:
                job.fetching.add(index)
                task = asyncio.create_task(self._end(job, index, record),
                                           name=f"end-{job.job_id}-{index}")
                self._fetches.add(task)
                task.add_done_callback(self._fetch_done)

    async def _end(self, job: BatchJob, index: int, record: SlurmRecord) -> None:
        try:
            await self.bridge.task_ended(job, index, record, self.client)
        except RemoteError as exc:  # the poll loop reports (and backs off from) the link
            log.warning("cluster %s: fetching task %d of %s failed, retried next poll: %s",
                        self.config.name, index, job.job_id, exc)
        finally:
            job.fetching.discard(index)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._fetches.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.bridge.fatal(task.exception())


@dataclass
class _Cluster:
    config: ClusterConfig
    backend: RemoteBackend
    client: ClusterClient
    poller: ClusterPoller


class Bridge(JobFollower):
    """The batch platform's service: ``run()`` until ``shutdown()``; ``async with``."""

    platform = "batch"

    def __init__(self, kafka: KafkaSettings, settings: SlurmBridgeSettings,
                 artifacts: ArtifactStore, *, producer: EventProducer | None = None,
                 backend_factory: BackendFactory = default_backend) -> None:
        """Check every cluster's configuration and set up its backend and poller.

        Raises:
            ValueError: a cluster's work root or default SLURM options cannot be used.
        """
        super().__init__(kafka, settings.group_id, "slurm-bridge")
        self.settings = settings
        self.artifacts = artifacts
        self._own_producer = producer is None
        self.producer = producer or EventProducer(kafka)
        self.finisher = JobFinisher(self.producer, artifacts, PRODUCER)
        self.clusters: dict[str, _Cluster] = {}
        for config in settings.clusters:
            check_work_root(config.work_root)
            check_operator_options(config.name, "array_options", config.array_options)
            check_operator_options(config.name, "collect_options", config.collect_options)
            backend = backend_factory(config, settings)
            client = ClusterClient(config, backend, command_timeout=settings.command_timeout)
            self.clusters[config.name] = _Cluster(config, backend, client,
                                                  ClusterPoller(self, config, client))
        #: Jobs being submitted, and jobs whose submission was answered (BatchSubmitted or
        #: BatchSubmitFailed written) but not yet read back from the log.
        self._submitting: set[str] = set()
        self._answered: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._fatal: BaseException | None = None

    async def __aenter__(self) -> Bridge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def stopping(self) -> bool:
        return self._stop.is_set()

    async def shutdown(self) -> None:
        """Stop following, polling and submitting (idempotent, safe before start)."""
        await super().shutdown()
        for cluster in self.clusters.values():
            cluster.poller.wake.set()

    def fatal(self, exc: BaseException | None) -> None:
        """A background step failed in a way a retry cannot fix: stop the bridge with it."""
        if exc is not None and self._fatal is None:
            log.error("slurm-bridge: fatal error: %r", exc)
            self._fatal = exc
            self._stop.set()
            for cluster in self.clusters.values():
                cluster.poller.wake.set()

    async def run(self) -> None:
        """Run until shut down; raise the first fatal error.

        Raises:
            PublishFailed: Kafka did not take an event (the step is redone on restart).
            aiokafka.errors.KafkaError: the consumer failed for good.
        """
        if self._own_producer:
            await self.producer.start()
        tasks = [asyncio.create_task(self.follow(), name="follow")]
        tasks += [asyncio.create_task(c.poller.run(), name=f"poll-{name}")
                  for name, c in self.clusters.items()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                self.fatal(failed[0].exception())
            await self.shutdown()
            await asyncio.wait(tasks)
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if self._fatal is not None:
                raise self._fatal
            for task in tasks:
                task.result()
        finally:
            for cluster in self.clusters.values():
                await cluster.backend.close()
            if self._own_producer:
                await self.producer.stop()

    # --- following the log -----------------------------------------------------------------

    def _job(self, view: JobView) -> BatchJob | None:
        cluster = self.clusters.get(view.cluster_name or "")
        return cluster.poller.jobs.get(view.job_id) if cluster else None

    def forgotten(self, job_id: str) -> None:
        self._untrack(job_id)

    def _untrack(self, job_id: str) -> None:
        for cluster in self.clusters.values():
            cluster.poller.remove(job_id)

    async def act(self, job_id: str) -> None:
        found = self.mine(job_id)
        if found is None:
            return
        view, track = found
        if view.array_job_id is None or view.collect_job_id is None:
            await self._unsubmitted(view, track)
            return
        job = self._job(view)
        if view.state is S.CANCELED:
            if track.job_canceled:
                self._untrack(job_id)
                return
            if job is None:
                job = self._track(view, track)
            if job is None or len(track.ended_tasks) >= view.ntasks:
                await self.finisher.confirm_cancel(view, track)
                self._untrack(job_id)
                return
            if not job.cancel_wanted:
                job.cancel_wanted = True
                self.clusters[job.cluster].poller.wake.set()
            return
        if view.state.terminal:
            self._untrack(job_id)
            return
        if job is None:
            self._track(view, track)
        if view.state in (S.MERGING_QUEUED, S.MERGING_RUNNING) and not track.finishing:
            await self.finisher.finish(view, track)

    def seen(self, event: Event, view: JobView, track: JobTrack) -> None:
        if event.type in ("BatchSubmitted", "BatchSubmitFailed"):
            self._answered.discard(event.job_id)

    async def _unsubmitted(self, view: JobView, track: JobTrack) -> None:
        if view.job_id in self._submitting or view.job_id in self._answered:
            return  # its answer is on its way through the log (and will call act again)
        if view.state.terminal:
            if view.state is S.CANCELED and track.cancel is not None \
                    and not track.job_canceled:
                await self.finisher.confirm_cancel(view, track)  # nothing reached a cluster
            return
        self._submitting.add(view.job_id)
        task = asyncio.create_task(self._submit(view, track), name=f"submit-{view.job_id}")
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            self.fatal(task.exception())

    def _track(self, view: JobView, track: JobTrack) -> BatchJob | None:
        """Start tracking a submitted job (after BatchSubmitted, or when resuming)."""
        cluster = self.clusters.get(view.cluster_name or "")
        if cluster is None or view.array_job_id is None or view.collect_job_id is None:
            log.error("slurm-bridge: job %s ran on cluster %r, which is not configured: "
                      "it cannot be tracked", view.job_id, view.cluster_name)
            return None
        try:
            simulator: Simulator | None = self._simulator(cluster.config, view.sim_type)
        except SimulatorError as exc:
            log.error("slurm-bridge: job %s: %s (its results cannot be collected)",
                      view.job_id, exc)
            simulator = None
        job = BatchJob(
            job_id=view.job_id, cluster=cluster.config.name,
            layout=JobLayout.of(cluster.config.work_root, view.job_id),
            ids=SubmittedIds(view.array_job_id, view.collect_job_id),
            requested=tuple(t.requested_primaries for t in view.tasks),
            simulator=simulator, correlation=track.submitted,
            started={t.task_index for t in view.tasks if t.start_time is not None},
            progress={t.task_index: t.simulated_primaries for t in view.tasks},
            ended=set(track.ended_tasks))
        cluster.poller.add(job)
        log.info("slurm-bridge: tracking job %s on %s (array %s, collect %s)", view.job_id,
                 job.cluster, job.ids.array_job_id, job.ids.collect_job_id)
        return job

    @staticmethod
    def _simulator(config: ClusterConfig, sim_type: str) -> Simulator:
        exe = config.executables.get(sim_type)
        if not exe:
            raise SimulatorUnavailable(
                f"simulator {sim_type!r} is not configured on cluster {config.name!r} "
                f"(its 'executables' in SIMJOBS_CLUSTERS)")
        return plugin_for(sim_type, exe)

    # --- submission ------------------------------------------------------------------------

    async def _submit(self, view: JobView, track: JobTrack) -> None:
        name = view.cluster_name or ""
        try:
            cluster = self.clusters.get(name)
            if cluster is None:
                self._answered.add(view.job_id)
                await self._submit_failed(view, track, name, f"cluster {name!r} is not "
                                          "configured on the SLURM bridge", retriable=False)
                return
            try:
                plan = await self._plan(view, track, cluster.config)
            except (OptionRefused, SimulatorError, ValueError) as exc:
                self._answered.add(view.job_id)
                await self._submit_failed(view, track, name, str(exc), retriable=False)
                return
            ids = await self._submit_with_retries(view, track, cluster, plan)
            self._answered.add(view.job_id)
            if ids is None:
                return
            events = [self.finisher.caused(view, track, "TaskScheduled", {
                "task_index": t.index, "requested_primaries": t.primaries, "seed": t.seed},
                t.index) for t in plan.tasks]
            events.append(self.finisher.caused(view, track, "BatchSubmitted", {
                "cluster_name": name, "array_job_id": ids.array_job_id,
                "collect_job_id": ids.collect_job_id, "job_dir": plan.layout.job_dir}))
            await self.producer.publish_many(events)
            SLURM_SUBMISSIONS.labels(name, "submitted").inc()
            log.info("slurm-bridge: job %s submitted to %s: array %s, collect %s",
                     view.job_id, name, ids.array_job_id, ids.collect_job_id)
        finally:
            self._submitting.discard(view.job_id)

    async def _plan(self, view: JobView, track: JobTrack,
                    config: ClusterConfig) -> SubmissionPlan:
        simulator = self._simulator(config, view.sim_type)
        files = await task_input_files(self.artifacts, view.input_ref)
        submitted = track.submitted.payload if track.submitted is not None else {}
        batch_options: Mapping[str, Any] = submitted.get("batch_options") or {}
        return await asyncio.to_thread(
            plan_submission, job_id=view.job_id, cluster=config, simulator=simulator,
            input_files=files, total_primaries=view.number_of_all_primaries,
            ntasks=view.ntasks, base_seed=view.base_seed, batch_options=batch_options)

    async def _submit_with_retries(self, view: JobView, track: JobTrack, cluster: _Cluster,
                                   plan: SubmissionPlan) -> SubmittedIds | None:
        """Submit, retrying a cluster that cannot be reached until the submit deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.submit_deadline
        delay = self.settings.reconnect_min
        while True:
            try:
                return await cluster.client.submit(plan)
            except (RemoteError, CommandFailed, OutputError) as exc:
                # Safe to retry: submit.sh submits once per job directory, however often run.
                if not exc.retriable or loop.time() + delay > deadline:
                    await self._submit_failed(view, track, cluster.config.name, str(exc),
                                              retriable=exc.retriable)
                    return None
                log.warning("slurm-bridge: submitting %s failed, retrying in %.1f s: %s",
                            view.job_id, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max)

    async def _submit_failed(self, view: JobView, track: JobTrack, cluster: str,
                             reason: str, *, retriable: bool) -> None:
        SLURM_SUBMISSIONS.labels(cluster, "failed").inc()
        log.warning("slurm-bridge: job %s not submitted to %r: %s", view.job_id, cluster,
                    reason)
        await self.producer.publish(self.finisher.caused(view, track, "BatchSubmitFailed", {
            "cluster_name": cluster, "reason": reason[:2000], "retriable": retriable}))

    # --- task events -----------------------------------------------------------------------

    async def _task_event(self, job: BatchJob, type: str, payload: dict[str, Any],
                          at: datetime, *parts: object) -> None:
        event_id = derived_event_id(job.job_id, type, *parts)
        if job.correlation is not None:
            event = job.correlation.caused(type, payload, PRODUCER, event_id=event_id,
                                           occurred_at=at)
        else:
            event = Event(type=type, job_id=job.job_id, payload=payload, producer=PRODUCER,
                          event_id=event_id, occurred_at=at)
        await self.producer.publish(event)

    async def _started(self, job: BatchJob, index: int, record: SlurmRecord) -> None:
        if index in job.started:
            return
        job.started.add(index)
        await self._task_event(job, "TaskStarted", {
            "task_index": index, "requested_primaries": job.requested[index],
            "worker": f"slurm:{job.cluster}:{record.job_id}"},
            _at(record.start or record.end), index)

    async def task_running(self, job: BatchJob, index: int, record: SlurmRecord,
                           tail: bytes | None) -> None:
        """A task SLURM shows running: TaskStarted once, TaskProgress when it grew."""
        await self._started(job, index, record)
        if tail is None or job.simulator is None:
            return
        found = tracking.progress(job.simulator, tail)
        requested = job.requested[index]
        if found is None or found.simulated <= job.progress.get(index, 0):
            return
        simulated = min(found.simulated, requested)
        job.progress[index] = simulated
        await self._task_event(job, "TaskProgress", {
            "task_index": index, "simulated_primaries": simulated,
            "requested_primaries": requested, "estimated_time": found.eta_seconds},
            utc_now(), index, simulated)

    async def task_ended(self, job: BatchJob, index: int, record: SlurmRecord,
                         client: ClusterClient) -> None:
        """A task SLURM shows ended: its terminal event, with what it left on the cluster.

        Raises:
            RemoteError: a download failed (retriable: it is tried again next poll).
        """
        canceled = self._cancel_requested(job)
        await self._started(job, index, record)
        state = tracking.platform_state(record)
        at = _at(record.end)
        if canceled:
            await self._task_event(job, "TaskCanceled", {
                "task_index": index, "reason": "job canceled", "platform_state": state},
                at, index)
        elif record.phase is Phase.COMPLETED:
            await self._completed(job, index, record, client, at)
            return
        else:
            output = await client.fetch_log(job.layout, index)
            reason, exit_status = tracking.failure(record, output)
            payload: dict[str, Any] = {
                "task_index": index, "reason": reason, "exit_status": exit_status,
                "log_ref": await self.artifacts.aput_bytes(output), "platform_state": state}
            if job.progress.get(index):
                payload["simulated_primaries"] = job.progress[index]
            await self._task_event(job, "TaskFailed", payload, at, index)
        job.ended.add(index)

    async def _completed(self, job: BatchJob, index: int, record: SlurmRecord,
                         client: ClusterClient, at: datetime) -> None:
        local = self.settings.workdir_root / job.job_id / str(index)
        requested = job.requested[index]
        try:
            try:
                if job.simulator is None:
                    raise CollectError(f"the cluster {job.cluster!r} has no simulator "
                                       "configured to collect this task's outputs")
                fetched = await client.fetch_task(job.layout, index, local)
                log_ref = await self.artifacts.aput_bytes(fetched.log)
                document = await asyncio.to_thread(job.simulator.collect, local)
            except (CollectError, OutputError, RemoteFileError) as exc:
                output = await client.fetch_log(job.layout, index)
                await self._task_event(job, "TaskFailed", {
                    "task_index": index, "reason": str(exc), "exit_status": 0,
                    "log_ref": await self.artifacts.aput_bytes(output),
                    "platform_state": tracking.platform_state(record)}, at, index)
                job.ended.add(index)
                return
            result_ref = await self.artifacts.aput_json(document)
            payload: dict[str, Any] = {
                "task_index": index, "simulated_primaries": requested,
                "requested_primaries": requested, "result_ref": result_ref,
                "log_ref": log_ref, "platform_state": tracking.platform_state(record)}
            if record.start is not None and record.end is not None:
                payload["wall_seconds"] = float(max(0, record.end - record.start))
            await self._task_event(job, "TaskCompleted", payload, at, index)
            job.ended.add(index)
        finally:
            await asyncio.to_thread(shutil.rmtree, local, True)

    async def task_lost(self, job: BatchJob, index: int) -> None:
        """A task SLURM has had no record of for several polls (purged, or never split)."""
        state = {"state": "UNKNOWN", "exit_code": None, "signal": None}
        reason = (f"SLURM has no record of task {index} of array job "
                  f"{job.ids.array_job_id} any more")
        if self._cancel_requested(job):
            await self._task_event(job, "TaskCanceled", {
                "task_index": index, "reason": reason, "platform_state": state},
                utc_now(), index)
        else:
            await self._task_event(job, "TaskFailed", {
                "task_index": index, "reason": reason, "exit_status": None,
                "platform_state": state}, utc_now(), index)
        job.ended.add(index)

    def _cancel_requested(self, job: BatchJob) -> bool:
        track = self.tracks.get(job.job_id)
        return job.cancel_wanted or (track is not None and track.cancel is not None)


__all__ = ["Bridge", "BridgeError", "ClusterPoller"]
