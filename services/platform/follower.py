"""Following the jobs topic: a view of every job of one's partitions, built with the fold.

A platform service (the runner's coordinator, the SLURM bridge) consumes the
jobs topic in a consumer group of its own, so several instances share the jobs
partition by partition, and keeps each job's view with the production fold
(:func:`services.projector.state.apply`), the function the read model uses.

When it is given partitions it reads them from offset 0 to their current end,
folding only, and acts on what it found once caught up: replaying the log
never repeats a side effect (no task is queued, no sbatch or scancel runs
again); a step that was started and not recorded is taken up again from the
state the log shows. It commits no offsets: the group is used for partition
assignment only. Start-up time therefore grows with the log; a snapshot of
the views with their offsets would bound it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder, make_consumer
from services.ops.logs import job_context
from services.projector.state import JobView, apply
from services.settings import KafkaSettings

log = logging.getLogger(__name__)

ENDED_TASK = frozenset({"TaskCompleted", "TaskFailed", "TaskCanceled"})


@dataclass
class JobTrack:
    """What a platform knows of a job besides its view."""

    partition: int
    submitted: Event | None = None
    scheduled: bool = False
    finishing: bool = False
    cancel: Event | None = None
    job_canceled: bool = False
    ended_tasks: set[int] = field(default_factory=set)
    tasks_canceled: int = 0


class _Rebuild(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, follower: JobFollower) -> None:
        self.follower = follower

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.follower.forget({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self.follower.rebuild(list(assigned))


class JobFollower:
    """Base of the services that act on jobs: subclasses implement :meth:`act`.

    ``act(job_id)`` is called after each event of a job once its partition is
    caught up, and once for every job of a partition when it has been rebuilt.
    """

    #: The JobSubmitted ``platform`` whose jobs this follower acts on.
    platform = ""

    def __init__(self, kafka: KafkaSettings, group_id: str, name: str) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.name = name
        self.views: dict[str, JobView] = {}
        self.tracks: dict[str, JobTrack] = {}
        #: Event ids applied so far, per jobs partition: forgotten with the partition, so
        #: that a partition assigned again is folded again from its first event.
        self._seen: dict[int, set[str]] = {}
        self._catching_up: dict[TopicPartition, int] = {}
        self._decoder = EventDecoder(consumer=name)
        self._consumer: Any = None
        self._stop = asyncio.Event()

    async def shutdown(self) -> None:
        """Stop after the current event (idempotent, safe before start)."""
        self._stop.set()

    async def act(self, job_id: str) -> None:
        """Take the job's next step, if it has one (see the class docstring)."""
        raise NotImplementedError

    @property
    def consumer(self) -> Any:
        """The running jobs-topic consumer (None before start and after stop): for metrics."""
        return self._consumer

    async def _act(self, job_id: str) -> None:
        with job_context(job_id):  # every line logged while acting names the job
            await self.act(job_id)

    def mine(self, job_id: str) -> tuple[JobView, JobTrack] | None:
        """The job's view and track if it is a job of this follower's platform."""
        view = self.views.get(job_id)
        track = self.tracks.get(job_id)
        if view is None or track is None or view.platform != self.platform:
            return None
        return view, track

    # --- partitions ------------------------------------------------------------------------

    def forget(self, partitions: set[int]) -> None:
        """Drop the jobs of partitions this follower no longer owns."""
        gone = [job for job, track in self.tracks.items() if track.partition in partitions]
        for job in gone:
            self.tracks.pop(job, None)
            self.views.pop(job, None)
            self.forgotten(job)
        for partition in partitions:
            self._seen.pop(partition, None)
        self._catching_up = {tp: end for tp, end in self._catching_up.items()
                             if tp.partition not in partitions}

    def forgotten(self, job_id: str) -> None:
        """Hook: the job's partition went to another instance (drop what is kept of it)."""

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
        log.info("%s: rebuilding jobs partitions %s up to %s", self.name,
                 sorted(tp.partition for tp in mine), {tp.partition: e for tp, e in ends.items()})

    # --- the loop --------------------------------------------------------------------------

    async def follow(self) -> None:
        """Consume the jobs topic until shut down; raises the first fatal error.

        Raises:
            PublishFailed: an action could not write its event (redone on restart).
            aiokafka.errors.KafkaError: the consumer failed for good.
        """
        consumer = make_consumer(self.kafka, group_id=self.group_id)
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

    def caught_up(self) -> bool:
        """Whether every assigned partition has been rebuilt (and there are some)."""
        consumer = self._consumer
        return consumer is not None and bool(consumer.assignment()) \
            and not self._catching_up

    async def _record(self, tp: TopicPartition, raw: bytes | None) -> None:
        event = self._decoder.decode(raw)
        seen = self._seen.setdefault(tp.partition, set())
        if event is None or event.event_id in seen:
            return
        seen.add(event.event_id)
        try:
            view = apply(self.views.get(event.job_id), event)
        except (KeyError, TypeError, ValueError) as exc:  # a payload the fold cannot read
            log.warning("%s: skipping unreadable %s %s: %r", self.name, event.type,
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
        elif event.type in ENDED_TASK:
            track.ended_tasks.add(int(event.payload["task_index"]))
            if event.type == "TaskCanceled":
                track.tasks_canceled += 1
        elif event.type == "CancelRequested" and track.cancel is None:
            track.cancel = event
        elif event.type == "JobCanceled":
            track.job_canceled = True
        self.seen(event, view, track)
        if tp not in self._catching_up:
            await self._act(event.job_id)

    def seen(self, event: Event, view: JobView, track: JobTrack) -> None:
        """Hook: one more event of a job was folded (also while catching up)."""

    async def _caught_up(self, tp: TopicPartition) -> None:
        jobs = [job for job, track in self.tracks.items() if track.partition == tp.partition]
        log.info("%s: jobs partition %d rebuilt (%d jobs)", self.name, tp.partition, len(jobs))
        for job in jobs:
            await self._act(job)
