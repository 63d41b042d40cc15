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
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.contract.envelope import Event
from services.projector.readmodel import chunks, dialect_insert

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


async def apply_usage(conn: AsyncConnection, topic: str,
                      positioned: Sequence[tuple[int, int, Event | None]]) -> UsageBatch:
    """Count a batch of ``(partition, offset, event or None)`` in one transaction.

    Set-based: the batch's jobs and task keys already counted are read with one query
    each and the new ones written with one statement each, whatever the batch's size (a
    statement per event was most of the worker's CPU at a few hundred events/s). Events
    are still judged in log order, as if one by one: a task end counts only if its job
    was submitted before it, here or in an earlier batch. A concurrent writer of the
    same keys (another worker during a rebalance) makes an insert fail, so the
    transaction rolls back and is retried, and the retry reads what that writer counted.
    """
    events = [e for _, _, e in positioned if e is not None]
    ends = [e for e in events if e.type in TASK_ENDS]
    jobs = await _known_jobs(conn, list(dict.fromkeys(e.job_id for e in events)))
    tasks = await _known_tasks(conn, list(dict.fromkeys(e.job_id for e in ends)))
    batch = UsageBatch()
    new_jobs: list[dict[str, Any]] = []
    new_tasks: list[dict[str, Any]] = []
    for event in events:
        p = event.payload
        if event.type == "JobSubmitted":
            if event.job_id in jobs:
                batch.duplicates += 1
                continue
            attrs = jobs[event.job_id] = (str(p["owner"]), str(p["sim_type"]),
                                          str(p["platform"]))
            new_jobs.append({"job_id": event.job_id, "owner": attrs[0],
                             "sim_type": attrs[1], "platform": attrs[2]})
            batch.add((attrs[0], _day(event), attrs[1], attrs[2]), jobs=1)
            batch.counted += 1
        elif event.type in TASK_ENDS:
            known = jobs.get(event.job_id)
            if known is None:
                batch.orphans += 1
                continue
            key = (event.job_id, int(p["task_index"]))
            if key in tasks:
                batch.duplicates += 1
                continue
            tasks.add(key)
            new_tasks.append({"job_id": key[0], "task_index": key[1],
                              "event_id": event.event_id})
            batch.add((known[0], _day(event), known[1], known[2]), tasks=1,
                      primaries=float(p.get("simulated_primaries", 0)),
                      cpu_seconds=float(p.get("cpu_seconds", 0.0)),
                      wall_seconds=float(p.get("wall_seconds", 0.0)))
            batch.counted += 1
    if new_jobs:
        await conn.execute(insert(usage_jobs), new_jobs)
    if new_tasks:
        await conn.execute(insert(usage_tasks), new_tasks)
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


async def _known_jobs(conn: AsyncConnection,
                      job_ids: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """The counted jobs among ``job_ids``: owner, simulator and platform of each."""
    found: dict[str, tuple[str, str, str]] = {}
    for chunk in chunks(job_ids):
        rows = await conn.execute(select(usage_jobs).where(usage_jobs.c.job_id.in_(chunk)))
        found.update((r.job_id, (r.owner, r.sim_type, r.platform)) for r in rows)
    return found


async def _known_tasks(conn: AsyncConnection, job_ids: Sequence[str]) -> set[tuple[str, int]]:
    """The counted ``(job_id, task_index)`` of these jobs."""
    found: set[tuple[str, int]] = set()
    for chunk in chunks(job_ids):
        rows = await conn.execute(select(usage_tasks.c.job_id, usage_tasks.c.task_index)
                                  .where(usage_tasks.c.job_id.in_(chunk)))
        found.update((r.job_id, int(r.task_index)) for r in rows)
    return found


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
