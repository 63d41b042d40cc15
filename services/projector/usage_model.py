"""Usage accounting's tables and its one transaction per batch of events.

Per user, day, simulator and platform: jobs submitted, tasks ended, primaries simulated,
CPU seconds and wall seconds of the simulators. The rules:

* a job counts once, on the day it was submitted (JobSubmitted);
* a task counts once, on the day it ended, with what its first end event
  (TaskCompleted, TaskFailed or TaskCanceled) reports: simulated primaries, and the CPU
  and wall seconds the platform measured. Resources used are counted even where the
  fold keeps another state (a task that completed while its job was being canceled
  still used its CPU).

Idempotent by natural keys, in the same transaction as the counters: a job is counted
only if its row in ``usage_jobs`` is new, a task only if ``(job_id, task_index)`` is new
in ``usage_tasks``, so a redelivered or re-emitted event never counts twice, whatever its
id. The last offset applied per partition is stored in the same transaction too
(``usage_offsets``, for the lag metric and for audits).

These tables live in the read model's database but in their own ``MetaData`` (the read
model's schema fingerprint covers only the projector's tables).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.contract.envelope import Event
from services.projector.readmodel import dialect_insert

usage_metadata = MetaData()

usage_daily = Table(
    "usage_daily", usage_metadata,
    Column("owner", String(200), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("sim_type", String(40), primary_key=True),
    Column("platform", String(20), primary_key=True),
    Column("jobs", Integer, nullable=False, default=0),
    Column("tasks", Integer, nullable=False, default=0),
    Column("primaries", BigInteger, nullable=False, default=0),
    Column("cpu_seconds", Float, nullable=False, default=0.0),
    Column("wall_seconds", Float, nullable=False, default=0.0),
)

usage_jobs = Table(
    "usage_jobs", usage_metadata,
    Column("job_id", String(100), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("sim_type", String(40), nullable=False),
    Column("platform", String(20), nullable=False),
)

usage_tasks = Table(
    "usage_tasks", usage_metadata,
    Column("job_id", String(100), primary_key=True),
    Column("task_index", Integer, primary_key=True),
    Column("event_id", String(64), nullable=False),
)

usage_offsets = Table(
    "usage_offsets", usage_metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
)

TASK_ENDS = frozenset({"TaskCompleted", "TaskFailed", "TaskCanceled"})
COUNTERS = ("jobs", "tasks", "primaries", "cpu_seconds", "wall_seconds")
Key = tuple[str, str, str, str]  # owner, day, sim_type, platform


@dataclass
class UsageBatch:
    """What one batch changed (for metrics and tests)."""

    counted: int = 0
    duplicates: int = 0
    orphans: int = 0
    deltas: dict[Key, dict[str, float]] = field(default_factory=dict)

    def add(self, key: Key, **amounts: float) -> None:
        row = self.deltas.setdefault(key, dict.fromkeys(COUNTERS, 0.0))
        for name, amount in amounts.items():
            row[name] += amount


def _day(event: Event) -> str:
    return event.occurred_at.date().isoformat()


async def _inserted(conn: AsyncConnection, table: Table, row: dict[str, Any]) -> bool:
    """Insert unless the key exists; whether this call inserted it."""
    stmt = dialect_insert(conn, table).values(**row).on_conflict_do_nothing()
    return bool((await conn.execute(stmt)).rowcount)


async def apply_usage(conn: AsyncConnection, topic: str,
                      positioned: Sequence[tuple[int, int, Event | None]]) -> UsageBatch:
    """Count a batch of ``(partition, offset, event or None)`` in one transaction."""
    batch = UsageBatch()
    jobs: dict[str, tuple[str, str, str]] = {}
    for _, _, event in positioned:
        if event is None:
            continue
        p = event.payload
        if event.type == "JobSubmitted":
            owner, sim, platform = str(p["owner"]), str(p["sim_type"]), str(p["platform"])
            fresh = await _inserted(conn, usage_jobs, {
                "job_id": event.job_id, "owner": owner, "sim_type": sim,
                "platform": platform})
            if fresh:
                batch.add((owner, _day(event), sim, platform), jobs=1)
                batch.counted += 1
            else:
                batch.duplicates += 1
        elif event.type in TASK_ENDS:
            known = jobs.get(event.job_id) or await _job(conn, event.job_id)
            if known is None:
                batch.orphans += 1
                continue
            attrs = jobs[event.job_id] = known
            fresh = await _inserted(conn, usage_tasks, {
                "job_id": event.job_id, "task_index": int(p["task_index"]),
                "event_id": event.event_id})
            if not fresh:
                batch.duplicates += 1
                continue
            batch.add((attrs[0], _day(event), attrs[1], attrs[2]), tasks=1,
                      primaries=float(p.get("simulated_primaries", 0)),
                      cpu_seconds=float(p.get("cpu_seconds", 0.0)),
                      wall_seconds=float(p.get("wall_seconds", 0.0)))
            batch.counted += 1
    await _add_counters(conn, batch.deltas)
    offsets: dict[int, int] = {}
    for partition, offset, _ in positioned:
        offsets[partition] = max(offset, offsets.get(partition, -1))
    if offsets:
        stmt = dialect_insert(conn, usage_offsets)
        stmt = stmt.on_conflict_do_update(
            index_elements=["topic", "partition"], set_={"offset": stmt.excluded["offset"]})
        await conn.execute(stmt, [{"topic": topic, "partition": p, "offset": o}
                                  for p, o in offsets.items()])
    return batch


async def _job(conn: AsyncConnection, job_id: str) -> tuple[str, str, str] | None:
    row = (await conn.execute(select(usage_jobs).where(usage_jobs.c.job_id == job_id))).first()
    return None if row is None else (row.owner, row.sim_type, row.platform)


async def _add_counters(conn: AsyncConnection, deltas: dict[Key, dict[str, float]]) -> None:
    if not deltas:
        return
    stmt = dialect_insert(conn, usage_daily)
    stmt = stmt.on_conflict_do_update(
        index_elements=["owner", "day", "sim_type", "platform"],
        set_={name: usage_daily.c[name] + stmt.excluded[name] for name in COUNTERS})
    await conn.execute(stmt, [
        {"owner": k[0], "day": k[1], "sim_type": k[2], "platform": k[3],
         "jobs": int(v["jobs"]), "tasks": int(v["tasks"]), "primaries": int(v["primaries"]),
         "cpu_seconds": v["cpu_seconds"], "wall_seconds": v["wall_seconds"]}
        for k, v in sorted(deltas.items())])


@dataclass(frozen=True)
class UsageRow:
    """One user's usage on one day, for one simulator and platform."""

    day: str
    sim_type: str
    platform: str
    jobs: int
    tasks: int
    primaries: int
    cpu_seconds: float
    wall_seconds: float


async def load_usage(engine: AsyncEngine, owner: str, *, since: date | None = None,
                     until: date | None = None) -> list[UsageRow]:
    """A user's usage rows, by day (oldest first), optionally within ``[since, until]``."""
    stmt = select(usage_daily).where(usage_daily.c.owner == owner)
    if since is not None:
        stmt = stmt.where(usage_daily.c.day >= since.isoformat())
    if until is not None:
        stmt = stmt.where(usage_daily.c.day <= until.isoformat())
    stmt = stmt.order_by(usage_daily.c.day, usage_daily.c.sim_type, usage_daily.c.platform)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [UsageRow(r.day, r.sim_type, r.platform, int(r.jobs), int(r.tasks),
                     int(r.primaries), float(r.cpu_seconds), float(r.wall_seconds))
            for r in rows]


async def load_usage_offsets(conn: AsyncConnection, topic: str) -> dict[int, int]:
    """The last offset counted per partition of ``topic``."""
    rows = await conn.execute(select(usage_offsets.c.partition, usage_offsets.c.offset)
                              .where(usage_offsets.c.topic == topic))
    return {int(p): int(o) for p, o in rows}


def totals(rows: Iterable[UsageRow]) -> dict[str, float]:
    """The sum of every counter over ``rows``."""
    out = dict.fromkeys(COUNTERS, 0.0)
    for row in rows:
        for name in COUNTERS:
            out[name] += getattr(row, name)
    return out
