"""The worker: takes work items from the tasks topic and runs them, a few at a time.

Every runner process joins the consumer group ``runner-workers`` on the tasks
topic, so the tasks of a job are shared out partition by partition over all
runners (the coordinator spreads one job's tasks over every partition). A
runner takes only as many items as it has free slots (the other partitions
stay paused while it is full, so it still polls and keeps its membership).

Delivery is at-least-once: a task's offset is committed only after its
terminal event (TaskCompleted / TaskFailed / TaskCanceled) is in the log, and
only up to the oldest task of that partition still running. A runner killed
mid-task leaves its offset uncommitted, and whoever takes the partition next
re-runs the task with the same seed; terminal events carry ids derived from
(job, task), so a second one is dropped by every consumer.

Cancel: the worker also follows the jobs topic, without a group: it reads it
from the beginning once at start (canceled jobs and ended tasks, so it skips
their work items), then keeps reading. On CancelRequested it sends SIGINT to
the process group of each running task of the job, SIGKILL after the grace
period, and reports TaskCanceled. On shutdown (SIGTERM of the runner) it stops
taking work, stops its running tasks' process groups and exits without
committing them: they are re-run elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from services.artifacts.store import ArtifactStore
from services.contract.envelope import Event, derived_event_id
from services.contract.kafka_io import EventDecoder, EventProducer, make_consumer
from services.contract.log_reader import topic_partitions
from services.ops.logs import job_context
from services.ops.metrics import (
    RUNNER_SIMULATOR_CPU_SECONDS,
    RUNNER_SIMULATOR_SECONDS,
    RUNNER_TASKS_ENDED,
    RUNNER_TASKS_RUNNING,
)
from services.platform.inputs import task_input_files
from services.platform.outcome import CompletedProcess, ProcessTimeout, failure_reason
from services.runner.logtail import LogFollower
from services.runner.process import LineHandler, SimProcess
from services.runner.work import BadWorkItem, WorkItem
from services.settings import KafkaSettings, RunnerSettings
from services.simulators.base import FollowsLogFile, Simulator, write_task_files
from services.simulators.errors import CollectError, SimulatorError
from services.simulators.registry import SimulatorRegistry

log = logging.getLogger(__name__)

PRODUCER = "runner"
PROGRESS_INTERVAL = 1.0
"""Seconds between two TaskProgress events of one task (the last one is always sent)."""


def default_worker_name() -> str:
    """``runner@host:pid``: how a worker names itself unless configured."""
    return f"runner@{socket.gethostname()}:{os.getpid()}"


# --- offsets -------------------------------------------------------------------------------


@dataclass
class OffsetTracker:
    """Which offsets of each partition may be committed: all before the oldest open task."""

    open: dict[TopicPartition, set[int]] = field(default_factory=dict)
    next: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    def taken(self, tp: TopicPartition, offset: int) -> None:
        self.open.setdefault(tp, set()).add(offset)
        self.next[tp] = max(self.next.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        if tp in self.open:
            self.open[tp].discard(offset)

    def committable(self, only: Sequence[TopicPartition] | None = None
                    ) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for tp, nxt in self.next.items():
            if only is not None and tp not in only:
                continue
            pending = self.open.get(tp)
            target = min(pending) if pending else nxt
            if target > self.committed.get(tp, -1):
                out[tp] = target
        return out

    def forget(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            self.open.pop(tp, None)
            self.next.pop(tp, None)
            self.committed.pop(tp, None)


# --- progress ------------------------------------------------------------------------------

Emit = Callable[[int, int | None], Awaitable[None]]


class ProgressThrottle:
    """Forwards progress at most once per interval and only when it grew.

    The final value (simulated >= requested) is always forwarded at once; a value
    held back by the interval is sent when the interval ends, even if the
    simulator prints nothing more.
    """

    def __init__(self, emit: Emit, requested: int, interval: float = PROGRESS_INTERVAL) -> None:
        self._emit = emit
        self.requested = requested
        self.interval = interval
        self.sent = 0
        self._sent_at = -interval
        self._pending: tuple[int, int | None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def update(self, simulated: int, eta: int | None) -> None:
        if simulated <= self.sent or (self._pending and simulated <= self._pending[0]):
            return
        due = self._sent_at + self.interval - time.monotonic()
        if due <= 0 or simulated >= self.requested:
            await self._send(simulated, eta)
            return
        self._pending = (simulated, eta)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_after(due))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._pending is not None:
            await self._send(*self._pending)

    async def _send(self, simulated: int, eta: int | None) -> None:
        async with self._lock:
            if simulated <= self.sent:
                return
            self._pending = None
            self.sent = simulated
            self._sent_at = time.monotonic()
            await self._emit(simulated, eta)

    async def close(self) -> None:
        """Drop a held value; re-raise an error the delayed send met (e.g. PublishFailed)."""
        flusher = self._flusher
        if flusher is None:
            return
        if not flusher.done():
            flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher


# --- following the jobs topic --------------------------------------------------------------


class JobsFollower:
    """What the worker must know from the jobs topic: canceled jobs, ended tasks."""

    ENDED_TASK = frozenset({"TaskCompleted", "TaskFailed", "TaskCanceled"})
    ENDED_JOB = frozenset({"JobCompleted", "JobFailed", "JobCanceled", "BatchSubmitFailed"})

    def __init__(self, kafka: KafkaSettings, on_cancel: Callable[[str], None]) -> None:
        self.kafka = kafka
        self.on_cancel = on_cancel
        self.canceled: set[str] = set()
        self.ended_jobs: set[str] = set()
        self.ended_tasks: set[tuple[str, int]] = set()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._decoder = EventDecoder(consumer="worker-follower")

    def skip_reason(self, item: WorkItem) -> str | None:
        """Why a work item must not run (None: run it)."""
        if item.job_id in self.canceled:
            return "canceled"
        if item.job_id in self.ended_jobs or (item.job_id, item.task_index) in self.ended_tasks:
            return "ended"
        return None

    def see(self, event: Event) -> None:
        if event.type == "CancelRequested":
            if event.job_id not in self.canceled:
                self.canceled.add(event.job_id)
                self.on_cancel(event.job_id)
        elif event.type in self.ENDED_TASK:
            self.ended_tasks.add((event.job_id, int(event.payload["task_index"])))
        elif event.type in self.ENDED_JOB:
            self.ended_jobs.add(event.job_id)

    async def shutdown(self) -> None:
        self._stop.set()

    async def _partitions(self, topic: str, patience: float = 15.0) -> list[TopicPartition]:
        """The topic's partitions, waiting out a topic that was created a moment ago."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return await topic_partitions(self.kafka, topic)
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                log.info("worker: waiting for topic %s: %r", topic, exc)
                await asyncio.sleep(0.2)

    async def run(self) -> None:
        """Read the jobs topic from its beginning (``ready`` once at its end), then follow it."""
        topic = self.kafka.jobs_topic
        tps = await self._partitions(topic)
        consumer = make_consumer(self.kafka)
        await consumer.start()
        try:
            consumer.assign(tps)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            behind = {tp for tp in tps if ends[tp] > 0}
            if not behind:
                self.ready.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batch.values():
                    for record in records:
                        event = self._decoder.decode(record.value)
                        if event is None:
                            continue
                        try:
                            self.see(event)
                        except (KeyError, TypeError, ValueError) as exc:
                            log.warning("worker: unreadable %s %s: %r", event.type,
                                        event.event_id, exc)
                if behind:
                    for tp in list(behind):
                        if await consumer.position(tp) >= ends[tp]:
                            behind.discard(tp)
                    if not behind:
                        log.info("worker: jobs topic read (%d canceled jobs known)",
                                 len(self.canceled))
                        self.ready.set()
        finally:
            await consumer.stop()


# --- the worker ----------------------------------------------------------------------------


@dataclass
class RunningTask:
    """A task this worker has taken and not yet finished."""

    item: WorkItem
    offsets: list[tuple[TopicPartition, int]]
    process: SimProcess | None = None
    canceled: bool = False
    abandoned: bool = False

    def cancel_seen(self) -> bool:
        """Whether the job was canceled (read through a call: it changes while awaiting)."""
        return self.canceled


class _Abandoned(Exception):
    """The runner is shutting down: leave the task for another runner."""


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.worker.commit(list(revoked))
        self.worker.tracker.forget(list(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("worker %s: assigned tasks partitions %s", self.worker.name,
                 sorted(tp.partition for tp in assigned))


class Worker:
    """Runs tasks from the tasks topic; ``run()`` until ``shutdown()``; ``async with``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: RunnerSettings,
        artifacts: ArtifactStore,
        *,
        registry: SimulatorRegistry | None = None,
        producer: EventProducer | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.artifacts = artifacts
        self.registry = registry or SimulatorRegistry.from_settings(settings)
        self.name = settings.worker_name or default_worker_name()
        self.env = dict(env) if env is not None else None
        self.tracker = OffsetTracker()
        self.follower = JobsFollower(kafka, self._cancel_job)
        self._own_producer = producer is None
        self._producer = producer or EventProducer(kafka)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._running: dict[tuple[str, int], RunningTask] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stoppers: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        #: Set when a running task ends, so a full intake loop takes the next item at once.
        self._slot_freed = asyncio.Event()
        self._consumer: Any = None
        self._fatal: BaseException | None = None

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop taking work and stop the running tasks (idempotent, safe before start)."""
        self._stop.set()
        await self.follower.shutdown()

    @property
    def consumer(self) -> Any:
        """The running tasks-topic consumer (None before start and after stop): for metrics."""
        return self._consumer

    @property
    def running_pids(self) -> list[int]:
        """Process ids of the simulators running now (for tests and diagnostics)."""
        return [t.process.pid for t in self._running.values()
                if t.process is not None and t.process.pid is not None]

    async def run(self) -> None:
        """Take and run tasks until shut down; raises the first fatal error.

        Raises:
            PublishFailed: Kafka did not take an event (the task is left uncommitted).
            aiokafka.errors.KafkaError: the consumer failed for good.
        """
        if self._own_producer:
            await self._producer.start()
        follower = asyncio.create_task(self.follower.run(), name="worker-follower")
        try:
            ready = asyncio.create_task(self.follower.ready.wait())
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({follower, ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stopping.cancel()
            if follower.done():
                follower.result()  # raises its error
                return
            if not self._stop.is_set():
                intake = asyncio.create_task(self._intake(), name="worker-intake")
                done, _ = await asyncio.wait({follower, intake},
                                             return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
                await intake
        finally:
            await self.follower.shutdown()
            await self._abandon_all()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            if self._own_producer:
                await self._producer.stop()
        if self._fatal is not None:
            raise self._fatal

    async def _intake(self) -> None:
        consumer = make_consumer(self.kafka, group_id=self.settings.worker_group)
        consumer.subscribe([self.kafka.tasks_topic], listener=_Revocations(self))
        await consumer.start()
        self._consumer = consumer
        try:
            while not self._stop.is_set() and self._fatal is None:
                free = self.settings.concurrency - len(self._tasks)
                assigned = list(consumer.assignment())
                if free <= 0:
                    # Full: no fetching, but wake the moment a slot frees (a poll would
                    # sit out its whole timeout on paused partitions).
                    consumer.pause(*assigned)
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), 0.2)
                    await self.commit()
                    continue
                consumer.resume(*assigned)
                batch = await consumer.getmany(timeout_ms=200, max_records=free)
                for tp, records in batch.items():
                    for record in records:
                        self._take(tp, record.offset, record.value)
                await self.commit()
        finally:
            await self._abandon_all()
            await self.commit()
            self._consumer = None
            await consumer.stop()

    def _take(self, tp: TopicPartition, offset: int, raw: bytes | None) -> None:
        self.tracker.taken(tp, offset)
        try:
            item = WorkItem.decode(raw)
        except BadWorkItem as exc:
            log.warning("skipping tasks record %s@%d: %s", tp, offset, exc)
            self.tracker.finished(tp, offset)
            return
        key = (item.job_id, item.task_index)
        if key in self._running:  # redelivered while it runs here: finish both together
            self._running[key].offsets.append((tp, offset))
            return
        if self.follower.skip_reason(item) == "ended":
            self.tracker.finished(tp, offset)
            return
        running = RunningTask(item, [(tp, offset)])
        self._running[key] = running
        task = asyncio.create_task(self._run_task(running),
                                   name=f"task-{item.job_id}-{item.task_index}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._fatal is None:
            log.error("worker %s: fatal error in %s: %r", self.name, task.get_name(), exc)
            self._fatal = exc
            self._stop.set()

    async def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        """Commit every offset whose tasks (and all before them) have ended."""
        consumer = self._consumer
        if consumer is None:
            return
        offsets = self.tracker.committable(only)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # the partition moved on: its new owner re-runs the rest
            log.warning("worker %s: commit of %s failed: %r", self.name, offsets, exc)
            return
        self.tracker.committed.update(offsets)

    def _cancel_job(self, job_id: str) -> None:
        for running in list(self._running.values()):
            if running.item.job_id != job_id:
                continue
            running.canceled = True
            process = running.process
            if process is not None and process.running:
                log.info("worker %s: canceling %s/%d (pid %s)", self.name, job_id,
                         running.item.task_index, process.pid)
                stopper = asyncio.create_task(process.stop(self.settings.grace_seconds))
                self._stoppers.add(stopper)
                stopper.add_done_callback(self._stoppers.discard)

    async def _abandon_all(self) -> None:
        """Stop every running task's process group and wait for the tasks to end."""
        for running in self._running.values():
            running.abandoned = True
        await asyncio.gather(*(r.process.stop(self.settings.grace_seconds)
                               for r in self._running.values() if r.process is not None))
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    # --- one task --------------------------------------------------------------------------

    def _event(self, item: WorkItem, type: str, payload: dict[str, Any], *,
               derived: bool = False) -> Event:
        """A task event; terminal ones get an id derived from (job, type, task)."""
        event = Event(type=type, job_id=item.job_id, payload=payload, producer=PRODUCER,
                      correlation_id=item.correlation_id, causation_id=item.correlation_id)
        if derived:
            event = replace(event, event_id=derived_event_id(item.job_id, type,
                                                             item.task_index))
        return event

    async def _publish(self, item: WorkItem, type: str, payload: dict[str, Any], *,
                       derived: bool = False) -> None:
        await self._producer.publish(self._event(item, type, payload, derived=derived))

    async def _ended(self, item: WorkItem, type: str, payload: dict[str, Any]) -> None:
        await self._publish(item, type, {"task_index": item.task_index, **payload},
                            derived=True)
        RUNNER_TASKS_ENDED.labels(type.removeprefix("Task").lower()).inc()

    async def _run_task(self, running: RunningTask) -> None:
        item = running.item
        workdir = self.settings.workdir_root / item.job_id / f"task-{item.task_index:05d}"
        try:
            async with self._slots:
                with job_context(item.job_id):
                    await self._execute(running, workdir)
        except _Abandoned:
            log.info("worker %s: left %s/%d for another runner", self.name, item.job_id,
                     item.task_index)
            return
        finally:
            self._running.pop((item.job_id, item.task_index), None)
            if not self.settings.keep_workdirs:
                await asyncio.to_thread(shutil.rmtree, workdir, True)
        for tp, offset in running.offsets:
            self.tracker.finished(tp, offset)

    async def _fail(self, item: WorkItem, reason: str, *, exit_status: int | None = None,
                    log_ref: str | None = None, state: str = "FAILED",
                    signal: int | None = None,
                    done: CompletedProcess | ProcessTimeout | None = None) -> None:
        log.info("worker %s: task %s/%d failed: %s", self.name, item.job_id, item.task_index,
                 reason)
        await self._ended(item, "TaskFailed", {
            "reason": reason, "exit_status": exit_status, "log_ref": log_ref,
            "platform_state": {"state": state, "exit_code": exit_status, "signal": signal},
            **_usage(done),
        })

    async def _canceled(self, item: WorkItem, reason: str,
                        done: CompletedProcess | None = None) -> None:
        payload: dict[str, Any] = {"reason": reason, **_usage(done)}
        if done is not None:
            payload["platform_state"] = {"state": "CANCELED", "exit_code": done.exit_code,
                                         "signal": done.signal}
        await self._ended(item, "TaskCanceled", payload)

    async def _execute(self, running: RunningTask, workdir: Path) -> None:
        item = running.item
        if self._stop.is_set():
            raise _Abandoned
        if self.follower.skip_reason(item) == "canceled" or running.canceled:
            await self._canceled(item, "job canceled before the task started")
            return
        try:
            simulator: Simulator = self.registry.get(item.sim_type)
            files = await task_input_files(self.artifacts, item.input_ref)
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            task_files = simulator.task_files(files, item.primaries, item.seed)
            await asyncio.to_thread(write_task_files, workdir, task_files)
            argv = simulator.command(workdir, item.seed)
        except (SimulatorError, OSError) as exc:
            await self._fail(item, str(exc))
            return
        if self._stop.is_set():
            raise _Abandoned
        await self._publish(item, "TaskStarted", {
            "task_index": item.task_index, "requested_primaries": item.primaries,
            "worker": self.name})
        process = SimProcess(item.job_id, item.task_index, argv, workdir, env=self.env)
        try:
            await process.start()
        except OSError as exc:
            await self._fail(item, f"cannot start {argv[0]}: {exc}")
            return
        running.process = process
        if running.cancel_seen():  # the cancel came while it was starting
            self._cancel_job(item.job_id)

        async def emit(simulated: int, eta: int | None) -> None:
            await self._publish(item, "TaskProgress", {
                "task_index": item.task_index, "simulated_primaries": simulated,
                "requested_primaries": item.primaries, "estimated_time": eta})

        throttle = ProgressThrottle(emit, item.primaries)

        async def on_line(line: str) -> None:
            progress = simulator.parse_progress(line)
            if progress is not None:
                await throttle.update(progress.simulated, progress.eta_seconds)

        RUNNER_TASKS_RUNNING.inc()
        try:
            done: CompletedProcess | ProcessTimeout = await self._wait(
                process, simulator, workdir, on_line)
        except ProcessTimeout as exc:
            done = exc
        finally:
            RUNNER_TASKS_RUNNING.dec()
            await throttle.close()  # no progress after the task's end
        _count_usage(done)
        if running.abandoned:
            raise _Abandoned
        if isinstance(done, ProcessTimeout):
            log_ref = await self.artifacts.aput_bytes(done.output)
            await self._fail(item, str(done), log_ref=log_ref, state="TIMEOUT", done=done)
            return
        log_ref = await self.artifacts.aput_bytes(done.output)
        if running.cancel_seen():
            await self._canceled(item, "job canceled", done)
            return
        if done.returncode != 0:
            await self._fail(item, failure_reason(done), exit_status=done.exit_code,
                             log_ref=log_ref, signal=done.signal, done=done)
            return
        try:
            document = await asyncio.to_thread(simulator.collect, workdir)
        except CollectError as exc:
            await self._fail(item, str(exc), exit_status=0, log_ref=log_ref, done=done)
            return
        result_ref = await self.artifacts.aput_json(document)
        await self._ended(item, "TaskCompleted", {
            "simulated_primaries": item.primaries, "requested_primaries": item.primaries,
            "result_ref": result_ref, "log_ref": log_ref, **_usage(done),
            "platform_state": {"state": "COMPLETED", "exit_code": 0, "signal": None},
        })

    async def _wait(self, process: SimProcess, simulator: Simulator, workdir: Path,
                    on_line: LineHandler) -> CompletedProcess:
        """Wait for the process, reading progress from its output and maybe a log file.

        A plug-in that :class:`FollowsLogFile` names the file; it is read to its
        end once the process is gone, before the last progress is settled.

        Raises:
            ProcessTimeout: the wall-time limit stopped the process.
            PublishFailed: a progress event could not be written (the process is stopped).
        """
        wait = process.wait(on_line, time_limit=self.settings.wall_time_limit,
                            grace=self.settings.grace_seconds)
        if not isinstance(simulator, FollowsLogFile):
            return await wait
        follower = LogFollower(lambda: simulator.progress_file(workdir), on_line)
        following = asyncio.create_task(follower.run(), name="worker-log-follower")
        waiting = asyncio.create_task(wait, name="worker-process-wait")
        try:
            await asyncio.wait({following, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if following.done() and not waiting.done():  # its handler failed
                await process.stop(self.settings.grace_seconds)
                await asyncio.wait({waiting})
                following.result()
            follower.stop()
            await following
            return waiting.result()
        finally:
            for task in (following, waiting):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


def _usage(done: CompletedProcess | ProcessTimeout | None) -> dict[str, float]:
    """The ``wall_seconds`` / ``cpu_seconds`` fields of a task's end event (those known)."""
    if done is None:
        return {}
    fields = {"wall_seconds": done.wall_seconds, "cpu_seconds": done.cpu_seconds}
    return {k: round(v, 3) for k, v in fields.items() if v is not None}


def _count_usage(done: CompletedProcess | ProcessTimeout) -> None:
    if done.wall_seconds is not None:
        RUNNER_SIMULATOR_SECONDS.inc(done.wall_seconds)
    if done.cpu_seconds is not None:
        RUNNER_SIMULATOR_CPU_SECONDS.inc(done.cpu_seconds)

