"""The coordinator: turns direct jobs into tasks, and ended tasks into a merged result.

It consumes the jobs topic in the consumer group ``runner-coordinator`` (so
several coordinators share the jobs partition by partition) and keeps a view
of each job built with the production fold (:func:`services.projector.state.apply`),
the same function the read model uses.

* JobSubmitted (platform ``direct``): the input artifact is checked, one work
  item per task goes to the tasks topic, then one TaskScheduled per task to
  the jobs topic. Work items are written first: a crash in between re-sends
  work items (a task may run twice, harmlessly), where the other order could
  lose a task for good. A job that already has TaskScheduled is never
  scheduled again.
* Every task ended: MergeStarted, the completed tasks' results merged
  (:func:`services.simulators.merge.merge_results`) and stored, then JobCompleted,
  or JobFailed with a partial result (some tasks failed) or with the reasons
  (all failed, or the merge itself failed). A job is never left MERGING.
* CancelRequested: once every task has reported its end (the workers stop
  them), JobCanceled confirms that the job's work is stopped.

Every event it writes has an id derived from (job, type[, task]), so a
restarted coordinator that writes one again is harmless.

First-cut shortcut: the coordinator keeps no state of its own. When it is
given partitions it reads them from offset 0 to their current end, folding
only, and acts on what it found once caught up (it commits no offsets: the
group is used for partition assignment only). Start-up time therefore grows
with the log; a snapshot of the views with their offsets would bound it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from services.artifacts.store import ArtifactError, ArtifactStore
from services.contract.envelope import Event, derived_event_id
from services.contract.errors import PublishFailed
from services.contract.jobs import JobState, split_primaries, task_seed
from services.contract.kafka_io import EventDecoder, EventProducer, make_consumer
from services.ops.logs import job_context
from services.projector.state import JobView, TaskView, apply
from services.runner.work import WorkItem, task_partition
from services.settings import PRODUCER_MAX_REQUEST_BYTES, KafkaSettings, RunnerSettings
from services.simulators.merge import MergeError, TaskResult, merge_results

log = logging.getLogger(__name__)

PRODUCER = "runner"
S = JobState


@dataclass
class JobTrack:
    """What the coordinator knows of a job besides its view."""

    partition: int
    submitted: Event | None = None
    scheduled: bool = False
    finishing: bool = False
    cancel: Event | None = None
    job_canceled: bool = False
    ended_tasks: set[int] = field(default_factory=set)
    tasks_canceled: int = 0


class _Rebuild(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.coordinator.forget({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self.coordinator.rebuild(list(assigned))


class TaskQueue:
    """Writes work items to the tasks topic (idempotent producer, ``acks=all``)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=f"{kafka.client_id}-runner-tasks",
            enable_idempotence=True, acks="all", linger_ms=2,
            max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        )
        self._partitions: int | None = None

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def put(self, items: Sequence[WorkItem]) -> None:
        """Write work items and wait until Kafka has all of them.

        Raises:
            PublishFailed: Kafka did not acknowledge them (retriable).
        """
        topic = self.kafka.tasks_topic
        try:
            if self._partitions is None:
                found = await self._producer.partitions_for(topic)
                self._partitions = len(found)
            futures = [
                await self._producer.send(
                    topic, item.encode(), key=item.job_id.encode(),
                    partition=task_partition(item.job_id, item.task_index, self._partitions))
                for item in items
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise PublishFailed(f"Kafka did not accept work items for {topic}: {exc}") from exc


class Coordinator:
    """A long-running service: ``run()`` until ``shutdown()``; usable with ``async with``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: RunnerSettings,
        artifacts: ArtifactStore,
        *,
        producer: EventProducer | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.artifacts = artifacts
        self.views: dict[str, JobView] = {}
        self.tracks: dict[str, JobTrack] = {}
        #: Event ids applied so far, per jobs partition: forgotten with the partition, so
        #: that a partition assigned again is folded again from its first event.
        self._seen: dict[int, set[str]] = {}
        self._catching_up: dict[TopicPartition, int] = {}
        self._decoder = EventDecoder(consumer="coordinator")
        self._own_producer = producer is None
        self._producer = producer or EventProducer(kafka)
        self._queue = TaskQueue(kafka)
        self._consumer: Any = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Coordinator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop after the current event (idempotent, safe before start)."""
        self._stop.set()

    @property
    def consumer(self) -> Any:
        """The running jobs-topic consumer (None before start and after stop): for metrics."""
        return self._consumer

    # --- partitions ------------------------------------------------------------------------

    def forget(self, partitions: set[int]) -> None:
        """Drop the jobs of partitions this coordinator no longer owns."""
        gone = [job for job, track in self.tracks.items() if track.partition in partitions]
        for job in gone:
            self.tracks.pop(job, None)
            self.views.pop(job, None)
        for partition in partitions:
            self._seen.pop(partition, None)
        self._catching_up = {tp: end for tp, end in self._catching_up.items()
                             if tp.partition not in partitions}

    async def rebuild(self, assigned: list[TopicPartition]) -> None:
        """Read newly assigned partitions again from offset 0 (see the module docstring)."""
        mine = [tp for tp in assigned if tp.topic == self.kafka.jobs_topic]
        self.forget({tp.partition for tp in mine})
        if not mine:
            return
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(mine)
        await self._consumer.seek_to_beginning(*mine)
        for tp in mine:
            self._catching_up[tp] = ends[tp]
        log.info("coordinator: rebuilding jobs partitions %s up to %s",
                 sorted(tp.partition for tp in mine), {tp.partition: e for tp, e in ends.items()})

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Coordinate until shut down; raises the first fatal error.

        Raises:
            PublishFailed: Kafka did not take an event (the step is redone on restart).
            aiokafka.errors.KafkaError: the consumer failed for good.
        """
        if self._own_producer:
            await self._producer.start()
        await self._queue.start()
        consumer = make_consumer(self.kafka, group_id=self.settings.coordinator_group)
        consumer.subscribe([self.kafka.jobs_topic], listener=_Rebuild(self))
        self._consumer = consumer
        await consumer.start()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, records in batch.items():
                    for record in records:
                        await self._record(tp, record.value)
                for tp, end in list(self._catching_up.items()):
                    if await consumer.position(tp) >= end:
                        del self._catching_up[tp]
                        await self._caught_up(tp)
        finally:
            self._consumer = None
            await consumer.stop()
            await self._queue.stop()
            if self._own_producer:
                await self._producer.stop()

    async def _record(self, tp: TopicPartition, raw: bytes | None) -> None:
        event = self._decoder.decode(raw)
        seen = self._seen.setdefault(tp.partition, set())
        if event is None or event.event_id in seen:
            return
        seen.add(event.event_id)
        try:
            view = apply(self.views.get(event.job_id), event)
        except (KeyError, TypeError, ValueError) as exc:  # a payload the fold cannot read
            log.warning("coordinator: skipping unreadable %s %s: %r", event.type,
                        event.event_id, exc)
            return
        if view is None:
            return
        self.views[event.job_id] = view
        track = self.tracks.setdefault(event.job_id, JobTrack(tp.partition))
        if event.type == "JobSubmitted" and track.submitted is None:
            track.submitted = event
        elif event.type == "TaskScheduled":
            track.scheduled = True
        elif event.type in ("TaskCompleted", "TaskFailed", "TaskCanceled"):
            track.ended_tasks.add(int(event.payload["task_index"]))
            if event.type == "TaskCanceled":
                track.tasks_canceled += 1
        elif event.type == "CancelRequested" and track.cancel is None:
            track.cancel = event
        elif event.type == "JobCanceled":
            track.job_canceled = True
        if tp not in self._catching_up:
            await self._act(event.job_id)

    async def _caught_up(self, tp: TopicPartition) -> None:
        jobs = [job for job, track in self.tracks.items() if track.partition == tp.partition]
        log.info("coordinator: jobs partition %d rebuilt (%d jobs)", tp.partition, len(jobs))
        for job in jobs:
            await self._act(job)

    async def _act(self, job_id: str) -> None:
        with job_context(job_id):
            await self._act_on(job_id)

    async def _act_on(self, job_id: str) -> None:
        view = self.views.get(job_id)
        track = self.tracks.get(job_id)
        if view is None or track is None or view.platform != "direct":
            return
        if view.state.terminal:
            stopped = not track.scheduled or len(track.ended_tasks) >= view.ntasks
            if view.state is S.CANCELED and track.cancel is not None \
                    and not track.job_canceled and stopped:
                await self._confirm_cancel(view, track)
            return
        if not track.scheduled:
            await self._schedule(view, track)
        elif view.state in (S.MERGING_QUEUED, S.MERGING_RUNNING) and not track.finishing:
            await self._finish(view, track)

    # --- steps -----------------------------------------------------------------------------

    def _caused(self, view: JobView, track: JobTrack, type: str, payload: dict[str, Any],
                *parts: object) -> Event:
        event_id = derived_event_id(view.job_id, type, *parts)
        cause = track.submitted
        if cause is None:
            return Event(type=type, job_id=view.job_id, payload=payload, producer=PRODUCER,
                         event_id=event_id)
        return cause.caused(type, payload, PRODUCER, event_id=event_id)

    async def _schedule(self, view: JobView, track: JobTrack) -> None:
        track.scheduled = True
        try:
            document = await self.artifacts.aget_json(view.input_ref)
        except (ArtifactError, ValueError) as exc:
            track.finishing = True
            await self._producer.publish(self._caused(view, track, "JobFailed", {
                "reason": f"the job's input cannot be read: {exc}", "partial_result_ref": None,
            }))
            return
        if not isinstance(document, dict):
            track.finishing = True
            await self._producer.publish(self._caused(view, track, "JobFailed", {
                "reason": "the job's input artifact is not a JSON object",
                "partial_result_ref": None,
            }))
            return
        correlation = track.submitted.event_id if track.submitted is not None else None
        shares = split_primaries(view.number_of_all_primaries, view.ntasks)
        items = [
            WorkItem(job_id=view.job_id, task_index=i, primaries=n,
                     seed=task_seed(view.base_seed, i), sim_type=view.sim_type,
                     input_ref=view.input_ref, correlation_id=correlation)
            for i, n in enumerate(shares)
        ]
        await self._queue.put(items)
        await self._producer.publish_many([
            self._caused(view, track, "TaskScheduled", {
                "task_index": item.task_index, "requested_primaries": item.primaries,
                "seed": item.seed}, item.task_index)
            for item in items
        ])
        log.info("coordinator: job %s scheduled as %d tasks", view.job_id, len(items))

    async def _confirm_cancel(self, view: JobView, track: JobTrack) -> None:
        track.job_canceled = True
        requested_by = track.cancel.payload.get("requested_by") if track.cancel else None
        await self._producer.publish(self._caused(view, track, "JobCanceled", {
            "reason": f"canceled by {requested_by}" if requested_by else "canceled",
            "tasks_stopped": track.tasks_canceled,
        }))
        log.info("coordinator: job %s canceled (%d tasks stopped)", view.job_id,
                 track.tasks_canceled)

    async def _finish(self, view: JobView, track: JobTrack) -> None:
        track.finishing = True
        completed = [t for t in view.tasks if t.state is S.COMPLETED]
        failures = [t for t in view.tasks if t.state is not S.COMPLETED]
        if view.state is S.MERGING_QUEUED:
            await self._producer.publish(self._caused(view, track, "MergeStarted", {
                "completed_tasks": [t.task_index for t in completed]}))
        task_failures = [{"task_index": t.task_index,
                          "reason": t.failure_reason or f"task {t.state.value.lower()}"}
                         for t in failures]
        merged: dict[str, Any] | None = None
        result_ref: str | None = None
        if completed:
            try:
                merged = await self._merge(completed, partial=bool(failures))
                result_ref = await self.artifacts.aput_json(merged)
            except (ArtifactError, MergeError, ValueError, KeyError, TypeError) as exc:
                log.warning("coordinator: merging job %s failed: %s", view.job_id, exc)
                await self._producer.publish(self._caused(view, track, "JobFailed", {
                    "reason": f"merging the task results failed: {exc}",
                    "task_failures": task_failures, "partial_result_ref": None}))
                return
        if merged is not None and result_ref is not None and not failures:
            await self._producer.publish(self._caused(view, track, "JobCompleted", {
                "result_ref": result_ref, "simulated_primaries": merged["simulated_primaries"],
                "tasks_merged": merged["tasks_merged"]}))
            log.info("coordinator: job %s completed", view.job_id)
            return
        payload: dict[str, Any] = {"task_failures": task_failures,
                                   "partial_result_ref": result_ref}
        if merged is not None:
            payload["reason"] = f"{len(failures)} of {view.ntasks} tasks failed"
            payload["simulated_primaries"] = merged["simulated_primaries"]
        else:
            payload["reason"] = ("every task failed: " + failures[0].failure_reason
                                 if failures and failures[0].failure_reason
                                 else "every task failed")
        await self._producer.publish(self._caused(view, track, "JobFailed", payload))
        log.info("coordinator: job %s failed: %s", view.job_id, payload["reason"])

    async def _merge(self, completed: list[TaskView], *, partial: bool) -> dict[str, Any]:
        results = []
        for task in completed:
            if task.result_ref is None:
                raise MergeError(f"task {task.task_index} completed without a result")
            document = await self.artifacts.aget_json(task.result_ref)
            results.append(TaskResult(task.simulated_primaries, document))
        merged = await asyncio.to_thread(merge_results, results)
        if partial:
            merged["partial"] = True
            merged["tasks_merged_indices"] = [t.task_index for t in completed]
        return merged
