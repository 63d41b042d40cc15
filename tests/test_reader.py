"""The handlers' view reader returns exactly the views the projector stored."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.projector import readmodel as rm
from services.projector.reader import ViewReader
from tests.test_readmodel_bulk import views


async def test_reader_reads_back_the_stored_views(engine: AsyncEngine) -> None:
    await rm.create_schema(engine)
    written = views()  # every state, times in several zones, missing values
    async with engine.begin() as conn:
        await conn.execute(rm.upsert(conn, rm.jobs), [rm.job_row(v) for v in written])
        await conn.execute(rm.upsert(conn, rm.tasks),
                           [rm.task_row(v.job_id, t) for v in written for t in v.tasks])
    reader = ViewReader(engine)
    try:
        for view in written:  # one job at a time, as the status routes read
            assert await reader.views([view.job_id]) == {view.job_id: view}
        assert await reader.views(["no-such-job"]) == {}
        everything = await reader.views([v.job_id for v in written] + ["no-such-job"])
        assert everything == {v.job_id: v for v in written}
    finally:
        reader.close()
