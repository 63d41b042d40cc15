"""Where the projector's batch transactions run: all or nothing, and locked from the start."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import postgres
from services.projector import readmodel as rm
from services.projector.readmodel import make_engine
from services.projector.transactions import Transactions


class Boom(RuntimeError):
    pass


def write_offset(conn: Connection, offset: int) -> None:
    rm.bulk_writers(conn).offsets.write(conn, [("readmodel", "t.jobs", 0, offset)])


async def stored(engine: AsyncEngine) -> dict[int, int]:
    async with engine.connect() as conn:
        return await rm.load_offsets(conn, "readmodel", "t.jobs")


async def test_a_failing_batch_commits_nothing_and_a_good_one_everything(
    engine: AsyncEngine,
) -> None:
    await rm.create_schema(engine)
    transactions = Transactions(engine)

    def fails(conn: Connection) -> None:
        write_offset(conn, 5)
        raise Boom

    try:
        with pytest.raises(Boom):
            await transactions.run(fails)
        assert await stored(engine) == {}
        await transactions.run(lambda conn: write_offset(conn, 7))
        assert await transactions.run(lambda conn: rm.fetch_offsets(
            conn, "readmodel", "t.jobs")) == {0: 7}
    finally:
        await transactions.close()
    assert await stored(engine) == {0: 7}
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(rm.projector_offsets)))
        assert count.scalar_one() == 1


async def test_a_sqlite_batch_holds_the_write_lock_from_its_first_read(tmp_path: Path) -> None:
    """The stored offsets a batch reads first are the ones it commits on top of."""
    db_file = tmp_path / "readmodel.sqlite3"
    engine = make_engine(f"sqlite+aiosqlite:///{db_file}")
    await rm.create_schema(engine)
    transactions = Transactions(engine)
    has_read = threading.Event()
    go_on = threading.Event()

    def reads_then_waits(conn: Connection) -> dict[int, int]:
        seen = rm.fetch_offsets(conn, "readmodel", "t.jobs")
        has_read.set()
        go_on.wait(30)
        write_offset(conn, 1)
        return seen

    batch = asyncio.ensure_future(transactions.run(reads_then_waits))
    try:
        assert await asyncio.to_thread(has_read.wait, 30)
        other = sqlite3.connect(db_file, timeout=0.2)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("INSERT INTO projector_offsets VALUES ('readmodel', 't.jobs', 0, 9)")
        finally:
            other.close()
        go_on.set()
        assert await batch == {}
    finally:
        go_on.set()
        await asyncio.gather(batch, return_exceptions=True)
        await transactions.close()
    try:
        assert await stored(engine) == {0: 1}
    finally:
        await engine.dispose()


def test_only_errors_of_a_server_that_went_away_are_transient() -> None:
    """The projector retries these (and the API answers 503); anything else still fails."""
    from asyncpg.exceptions import CannotConnectNowError, UniqueViolationError
    from sqlalchemy.exc import IntegrityError, OperationalError

    from services.projector.transactions import transient

    assert transient(CannotConnectNowError("the database system is shutting down"))
    assert transient(ConnectionRefusedError(111, "Connect call failed"))
    assert transient(OperationalError("SELECT 1", {}, Exception("gone")))
    assert not transient(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not transient(UniqueViolationError("duplicate key"))
    assert not transient(FileNotFoundError("artifact"))
    assert not transient(ValueError("bad event"))


@pytest.fixture
def pg_url(postgres_server: postgres.PostgresHandle) -> str:
    """A fresh database on the session's PostgreSQL (this test is about PostgreSQL only)."""
    return postgres.create_database(postgres_server, f"t_{uuid.uuid4().hex[:16]}")


@pytest.mark.postgres
async def test_a_postgresql_batch_commits_asynchronously_and_nothing_else_does(
        pg_url: str) -> None:
    """The batch's commit skips the WAL fsync (it is replayed from Kafka if lost); the
    setting is LOCAL to the batch, so other work on the same pooled connection keeps the
    server's durable default."""
    engine = make_engine(pg_url)
    try:
        transactions = Transactions(engine)
        inside = await transactions.run(
            lambda conn: conn.exec_driver_sql("SHOW synchronous_commit").scalar())
        assert inside == "off"
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.current_setting("synchronous_commit"))) == "on"
    finally:
        await engine.dispose()
