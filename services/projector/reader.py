"""Reading job views for request handlers: one thread call per read on SQLite.

Through aiosqlite, :func:`services.projector.readmodel.load_views` is a connection
checkout plus two statements, each a round trip to aiosqlite's thread and back; on the
status route that was ~3 ms of CPU a read, most of the API's time (profile in
``bench/api_bench.py``). Here, on a SQLite file, the whole read (checkout, both
SELECTs, building the views) runs in one call on a worker thread with a pysqlite
connection on the same file, inside one read transaction, so the job row and its task
rows come from the same snapshot. Anything else (PostgreSQL) reads through the async
engine's ``run_sync``, as before.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.projector import readmodel as rm
from services.projector.state import JobView


class ViewReader:
    """Reads stored job views (absent jobs are missing from the result)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # As many pooled connections as the default executor has threads (min(32, CPUs + 4)).
        self._sqlite = rm.sqlite_file_engine(engine, pool_size=min(32, (os.cpu_count() or 1) + 4))

    async def views(self, job_ids: Sequence[str]) -> dict[str, JobView]:
        """The stored views of these jobs."""
        if self._sqlite is None:
            async with self.engine.connect() as conn:
                return await rm.load_views(conn, job_ids)
        return await asyncio.to_thread(self._in_sqlite, list(job_ids))

    def _in_sqlite(self, job_ids: list[str]) -> dict[str, JobView]:
        assert self._sqlite is not None
        with self._sqlite.connect() as conn:
            return _snapshot_read(conn, job_ids)

    def close(self) -> None:
        """Close the pooled SQLite connections (safe to call twice)."""
        if self._sqlite is not None:
            self._sqlite.dispose()


# One job (the status routes): statements built once, with a plain bound parameter, not
# rebuilt and expanded (``IN (...)``) per call; that halved the read's CPU.
_ONE_JOB = select(rm.jobs).where(rm.jobs.c.job_id == bindparam("job_id"))
_ONE_JOB_TASKS = select(rm.tasks).where(rm.tasks.c.job_id == bindparam("job_id"))


def _snapshot_read(conn: Connection, job_ids: list[str]) -> dict[str, JobView]:
    # pysqlite starts no transaction for a SELECT: without BEGIN the two statements
    # could see two different commits of the projector. The connection's return to the
    # pool rolls the read transaction back.
    conn.exec_driver_sql("BEGIN")
    if len(job_ids) != 1:
        return rm.fetch_views(conn, job_ids)
    params: dict[str, Any] = {"job_id": job_ids[0]}
    row = conn.execute(_ONE_JOB, params).first()
    if row is None:
        return {}
    return {row.job_id: rm.view_from_rows(row, conn.execute(_ONE_JOB_TASKS, params).all())}
