"""The coordinator: turns direct jobs into tasks, and ended tasks into a merged result.

It follows the jobs topic in the consumer group ``runner-coordinator`` (so
several coordinators share the jobs partition by partition) with the shared
:class:`services.platform.follower.JobFollower`: a view of each job built with
the production fold, rebuilt from offset 0 when partitions are assigned, acted
on once caught up.

* JobSubmitted (platform ``direct``): the input artifact is checked, one work
  item per task goes to the tasks topic, then one TaskScheduled per task to
  the jobs topic. Work items are written first: a crash in between re-sends
  work items (a task may run twice, harmlessly), where the other order could
  lose a task for good. A job that already has TaskScheduled is never
  scheduled again.
* Every task ended: the job is merged and ended as on every platform
  (:class:`services.platform.finish.JobFinisher`).
* CancelRequested: once every task has reported its end (the workers stop
  them), JobCanceled confirms that the job's work is stopped.

Every event it writes has an id derived from (job, type[, task]), so a
restarted coordinator that writes one again is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.artifacts.store import ArtifactError, ArtifactStore
from services.contract.errors import PublishFailed
from services.contract.jobs import JobState, split_primaries, task_seed
from services.contract.kafka_io import EventProducer
from services.platform.finish import JobFinisher
from services.platform.follower import JobFollower, JobTrack
from services.projector.state import JobView
from services.runner.work import WorkItem, task_partition
from services.settings import PRODUCER_MAX_REQUEST_BYTES, KafkaSettings, RunnerSettings

log = logging.getLogger(__name__)

PRODUCER = "runner"
S = JobState


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


class Coordinator(JobFollower):
    """A long-running service: ``run()`` until ``shutdown()``; usable with ``async with``."""

    platform = "direct"

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: RunnerSettings,
        artifacts: ArtifactStore,
        *,
        producer: EventProducer | None = None,
    ) -> None:
        super().__init__(kafka, settings.coordinator_group, "coordinator")
        self.settings = settings
        self.artifacts = artifacts
        self._own_producer = producer is None
        self._producer = producer or EventProducer(kafka)
        self._finisher = JobFinisher(self._producer, artifacts, PRODUCER)
        self._queue = TaskQueue(kafka)

    async def __aenter__(self) -> Coordinator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def run(self) -> None:
        """Coordinate until shut down; raises the first fatal error.

        Raises:
            PublishFailed: Kafka did not take an event (the step is redone on restart).
            aiokafka.errors.KafkaError: the consumer failed for good.
        """
        if self._own_producer:
            await self._producer.start()
        await self._queue.start()
        try:
            await self.follow()
        finally:
            await self._queue.stop()
            if self._own_producer:
                await self._producer.stop()

    async def act(self, job_id: str) -> None:
        found = self.mine(job_id)
        if found is None:
            return
        view, track = found
        if view.state.terminal:
            stopped = not track.scheduled or len(track.ended_tasks) >= view.ntasks
            if view.state is S.CANCELED and track.cancel is not None \
                    and not track.job_canceled and stopped:
                await self._finisher.confirm_cancel(view, track)
            return
        if not track.scheduled:
            await self._schedule(view, track)
        elif view.state in (S.MERGING_QUEUED, S.MERGING_RUNNING) and not track.finishing:
            await self._finisher.finish(view, track)

    async def _schedule(self, view: JobView, track: JobTrack) -> None:
        track.scheduled = True
        try:
            document = await self.artifacts.aget_json(view.input_ref)
        except (ArtifactError, ValueError) as exc:
            await self._finisher.fail(view, track, f"the job's input cannot be read: {exc}")
            return
        if not isinstance(document, dict):
            await self._finisher.fail(view, track, "the job's input artifact is not a JSON "
                                      "object")
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
            self._finisher.caused(view, track, "TaskScheduled", {
                "task_index": item.task_index, "requested_primaries": item.primaries,
                "seed": item.seed}, item.task_index)
            for item in items
        ])
        log.info("coordinator: job %s scheduled as %d tasks", view.job_id, len(items))
