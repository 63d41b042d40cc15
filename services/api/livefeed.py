"""One shared tail of the jobs topic per API process, folded and fanned out to live streams.

Why one tail: a thousand open streams must not mean a thousand Kafka consumers. The
feed reads every partition of the jobs topic by assignment (no consumer group, so no
rebalance can take a partition away, and nothing is committed), from the end offsets
it found at start. It keeps in memory:

* the **followed jobs** (:class:`FollowedJob`): jobs some stream wants. Each is folded
  with the one fold (:func:`services.projector.state.apply`, repeated event ids dropped
  as the fold drops them) from its first event, and every event becomes one rendered
  :class:`Message`, shared by all of the job's subscribers and kept in a bounded
  per-job history so a reconnecting browser resumes from memory;
* the **recent records** of each partition (offset and job id; owner for JobSubmitted),
  bounded, to find which of a user's jobs moved while the user was away.

A job nobody followed yet is read from the log when a stream first asks for it: from
its first offset (which the read model's ``applied_events`` knows) up to the feed's
position at that moment, while the live records of the job are held back, so the
handover has no gap and no overlap. What memory no longer covers is read from the log
too (:meth:`LiveFeed.replay`, :meth:`LiveFeed.scan`). Positions are Kafka offsets: one
job's events are in one partition, in order, so an offset names a point in a job's
history and a vector of offsets (one per partition) a point in a user's.

Every await point sees a consistent state: records are dispatched synchronously, and
``positions[p]`` is the next offset of partition ``p`` to be dispatched. So a caller
that (in one synchronous step) takes a history and subscribes misses nothing and gets
nothing twice, except what it filters by position (streams always do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import progress
from services.api.errors import ServiceUnavailable, TooManyRequests
from services.contract.envelope import Event
from services.contract.jobs import TERMINAL
from services.contract.kafka_io import EventDecoder, make_consumer
from services.contract.log_reader import partition_records, topic_partitions
from services.contract.topics import ensure_topics
from services.projector import readmodel as rm
from services.projector.projector import PROJECTION
from services.projector.state import JobView, apply
from services.settings import KafkaSettings, StreamSettings

log = logging.getLogger(__name__)

#: How a JobSubmitted record's bytes look (the envelope is compact JSON with sorted keys):
#: a cheap test before decoding, since most records of a busy log are progress lines.
SUBMITTED_MARK = b'"type":"JobSubmitted"'
SWEEP_SECONDS = 5.0
RESTART_DELAY_SECONDS = 1.0


@dataclass(frozen=True)
class Message:
    """One event of one job as streams send it."""

    job_id: str
    partition: int
    offset: int
    #: The rendered JSON (``data:`` of the SSE event), made once for all subscribers.
    data: str
    #: The job's stream ends with this message (first terminal state, or deletion).
    final: bool
    #: The job's state after the event.
    state: str


@dataclass(frozen=True)
class JobStart:
    """Where a job's events begin in the log."""

    partition: int
    offset: int


class FollowedJob:
    """A job folded from its first event, with the rendered messages of its recent events."""

    def __init__(self, job_id: str, partition: int, history_size: int) -> None:
        self.job_id = job_id
        self.partition = partition
        self.view: JobView | None = None
        #: The last offset of this job's records that was folded (-1: none yet).
        self.position = -1
        self.history: deque[Message] = deque(maxlen=history_size)
        #: Every message with an offset at or above this is in ``history``.
        self.history_from = 0
        #: The offset of the message that ends the job's stream, once there is one.
        self.final_offset: int | None = None
        self.subscribers: set[Subscriber] = set()
        self.idle_since = time.monotonic()
        self._seen: set[str] = set()

    @property
    def owner(self) -> str | None:
        return None if self.view is None else self.view.owner

    @property
    def active(self) -> bool:
        """Not ended and not deleted: a user stream follows it."""
        return self.view is not None and self.final_offset is None

    def fold(self, offset: int, event: Event) -> Message | None:
        """Apply one record of this job; the message it becomes, if it is an event of the job.

        Repeated event ids and events before the job's JobSubmitted change nothing and
        become no message, as in the fold of the read model.
        """
        self.position = max(self.position, offset)
        if event.event_id in self._seen:
            return None
        before = self.view
        after = apply(before, event)
        if after is None:
            return None
        self._seen.add(event.event_id)
        self.view = after
        final = self.final_offset is None and (after.state in TERMINAL or after.deleted)
        data = progress.update(before, after, event, self.partition, offset, final=final)
        message = Message(self.job_id, self.partition, offset,
                          json.dumps(data, separators=(",", ":")), final, after.state.value)
        if final:
            self.final_offset = offset
        full = len(self.history) == self.history.maxlen
        self.history.append(message)
        if full:
            self.history_from = self.history[0].offset
        return message

    def covers(self, after: int) -> bool:
        """Whether the history holds every message after position ``after``."""
        return after + 1 >= self.history_from

    def messages_after(self, after: int) -> list[Message]:
        """The kept messages after a position (call :meth:`covers` first)."""
        found: list[Message] = []
        for message in reversed(self.history):
            if message.offset <= after:
                break
            found.append(message)
        found.reverse()
        return found

    def snapshot(self) -> str:
        """The whole job now (its position is :attr:`position`)."""
        assert self.view is not None
        data = progress.snapshot(self.view, final=self.final_offset is not None)
        return json.dumps(data, separators=(",", ":"))


class Subscriber:
    """One open stream: a queue of messages of the jobs it follows."""

    def __init__(self, owner: str, limit: int) -> None:
        self.owner = owner
        self.limit = limit
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        #: The stream fell too far behind and must end (the browser resumes it).
        self.overflowed = False
        self.jobs: set[str] = set()

    def offer(self, message: Message) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self.limit:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(message)


@dataclass
class _Load:
    """A job being read from the log; its live records wait in ``pending``."""

    job_id: str
    start: JobStart
    stop: int
    future: asyncio.Future[FollowedJob]
    pending: list[tuple[int, bytes | None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class Recent:
    """One record of a partition, as remembered for resuming user streams."""

    offset: int
    job_id: str
    #: The owner, for JobSubmitted records only.
    owner: str | None


class LiveFeed:
    """The tail, the followed jobs and the subscribers of one API process."""

    def __init__(self, kafka: KafkaSettings, engine: AsyncEngine, settings: StreamSettings,
                 decoder: EventDecoder | None = None) -> None:
        self.kafka = kafka
        self.engine = engine
        self.settings = settings
        self.decoder = decoder or EventDecoder()
        self.topic = kafka.jobs_topic
        #: Next offset to dispatch, per partition.
        self.positions: dict[int, int] = {}
        self.jobs: dict[str, FollowedJob] = {}
        self.by_owner: dict[str, set[str]] = {}
        self.owner_subscribers: dict[str, set[Subscriber]] = {}
        #: Owners whose new jobs are followed from their JobSubmitted (user streams).
        self.watched: Counter[str] = Counter()
        self.recent: dict[int, deque[Recent]] = {}
        #: Every record with an offset at or above this is in ``recent``.
        self.recent_from: dict[int, int] = {}
        self.streams: Counter[str] = Counter()
        self.subscribers: set[Subscriber] = set()
        self._loading: dict[str, _Load] = {}
        #: Started consumers lent to log reads (``log_reads`` of them at most).
        self._readers: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(settings.log_reads):
            self._readers.put_nowait(None)  # a place for one, started when first needed
        self._task: asyncio.Task[None] | None = None
        #: Set once the tail has found where to start (streams are refused until then).
        self.ready = asyncio.Event()
        self._next_sweep = 0.0
        self.dispatched = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin tailing, in the background: the API serves while Kafka is unreachable.

        In the usual case Kafka answers at once and the tail starts before the first
        request. Otherwise, until the feed has found the topic's partitions and end
        offsets, streams are refused with 503 (:meth:`admitted`); it retries meanwhile.
        """
        try:
            await self._locate()
        except Exception as exc:  # any failure to reach Kafka: retried in the background
            log.warning("live feed: cannot reach %s (%s); retrying in the background",
                        self.topic, exc)
            self._task = asyncio.create_task(self._begin(), name="live-feed")
            return
        self.ready.set()
        self._task = asyncio.create_task(self._run(), name="live-feed")

    async def _begin(self) -> None:
        await asyncio.sleep(RESTART_DELAY_SECONDS)
        while True:
            try:
                await self._locate()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka not reachable yet: try again
                log.warning("live feed: cannot reach %s yet (%s); retrying", self.topic, exc)
                await asyncio.sleep(RESTART_DELAY_SECONDS)
        self.ready.set()
        await self._run()

    async def _locate(self) -> None:
        """The partitions of the jobs topic and their end offsets: where the tail starts.

        Raises:
            aiokafka.errors.KafkaError: Kafka is unreachable.
        """
        await ensure_topics(self.kafka)
        tps = await topic_partitions(self.kafka, self.topic)
        consumer = make_consumer(self.kafka)
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        for tp in tps:
            self.positions[tp.partition] = int(ends[tp])
            self.recent_from[tp.partition] = int(ends[tp])
            self.recent[tp.partition] = deque(maxlen=self.settings.recent_records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        loads = [load.task for load in self._loading.values() if load.task is not None]
        for task in loads:
            task.cancel()
        for task in loads:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._readers.empty():
            reader = self._readers.get_nowait()
            if reader is not None:
                await reader.stop()

    @property
    def partitions(self) -> list[int]:
        return sorted(self.positions)

    async def _run(self) -> None:
        """Tail until stopped; a failed consumer is replaced and resumes where it stopped."""
        while True:
            try:
                await self._tail()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live feed: the tail of %s failed; restarting it at %s",
                              self.topic, self.positions)
                await asyncio.sleep(RESTART_DELAY_SECONDS)

    async def _tail(self) -> None:
        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        consumer = make_consumer(self.kafka, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, self.positions[tp.partition])
            while True:
                fetched = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in fetched.items():
                    for record in records:
                        self._dispatch(tp.partition, record)
                self._sweep()
        finally:
            await consumer.stop()

    # --- the live path (synchronous: no await between reading a record and fanning it out) --

    def _dispatch(self, partition: int, record: ConsumerRecord[Any, Any]) -> None:
        offset: int = record.offset
        if offset < self.positions[partition]:
            return  # already dispatched (a restarted consumer re-reading a batch)
        self.positions[partition] = offset + 1
        self.dispatched += 1
        raw: bytes | None = record.value
        job_id, owner, event = self._identify(record)
        if job_id is None:
            return
        self._remember(partition, Recent(offset, job_id, owner))
        load = self._loading.get(job_id)
        if load is not None:
            load.pending.append((offset, raw))
            return
        job = self.jobs.get(job_id)
        if job is None:
            if owner is None or not self.watched[owner]:
                return
            job = self._add(FollowedJob(job_id, partition, self.settings.history_per_job))
        if event is None:
            event = self.decoder.decode(raw)
            if event is None:
                return
        self._fold(job, offset, event)

    def _identify(self, record: ConsumerRecord[Any, Any]
                  ) -> tuple[str | None, str | None, Event | None]:
        """A record's job id, its owner if it is a JobSubmitted, and its event if decoded.

        Only a JobSubmitted (or a record without a key) is decoded: the key is the job id.
        """
        raw: bytes | None = record.value
        job_id = record.key.decode(errors="replace") if record.key else None
        if raw is None or (SUBMITTED_MARK not in raw and job_id is not None):
            return job_id, None, None
        event = self.decoder.decode(raw)
        if event is None:
            return None, None, None
        owner = str(event.payload.get("owner")) if event.type == "JobSubmitted" else None
        return event.job_id, owner, event

    def _remember(self, partition: int, entry: Recent) -> None:
        ring = self.recent[partition]
        if len(ring) == ring.maxlen:
            self.recent_from[partition] = ring[1].offset if len(ring) > 1 else entry.offset
        ring.append(entry)

    def _fold(self, job: FollowedJob, offset: int, event: Event) -> None:
        had_owner = job.owner
        message = job.fold(offset, event)
        if had_owner is None and job.owner is not None:
            self.by_owner.setdefault(job.owner, set()).add(job.job_id)
            for subscriber in self.owner_subscribers.get(job.owner, ()):
                self.follow(subscriber, job)
        if message is not None:
            for subscriber in list(job.subscribers):
                subscriber.offer(message)

    def _add(self, job: FollowedJob) -> FollowedJob:
        self.jobs[job.job_id] = job
        return job

    def _sweep(self) -> None:
        """Forget jobs nobody has followed for ``linger_seconds``."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        for job_id, job in list(self.jobs.items()):
            if job.subscribers or now - job.idle_since < self.settings.linger_seconds:
                continue
            if job.active and job.owner is not None and self.watched[job.owner]:
                continue  # a user stream of its owner is setting up and will want it
            del self.jobs[job_id]
            if job.owner is not None:
                owned = self.by_owner.get(job.owner)
                if owned is not None:
                    owned.discard(job_id)
                    if not owned:
                        del self.by_owner[job.owner]

    # --- subscribing (synchronous) ------------------------------------------------------------

    def follow(self, subscriber: Subscriber, job: FollowedJob) -> None:
        job.subscribers.add(subscriber)
        subscriber.jobs.add(job.job_id)

    def unfollow(self, subscriber: Subscriber, job_id: str) -> None:
        subscriber.jobs.discard(job_id)
        job = self.jobs.get(job_id)
        if job is not None and subscriber in job.subscribers:
            job.subscribers.discard(subscriber)
            if not job.subscribers:
                job.idle_since = time.monotonic()

    def subscribe_owner(self, subscriber: Subscriber) -> None:
        """New jobs of the subscriber's owner are followed for it from their JobSubmitted."""
        self.owner_subscribers.setdefault(subscriber.owner, set()).add(subscriber)

    def subscriber(self, owner: str) -> Subscriber:
        """A new subscriber (one open stream) of an owner."""
        subscriber = Subscriber(owner, self.settings.queue_size)
        self.subscribers.add(subscriber)
        return subscriber

    def end_all(self) -> None:
        """Make every open stream end now (the server is shutting down).

        Browsers resume, here or on another process, from their last ids.
        """
        for subscriber in self.subscribers:
            subscriber.overflowed = True
            subscriber.queue.put_nowait(None)

    def close(self, subscriber: Subscriber) -> None:
        """Drop a subscriber from everything it followed."""
        self.subscribers.discard(subscriber)
        for job_id in list(subscriber.jobs):
            self.unfollow(subscriber, job_id)
        subs = self.owner_subscribers.get(subscriber.owner)
        if subs is not None:
            subs.discard(subscriber)
            if not subs:
                del self.owner_subscribers[subscriber.owner]

    def owner_jobs(self, owner: str) -> list[FollowedJob]:
        """The followed jobs of an owner that are still active."""
        return [self.jobs[j] for j in self.by_owner.get(owner, ()) if self.jobs[j].active]

    @contextlib.contextmanager
    def admitted(self, owner: str) -> Iterator[None]:
        """Count one open stream against the limits for its lifetime.

        Raises:
            ServiceUnavailable: this process serves ``max_streams`` already.
            TooManyRequests: the user holds ``max_streams_per_user`` already.
        """
        if not self.ready.is_set():
            raise ServiceUnavailable("Live streams are unavailable: the job log cannot be "
                                     "reached yet, try again later")
        if self.streams.total() >= self.settings.max_streams:
            raise ServiceUnavailable("Too many open streams on this server, try again later")
        if self.streams[owner] >= self.settings.max_streams_per_user:
            raise TooManyRequests(f"At most {self.settings.max_streams_per_user} open streams "
                                  "per user")
        self.streams[owner] += 1
        try:
            yield
        finally:
            self.streams[owner] -= 1
            if self.streams[owner] <= 0:
                del self.streams[owner]

    @contextlib.contextmanager
    def watching(self, owner: str) -> Iterator[None]:
        """Follow the owner's new jobs from their JobSubmitted while the block runs."""
        self.watched[owner] += 1
        try:
            yield
        finally:
            self.watched[owner] -= 1
            if self.watched[owner] <= 0:
                del self.watched[owner]

    # --- reading the log -------------------------------------------------------------------

    async def follow_job(self, job_id: str, start: JobStart) -> FollowedJob:
        """The followed job, read from the log first if nobody follows it yet.

        Raises:
            ServiceUnavailable: the log could not be read.
        """
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        load = self._loading.get(job_id)
        if load is None:
            stop = self.positions[start.partition]
            load = _Load(job_id, start, stop, asyncio.get_running_loop().create_future())
            self._loading[job_id] = load
            load.task = asyncio.create_task(self._load(load), name=f"live-load-{job_id}")
        return await asyncio.shield(load.future)

    async def _load(self, load: _Load) -> None:
        job = FollowedJob(load.job_id, load.start.partition, self.settings.history_per_job)
        try:
            async for event, offset in self._job_events(load.job_id, load.start, load.stop):
                job.fold(offset, event)
        except asyncio.CancelledError:
            self._loading.pop(load.job_id, None)
            load.future.cancel()
            raise
        except Exception as exc:
            del self._loading[load.job_id]
            if not load.future.done():
                load.future.set_exception(_unavailable(exc))
            return
        # One synchronous step: the held-back live records, then live from here on.
        del self._loading[load.job_id]
        for offset, raw in load.pending:
            held = self.decoder.decode(raw)
            if held is not None and held.job_id == load.job_id:
                job.fold(offset, held)
        job.idle_since = time.monotonic()
        self._add(job)
        if job.owner is not None:
            self.by_owner.setdefault(job.owner, set()).add(job.job_id)
        if not load.future.done():
            load.future.set_result(job)

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[Any]:
        """Borrow one of the started log-reading consumers (one that failed is replaced)."""
        reader = await self._readers.get()
        try:
            if reader is None:
                reader = make_consumer(self.kafka)
                await reader.start()
            yield reader
        except BaseException:
            if reader is not None:
                with contextlib.suppress(Exception):
                    await reader.stop()
            reader = None
            raise
        finally:
            self._readers.put_nowait(reader)

    async def _records(self, partition: int, start: int,
                       stop: int) -> AsyncIterator[list[ConsumerRecord[Any, Any]]]:
        async with self._reader() as reader:
            async for records in partition_records(self.kafka, self.topic, partition, start,
                                                   stop, consumer=reader):
                yield records

    async def _job_events(self, job_id: str, start: JobStart,
                          stop: int) -> AsyncIterator[tuple[Event, int]]:
        """The events of one job in ``[start, stop)`` of its partition, in log order."""
        key = job_id.encode()
        async for records in self._records(start.partition, start.offset, stop):
            for record in records:
                if record.key is not None and record.key != key:
                    continue
                event = self.decoder.decode(record.value)
                if event is not None and event.job_id == job_id:
                    yield event, record.offset

    async def replay(self, job_id: str, start: JobStart,
                     after: int) -> tuple[list[Message], int]:
        """The job's messages after position ``after``, folded afresh from the log.

        For a resume from further back than memory keeps. Returns the messages and the
        position up to which they are complete (the feed's position when the read began,
        minus one): the rest is in the followed job's history.

        Raises:
            ServiceUnavailable: the log could not be read.
        """
        stop = self.positions[start.partition]
        job = FollowedJob(job_id, start.partition, 1)
        found: list[Message] = []
        try:
            async for event, offset in self._job_events(job_id, start, stop):
                message = job.fold(offset, event)
                if message is not None and offset > after:
                    found.append(message)
        except Exception as exc:
            raise _unavailable(exc) from exc
        return found, stop - 1

    async def scan(self, partition: int, after: int, before: int) -> list[Recent]:
        """Records of a partition in ``(after, before)`` read from the log (as :attr:`recent`).

        Raises:
            ServiceUnavailable: the log could not be read.
        """
        found: list[Recent] = []
        try:
            async for records in self._records(partition, after + 1, before):
                for record in records:
                    job_id, owner, _ = self._identify(record)
                    if job_id is not None:
                        found.append(Recent(record.offset, job_id, owner))
        except Exception as exc:
            raise _unavailable(exc) from exc
        return found

    def recent_between(self, partition: int, after: int, before: int) -> list[Recent] | None:
        """Remembered records of a partition in ``(after, before)``; None if memory is short."""
        if after + 1 < self.recent_from[partition]:
            return None
        found: list[Recent] = []
        for entry in reversed(self.recent[partition]):
            if entry.offset <= after:
                break
            if entry.offset < before:
                found.append(entry)
        found.reverse()
        return found

    async def reach(self, positions: dict[int, int], bound_seconds: float) -> None:
        """Wait until the tail has dispatched every offset up to ``positions`` (inclusive).

        Raises:
            ServiceUnavailable: it has not within ``bound_seconds``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound_seconds
        while any(self.positions[p] <= offset for p, offset in positions.items()):
            if loop.time() >= deadline:
                raise ServiceUnavailable("The live feed is behind the job log, try again later")
            await asyncio.sleep(0.02)

    # --- the read model --------------------------------------------------------------------

    async def job_starts(self, job_ids: Iterable[str]) -> dict[str, JobStart]:
        """Where each job's events begin, from the ids of the events the projector applied."""
        ids = sorted(set(job_ids))
        starts: dict[str, JobStart] = {}
        table = rm.applied_events
        async with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                rows = (await conn.execute(
                    select(table.c.job_id, table.c.partition, func.min(table.c.offset))
                    .where(table.c.job_id.in_(ids[i:i + 500]), table.c.topic == self.topic)
                    .group_by(table.c.job_id, table.c.partition))).all()
                for job_id, partition, offset in rows:
                    known = starts.get(job_id)
                    if known is None or offset < known.offset:
                        starts[job_id] = JobStart(int(partition), int(offset))
        return starts

    async def projected_positions(self) -> dict[int, int]:
        """The last offset the read model has applied, per partition (-1: none)."""
        async with self.engine.connect() as conn:
            stored = await rm.load_offsets(conn, PROJECTION, self.topic)
        return {p: stored.get(p, -1) for p in self.partitions}

    async def active_jobs(self, owner: str) -> list[str]:
        """The owner's jobs that the read model shows neither ended nor deleted."""
        jobs = rm.jobs
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(jobs.c.job_id).where(
                    jobs.c.owner == owner, jobs.c.deleted.is_(False),
                    jobs.c.state.not_in([s.value for s in TERMINAL])))).all()
        return [row.job_id for row in rows]

    async def owners(self, job_ids: Iterable[str]) -> dict[str, str]:
        """The owners of jobs, as the read model knows them."""
        ids = sorted(set(job_ids))
        found: dict[str, str] = {}
        jobs = rm.jobs
        async with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                rows = (await conn.execute(select(jobs.c.job_id, jobs.c.owner)
                                           .where(jobs.c.job_id.in_(ids[i:i + 500])))).all()
                found.update({row.job_id: row.owner for row in rows})
        return found


def _unavailable(exc: BaseException) -> Exception:
    if isinstance(exc, ServiceUnavailable):
        return exc
    log.warning("live feed: reading the job log failed: %r", exc)
    return ServiceUnavailable("The job log cannot be read right now, try again later")
