"""Rebuild a read model from offset 0 with the projector's own code.

Like Temporal's replayer, which builds the same worker as the live service, this
module does not fold anything itself: it reads the jobs topic by assignment (no
consumer group, nothing committed) and hands each batch of raw records to
:meth:`Projector.apply_records`, the exact transaction the live projector runs. The
result is therefore a database the live projector could continue from (its offsets
are stored too).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.log_reader import LogReader
from services.projector import readmodel as rm
from services.projector.projector import PROJECTION, Projector
from services.settings import KafkaSettings


class NotEmpty(RuntimeError):
    """The target database already holds jobs (pass ``force`` to wipe them)."""


@dataclass
class RebuildResult:
    """What a rebuild read and wrote."""

    records: int = 0
    applied: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    jobs: int = 0
    tasks: int = 0
    seconds: float = 0.0
    #: Per partition, the offset just past the last record read (the end it stopped at).
    stop_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def count_rows(engine: AsyncEngine) -> tuple[int, int]:
    """Number of jobs and of tasks in a read model."""
    async with engine.connect() as conn:
        n_jobs = (await conn.execute(select(func.count()).select_from(rm.jobs))).scalar_one()
        n_tasks = (await conn.execute(select(func.count()).select_from(rm.tasks))).scalar_one()
    return int(n_jobs), int(n_tasks)


async def _prepare(engine: AsyncEngine, force: bool) -> None:
    await rm.create_schema(engine)
    n_jobs, _ = await count_rows(engine)
    if n_jobs and not force:
        raise NotEmpty(f"the database already holds {n_jobs} jobs; pass --force to replace them")
    if force:
        async with engine.begin() as conn:
            for table in (rm.tasks, rm.jobs, rm.applied_events):
                await conn.execute(delete(table))
            for table in (rm.projector_offsets, rm.projector_skips):
                await conn.execute(delete(table).where(table.c.projection == PROJECTION))


async def rebuild(
    kafka: KafkaSettings,
    engine: AsyncEngine,
    *,
    until: Mapping[int, int] | None = None,
    batch: int = 2000,
    force: bool = False,
) -> RebuildResult:
    """Fold the jobs topic from offset 0 into ``engine`` through ``Projector.apply_records``.

    ``until`` maps a partition to the offset to stop before (exclusive); partitions it
    does not name are not read (an empty mapping reads nothing). Without it every
    partition is read up to its end offset at the time of the call.

    Raises:
        NotEmpty: the database has jobs and ``force`` is false.
        aiokafka.errors.KafkaError: the cluster is unreachable.
    """
    await _prepare(engine, force)
    projector = Projector(kafka, engine, max_batch=batch)
    result = RebuildResult()
    started = time.perf_counter()
    reader = LogReader(kafka, kafka.jobs_topic, until=until, batch=batch)
    try:
        async for records in reader.batches():
            await projector.apply_records(records)
            result.records += len(records)
    finally:
        await projector.close()
    result.stop_offsets = reader.stops
    result.seconds = time.perf_counter() - started
    result.applied = projector.applied_total
    async with engine.connect() as conn:
        result.skipped.update(await rm.load_skips(conn, projector.projection))
    result.jobs, result.tasks = await count_rows(engine)
    return result

