"""The projector's bulk writes store exactly what SQLAlchemy Core would store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, Dialect, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.contract.jobs import JobState
from services.projector import readmodel as rm
from services.projector.state import JobView, fold
from services.projector.transactions import Transactions
from tests.support.histories import synthetic_log

# The drivers the read model runs on (engines are made, never connected).
DIALECTS: dict[str, Dialect] = {
    "sqlite": create_async_engine("sqlite+aiosqlite://").dialect,
    "postgresql": create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none").dialect,
}
MOMENTS = [
    datetime(2026, 11, 1, tzinfo=UTC),
    datetime(2026, 11, 1, 12, 30, 5, 7, tzinfo=UTC),
    datetime(2026, 11, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
    datetime(999, 1, 2, 3, 4, 5, 600000, tzinfo=timezone(timedelta(hours=2, minutes=30))),
]


def views() -> list[JobView]:
    """Views in every state, with times in several zones and missing values."""
    found = list(fold(synthetic_log(seed=4, jobs=25)).values())
    for i, at in enumerate(MOMENTS):
        base = found[i]
        found.append(replace(base, job_id=f"{base.job_id}-{i}", submitted_at=at, end_time=at,
                             tasks=tuple(replace(t, start_time=at, end_time=None)
                                         for t in base.tasks)))
    return found


def core_values(table: Any, row: dict[str, Any], dialect: Dialect) -> tuple[Any, ...]:
    """What SQLAlchemy Core binds for a row: each column type's own processor."""
    values = []
    for column in table.columns:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        value = row[column.name]
        values.append(process(value) if process is not None else value)
    return tuple(values)


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_prepared_rows_are_what_core_binds(name: str) -> None:
    dialect = DIALECTS[name]

    class Conn:  # bulk_writers only asks the connection for its dialect
        pass

    conn: Any = Conn()
    conn.dialect = dialect
    writers = rm.bulk_writers(conn)
    for view in views():
        assert writers.job_values(view) == core_values(rm.jobs, rm.job_row(view), dialect)
        for task in view.tasks:
            assert writers.task_values(view.job_id, task) == core_values(
                rm.tasks, rm.task_row(view.job_id, task), dialect)
    for at in MOMENTS:
        row = {"event_id": "e", "job_id": "j", "type": "TaskProgress", "topic": "t",
               "partition": 2, "offset": 7, "occurred_at": at}
        prepared = writers.applied_events.prepare(tuple(row.values()))
        assert prepared == core_values(rm.applied_events, row, dialect)


async def raw_rows(conn: AsyncConnection, table: str) -> list[tuple[Any, ...]]:
    """The stored values as the driver returns them (no SQLAlchemy type processing)."""
    keys = "job_id, task_index" if table == "tasks" else "job_id"
    result = await conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {keys}")
    return [tuple(r) for r in result]


async def test_bulk_rows_equal_core_rows_and_read_back_as_the_views(
    engine: AsyncEngine,
) -> None:
    await rm.create_schema(engine)
    written = views()
    async with engine.begin() as conn:
        await conn.execute(rm.upsert(conn, rm.jobs), [rm.job_row(v) for v in written])
        await conn.execute(rm.upsert(conn, rm.tasks),
                           [rm.task_row(v.job_id, t) for v in written for t in v.tasks])
    async with engine.connect() as conn:
        by_core = {t: await raw_rows(conn, t) for t in ("jobs", "tasks")}
    async with engine.begin() as conn:
        await conn.execute(delete(rm.tasks))
        await conn.execute(delete(rm.jobs))

    def write(conn: Connection) -> None:
        writers = rm.bulk_writers(conn)
        # Written twice: the second time as an update of every row (the upsert's other path).
        for state in (JobState.PENDING, None):
            batch = [v if state is None else replace(v, state=state) for v in written]
            writers.jobs.write(conn, [writers.job_values(v) for v in batch])
            writers.tasks.write(conn, [writers.task_values(v.job_id, t)
                                       for v in batch for t in v.tasks])

    transactions = Transactions(engine)  # the projector's way: SQLite on its writer thread
    try:
        await transactions.run(write)
    finally:
        await transactions.close()
    async with engine.connect() as conn:
        assert {t: await raw_rows(conn, t) for t in ("jobs", "tasks")} == by_core
        loaded = await rm.load_views(conn, [v.job_id for v in written])
        assert loaded == {v.job_id: v for v in written}


async def test_known_event_ids_finds_exactly_the_applied_ones(engine: AsyncEngine) -> None:
    await rm.create_schema(engine)
    applied = [f"e{n}" for n in range(1200)]  # more than one chunk of 500 on SQLite
    def write(conn: Connection) -> None:
        writers = rm.bulk_writers(conn)
        writers.applied_events.write(conn, [
            writers.applied_events.prepare((e, "j", "TaskProgress", "t", 0, n, MOMENTS[0]))
            for n, e in enumerate(applied)])

    async with engine.begin() as conn:
        await conn.run_sync(write)
    asked = [*applied[::7], "never", "e1200", *applied[-3:]]
    async with engine.connect() as conn:
        known = await rm.known_event_ids(conn, asked)
        assert known == {*applied[::7], *applied[-3:]}
        assert await rm.known_event_ids(conn, []) == set()
        stored = (await conn.execute(select(rm.applied_events.c.occurred_at))).scalars().all()
        assert set(stored) == {MOMENTS[0]}
