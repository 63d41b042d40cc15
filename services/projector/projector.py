"""The projector: folds every job event into the SQL read model, exactly once.

It consumes the jobs topic without committing offsets to Kafka; instead,
each batch's rows, the ids of the events it applied and the offset it
reached are written in one database transaction. On start and after every
rebalance it seeks each partition to the stored offset + 1. A crash at any
point therefore neither loses nor doubles an effect; an event re-emitted
under the same id (a retried step) is recognised by its id and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder, make_consumer
from services.projector import readmodel as rm
from services.projector.state import BatchFold, JobView
from services.projector.transactions import (
    RETRY_FIRST_S,
    RETRY_MAX_S,
    Transactions,
    transient,
)
from services.settings import KafkaSettings

log = logging.getLogger(__name__)

PROJECTION = "readmodel"

#: A record, its event (None if skipped) and why it is skipped (None if not).
Decoded = tuple[ConsumerRecord[Any, Any], Event | None, str | None]


@dataclass
class BatchResult:
    """What one transaction did (for metrics and tests)."""

    applied: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    jobs_written: int = 0


class _Seeker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalance callbacks run beside an in-flight batch: they wait for it to commit."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self.projector.batch_lock:
            self.projector.forget_cache()

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        async with self.projector.batch_lock:
            await self.projector.seek_to_stored(assigned)


class Projector:
    """A long-running service: ``run()`` until ``shutdown()``; usable with ``async with``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        engine: AsyncEngine,
        *,
        group_id: str = "projector",
        max_batch: int = 20000,
        decoder: EventDecoder | None = None,
        projection: str = PROJECTION,
    ) -> None:
        self.kafka = kafka
        self.engine = engine
        self.group_id = group_id
        self.max_batch = max_batch
        self.decoder = decoder or EventDecoder()
        self.projection = projection
        self.topic = kafka.jobs_topic
        self._cache: dict[str, JobView] = {}
        self._transactions = Transactions(engine)
        #: Held while a batch is applied; rebalance callbacks take it too, so the
        #: cache is never dropped, nor offsets read, in the middle of a batch.
        self.batch_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._consumer: Any = None
        self.applied_total = 0
        self.positions: dict[int, int] = {}

    def forget_cache(self) -> None:
        """Drop cached views: they are valid only while this process owns their partition."""
        self._cache.clear()

    async def seek_to_stored(self, assigned: Sequence[TopicPartition]) -> None:
        """Move each assigned partition to just after the last offset stored in the database."""
        self.forget_cache()
        async with self.engine.connect() as conn:
            stored = await rm.load_offsets(conn, self.projection, self.topic)
        for tp in assigned:
            if tp.topic != self.topic:
                continue
            if tp.partition in stored:
                self._consumer.seek(tp, stored[tp.partition] + 1)
            else:
                await self._consumer.seek_to_beginning(tp)

    async def __aenter__(self) -> Projector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Ask ``run()`` to finish its current batch and stop (idempotent, safe before start)."""
        self._stop.set()

    async def run(self) -> None:
        """Consume and apply until shut down; raises the first fatal error.

        Raises:
            aiokafka.errors.KafkaError: Kafka failed in a way the client does not retry.
            sqlalchemy.exc.SQLAlchemyError: the database failed (the batch is not applied).
        """
        if await rm.rebuild_if_schema_changed(self.engine):
            log.warning("read-model tables were made by other code: dropped, replaying the log")
        await rm.create_schema(self.engine)
        self._consumer = make_consumer(self.kafka, group_id=self.group_id)
        self._consumer.subscribe([self.topic], listener=_Seeker(self))
        await self._consumer.start()
        # One batch is fetched and decoded while the one before it is in its transaction:
        # SQLite and asyncpg do their part without the GIL, so the two overlap. Batches
        # still commit one after the other (``batch_lock``), each in its own transaction.
        applying: asyncio.Task[BatchResult] | None = None
        try:
            while not self._stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self.max_batch)
                records = [r for tp_records in batch.values() for r in tp_records]
                if not records:
                    continue
                decoded = self._decode(records)
                if applying is not None:
                    await applying  # the batch before: its error, if any, ends the run
                applying = asyncio.create_task(self._apply_decoded(decoded))
            if applying is not None:
                await applying
                applying = None
        finally:
            if applying is not None:  # leaving on an error: let the batch in flight end
                await asyncio.wait([applying])
                if not applying.cancelled():
                    applying.exception()  # reported by the error that ends the run
            await self._consumer.stop()
            self._consumer = None
            await self.close()

    async def close(self) -> None:
        """Release the database writer (``run()`` does; callers of ``apply_records`` must)."""
        await self._transactions.close()

    def _decode(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[Decoded]:
        return [(r, *self.decoder.decode_with_reason(r.value)) for r in records]

    async def apply_records(self, records: Sequence[ConsumerRecord[Any, Any]]) -> BatchResult:
        """Apply one batch of records in one transaction (the exactly-once unit)."""
        return await self._apply_decoded(self._decode(records))

    async def _apply_decoded(self, decoded: Sequence[Decoded]) -> BatchResult:
        records = [d[0] for d in decoded]
        async with self.batch_lock:
            delay = RETRY_FIRST_S
            while True:
                try:
                    result = await self._transactions.run(
                        lambda conn: self._apply(conn, decoded))
                    break
                except BaseException as exc:
                    self.forget_cache()  # the cache may hold views the database never got
                    if self._stop.is_set() or not transient(exc):
                        raise
                    log.warning("read model unavailable (%s: %s); batch of %d records "
                                "retried in %.1f s", type(exc).__name__,
                                str(exc).splitlines()[0] if str(exc) else "", len(records),
                                delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        self.applied_total += result.applied
        for r in records:
            self.positions[r.partition] = r.offset
        return result

    def _apply(self, conn: Connection, decoded: Sequence[Decoded]) -> BatchResult:
        """The batch's transaction (blocking; :class:`Transactions` says where it runs)."""
        result = BatchResult()
        writers = rm.bulk_writers(conn)
        # A batch fetched before a rebalance may hold records that this or another
        # instance has applied since: the offsets stored in this transaction decide.
        stored = rm.fetch_offsets(conn, self.projection, self.topic)
        fresh = [d for d in decoded if d[0].offset > stored.get(d[0].partition, -1)]
        if len(fresh) < len(decoded):
            result.skipped["already applied"] += len(decoded) - len(fresh)
        decoded = fresh
        events = [e for _, e, _ in decoded if e is not None]
        known = writers.known_event_ids(conn, [e.event_id for e in events])
        job_ids = list(dict.fromkeys(e.job_id for e in events))
        missing = [j for j in job_ids if j not in self._cache]
        if missing:
            self._cache.update(rm.fetch_views(conn, missing))
        batch = BatchFold(self._cache)
        applied_rows: list[tuple[Any, ...]] = []
        offsets: dict[int, int] = {}
        for record, event, reason in decoded:
            offsets[record.partition] = record.offset
            if event is None:
                result.skipped[reason or "unreadable"] += 1
                continue
            if event.event_id in known:
                result.skipped["duplicate"] += 1
                continue
            known.add(event.event_id)
            try:
                applied = batch.apply(event)
            except (KeyError, TypeError, ValueError) as exc:
                # Only an unvalidated foreign event can get here; skip it, never crash on it.
                log.warning("skipping event %s the fold cannot read: %r", event.event_id, exc)
                result.skipped[f"invalid:{event.type}"] += 1
                continue
            if not applied:
                result.skipped["orphan"] += 1
                continue
            applied_rows.append(writers.applied_events.prepare((
                event.event_id, event.job_id, event.type, record.topic, record.partition,
                record.offset, event.occurred_at)))
        result.applied = len(applied_rows)
        writers.applied_events.write(conn, applied_rows)
        self._write_views(conn, writers, batch.views(), result)
        writers.offsets.write(conn, [(self.projection, self.topic, p, o)
                                     for p, o in offsets.items()])
        self._count_skips(conn, result.skipped)
        return result

    def _write_views(
        self, conn: Connection, writers: rm.BulkWriters, after: dict[str, JobView],
        result: BatchResult,
    ) -> None:
        """Write the jobs the batch changed, and only their tasks that changed."""
        job_rows: list[tuple[Any, ...]] = []
        task_rows: list[tuple[Any, ...]] = []
        for job_id, new in after.items():
            old = self._cache.get(job_id)
            if new is old:
                continue
            self._cache[job_id] = new
            job_rows.append(writers.job_values(new))
            old_tasks = old.tasks if old is not None else ()
            for i, task in enumerate(new.tasks):
                if i >= len(old_tasks) or old_tasks[i] is not task:
                    task_rows.append(writers.task_values(job_id, task))
        writers.jobs.write(conn, job_rows)
        writers.tasks.write(conn, task_rows)
        result.jobs_written = len(job_rows)

    def _count_skips(self, conn: Connection, skipped: Counter[str]) -> None:
        reasons = +skipped  # drop zero counts
        if not reasons:
            return
        stmt = rm.dialect_insert(conn, rm.projector_skips)
        stmt = stmt.on_conflict_do_update(
            index_elements=["projection", "reason"],
            set_={"count": rm.projector_skips.c.count + stmt.excluded["count"]},
        )
        conn.execute(
            stmt,
            [{"projection": self.projection, "reason": r, "count": n}
             for r, n in sorted(reasons.items())],
        )
