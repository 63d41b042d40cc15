"""Verify a live read model against a rebuild from the log.

The live projector may be behind the log (it is running, or was stopped). Comparing it
with the *whole* log would then report every job it has not caught up on. So verify
first reads the live model's stored offsets (``projector_offsets``) together with its
rows, and rebuilds only up to those offsets: offset ``o`` stored for partition ``p``
means "records 0..o of p are applied", so the rebuild stops before ``o + 1``; a
partition with no stored offset is not read at all. Since a job's events all live in
one partition and the fold reads nothing but events, both models must then be equal.

A running projector can commit between two reads; the offsets are read before and after
the rows and the read is retried until both agree, so the rows and the offsets belong
to the same state on every backend (SQLite reads outside a transaction here).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from services.audit.compare import Comparison, Rows, compare_rows, snapshot
from services.audit.rebuild import RebuildResult, rebuild
from services.projector import readmodel as rm
from services.projector.projector import PROJECTION
from services.projector.readmodel import make_engine
from services.settings import KafkaSettings

SNAPSHOT_ATTEMPTS = 20


class LiveModelMoving(RuntimeError):
    """The live projector committed during every attempt to read a consistent snapshot."""


@dataclass
class VerifyResult:
    """The comparison, with the rebuild it was made against."""

    comparison: Comparison
    rebuild: RebuildResult
    live_offsets: dict[int, int]


async def live_snapshot(
    engine: AsyncEngine, topic: str, job_ids: Sequence[str] | None
) -> tuple[dict[int, int], dict[str, Rows]]:
    """Stored offsets and rows of the live model that belong together.

    Raises:
        LiveModelMoving: no two reads of the offsets agreed.
    """
    for _ in range(SNAPSHOT_ATTEMPTS):
        async with engine.connect() as conn:
            before = await rm.load_offsets(conn, PROJECTION, topic)
            rows = await snapshot(conn, job_ids)
            after = await rm.load_offsets(conn, PROJECTION, topic)
        if before == after:
            return after, rows
    raise LiveModelMoving(f"the live model changed during {SNAPSHOT_ATTEMPTS} reads")


async def verify(
    kafka: KafkaSettings,
    live: AsyncEngine,
    *,
    job_ids: Sequence[str] | None = None,
    fail_fast: bool = False,
    batch: int = 2000,
) -> VerifyResult:
    """Rebuild into a temporary SQLite database up to the live offsets, then compare."""
    offsets, live_rows = await live_snapshot(live, kafka.jobs_topic, job_ids)
    until = {p: o + 1 for p, o in offsets.items()}
    with tempfile.TemporaryDirectory(prefix="simjobs-verify-") as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'rebuild.sqlite3'}")
        try:
            rebuilt = await rebuild(kafka, engine, until=until, batch=batch)
            async with engine.connect() as conn:
                rebuilt_rows = await snapshot(conn, job_ids)
        finally:
            await engine.dispose()
    return VerifyResult(compare_rows(live_rows, rebuilt_rows, fail_fast=fail_fast),
                        rebuilt, offsets)
