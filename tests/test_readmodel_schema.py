"""The read model rebuilds itself when the code's tables change."""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.projector import readmodel as rm


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_tables_of_other_code_are_dropped_once(engine: AsyncEngine) -> None:
    assert await rm.rebuild_if_schema_changed(engine) is False  # nothing there yet
    await rm.create_schema(engine)
    assert await rm.rebuild_if_schema_changed(engine) is False  # ours: kept
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE readmodel_meta SET value = 'older-code'"))
    assert await rm.rebuild_if_schema_changed(engine) is True
    assert "jobs" not in await _tables(engine)
    await rm.create_schema(engine)
    assert await rm.rebuild_if_schema_changed(engine) is False


async def test_unstamped_legacy_tables_are_rebuilt(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE jobs (job_id VARCHAR(128) PRIMARY KEY)"))
    assert await rm.rebuild_if_schema_changed(engine) is True
    await rm.create_schema(engine)
    assert {"jobs", "tasks", "applied_events", "readmodel_meta"} <= await _tables(engine)


async def test_tables_made_by_current_code_elsewhere_are_kept(engine: AsyncEngine) -> None:
    # e.g. the API created them before the projector started: nothing to rebuild.
    await rm.create_schema(engine)
    await rm.create_schema(engine)
    assert await rm.rebuild_if_schema_changed(engine) is False
