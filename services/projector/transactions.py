"""Where a projector batch's transaction runs.

The batch is one blocking function of a SQLAlchemy ``Connection`` (read the stored
offsets and applied ids, fold, write the rows and the offsets), written once for every
backend:

* SQLite (a file): the whole function runs in one call on the projector's own writer
  thread, with a pysqlite connection on the same file. Through aiosqlite every
  statement was a round trip to its thread and back, nine per batch; on a busy machine
  those hops were most of a small batch's time (median 6 ms against 0.35 ms for one
  call, at load 8). The transaction starts with ``BEGIN IMMEDIATE``, so the offsets it
  reads first are those it commits on top of (pysqlite's implicit BEGIN would start it
  only at the first write).
* anything else (PostgreSQL): ``AsyncConnection.run_sync``, the same function on the
  async driver (asyncpg), statement by statement, with ``synchronous_commit = off``
  for the batch's transaction only. Its commit is visible at once; only its flush to
  disk is deferred (by at most three WAL-writer rounds). A server crash in that window
  loses the last batches together with the offsets stored in them (the database stays
  consistent), so the projector reads them again from Kafka: the same bargain as
  SQLite's ``synchronous=NORMAL``. It removes a WAL fsync from every batch: at 500
  events/s there are ~100 batches a second, whose fsyncs also held up the broker's
  writes on the shared disk.

SQLite does its part without the GIL, so the event loop keeps fetching and decoding the
next batch meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from asyncpg.exceptions import OperatorInterventionError, PostgresConnectionError
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.projector import readmodel as rm

T = TypeVar("T")


#: Backoff between attempts of a batch while the database is unreachable (seconds).
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


def transient(exc: BaseException) -> bool:
    """Whether a failed transaction may succeed if tried again: the server went away.

    A restarting PostgreSQL refuses connections (``ConnectionError``), answers "the database
    system is shutting down" (an ``OperationalError``), or drops the connection in use
    (``connection_invalidated``); asyncpg raises its own connection and "operator
    intervention" errors (class 08 and 57: admin shutdown, cannot connect now) unwrapped
    when the pool connects. A retry is safe because a batch is one transaction
    that stores its offsets: a batch that did commit before the error is skipped by
    the offsets the retry reads. Anything else (a constraint, a bug) is not retried.
    """
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError
                  | PostgresConnectionError | OperatorInterventionError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class Transactions:
    """Runs functions of a connection, each in one transaction of the read model."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite = rm.sqlite_file_engine(engine)
        self._thread: ThreadPoolExecutor | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in a transaction that commits if it returns, else rolls back.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed (nothing is committed).
        """
        if self._sqlite is None:
            async with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                return await conn.run_sync(work)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="readmodel-writer")
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._in_sqlite, work)

    def _in_sqlite(self, work: Callable[[Connection], T]) -> T:
        assert self._sqlite is not None
        with self._sqlite.begin() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return work(conn)

    async def close(self) -> None:
        """Let the writer thread end and close its connection (safe to call twice)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.shutdown, wait=True)
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.dispose)
