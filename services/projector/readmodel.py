"""The SQL read model: tables, and loading/saving job views.

SQLAlchemy Core (not the ORM): the projector writes thousands of rows per
transaction and the API reads them back as plain rows; an identity map
would only cost time. SQLite (WAL) is the embedded default; PostgreSQL
works by URL. Times are stored as naive UTC and come back timezone-aware.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

from services.contract.jobs import JobState
from services.projector.state import SUBMISSION_FIELDS, JobView, TaskView


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("title", Text, nullable=False),
    Column("sim_type", String(32), nullable=False),
    Column("platform", String(16), nullable=False),
    Column("input_type", String(16), nullable=False),
    Column("ntasks", Integer, nullable=False),
    Column("number_of_all_primaries", BigInteger, nullable=False),
    Column("base_seed", BigInteger, nullable=False),
    Column("input_ref", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("submitted_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("end_time", UTCDateTime),
    Column("result_ref", String(64)),
    Column("result_partial", Boolean, nullable=False),
    Column("failure_reason", Text),
    Column("log_ref", String(64)),
    Column("cluster_name", String(255)),
    Column("array_job_id", String(32)),
    Column("collect_job_id", String(32)),
    Column("job_dir", Text),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("event_count", Integer, nullable=False),
    Index("ix_jobs_owner_submitted", "owner", "submitted_at"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("task_index", Integer, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("requested_primaries", BigInteger, nullable=False),
    Column("simulated_primaries", BigInteger, nullable=False),
    Column("estimated_time", Integer),
    Column("seed", BigInteger),
    Column("start_time", UTCDateTime),
    Column("end_time", UTCDateTime),
    Column("last_update_time", UTCDateTime),
    Column("result_ref", String(64)),
    Column("log_ref", String(64)),
    Column("failure_reason", Text),
    Column("exit_status", Integer),
    Column("platform_state", String(32)),
    Column("platform_exit_code", Integer),
    # SQLite: the rows live in the primary key's B-tree (no second one to update).
    sqlite_with_rowid=False,
)

#: Every event the projector applied, by id: how a re-emitted event is recognised.
applied_events = Table(
    "applied_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("job_id", String(128), nullable=False),
    Column("type", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    # No index on job_id: nothing reads by it, and a second random-key index on the
    # table written once per event was a quarter of SQLite's time in a replay.
)

#: The last offset applied per (projection, topic, partition): written with the rows.
projector_offsets = Table(
    "projector_offsets",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
)

#: Records skipped (unknown type, malformed, duplicate), counted by reason.
projector_skips = Table(
    "projector_skips",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("reason", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

#: The read model's schema fingerprint: when the code's tables change, the projector
#: drops its tables and replays the log (a projection is always rebuildable).
readmodel_meta = Table(
    "readmodel_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


def schema_fingerprint() -> str:
    """A hash of every projection table's columns and types."""
    parts = sorted(f"{table.name}.{column.name}:{column.type!r}:{column.nullable}"
                   for table in metadata.sorted_tables for column in table.columns)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


#: Upper bound of SQLite's page cache per connection (allocated as pages are read).
SQLITE_CACHE_KIB = 64 * 1024

JOB_COLUMNS = [c.name for c in jobs.columns]
TASK_COLUMNS = [c.name for c in tasks.columns]


def make_engine(url: str) -> AsyncEngine:
    """An engine for the read model; SQLite gets WAL and a busy timeout.

    WAL lets the API read while the projector writes; ``synchronous=NORMAL``
    is durable across process crashes in WAL mode (only an OS crash can lose
    the last transactions, which a rebuild from the log restores). The page
    cache may grow to 64 MiB per connection (SQLite's default is 2 MiB): a
    projector batch touches pages all over the jobs, tasks and applied-ids
    B-trees, and rereading them from the OS was a fifth of its SQLite time.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def sqlite_file_engine(engine: AsyncEngine, pool_size: int = 5) -> Engine | None:
    """A blocking (pysqlite) engine on the same SQLite file as ``engine``, with its pragmas.

    None when ``engine`` is not SQLite on a file (an in-memory database is private to
    its connection, so a second engine would see another database). ``pool_size``: the
    connections kept open; one more thread than that at once opens (and sets up) a new
    connection for each use.
    """
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    sync = create_engine(url.set(drivername="sqlite+pysqlite"),
                         connect_args={"timeout": 30, "check_same_thread": False},
                         pool_size=pool_size)
    event.listen(sync, "connect", _sqlite_pragmas)
    return sync


async def rebuild_if_schema_changed(engine: AsyncEngine) -> bool:
    """Drop the projection's tables when they were made by other code; True if dropped.

    Only the projector calls this (it owns these tables): it then creates them
    afresh and, having no stored offsets, replays the log from offset 0.
    """
    async with engine.begin() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        if "jobs" not in names:
            return False
        stored = None
        if "readmodel_meta" in names:
            stored = (await conn.execute(select(readmodel_meta.c.value).where(
                readmodel_meta.c.key == "schema"))).scalar_one_or_none()
        if stored == schema_fingerprint():
            return False
        await conn.run_sync(metadata.drop_all)
    return True


async def create_schema(engine: AsyncEngine, schema: MetaData | None = None) -> None:
    """Create the tables that do not exist yet.

    Tables created here are stamped with this code's fingerprint; tables found
    already there are left as they are, for the projector to judge
    (:func:`rebuild_if_schema_changed`).

    Retried a few times: the API and the projector start together and may both
    create the same tables, and the loser of that race gets "already exists".

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database keeps failing.
    """
    for attempt in range(5):
        try:
            async with engine.begin() as conn:
                fresh = schema is None and "jobs" not in await conn.run_sync(
                    lambda c: inspect(c).get_table_names())
                await conn.run_sync((schema or metadata).create_all)
                if fresh:  # made by this code just now: vouch for the tables
                    await conn.execute(upsert(conn, readmodel_meta),
                                       [{"key": "schema", "value": schema_fingerprint()}])
            return
        except SQLAlchemyError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


def _dialect_insert(dialect_name: str, table: Table) -> Any:
    return (pg_insert if dialect_name == "postgresql" else sqlite_insert)(table)


def dialect_insert(conn: Connection | AsyncConnection, table: Table) -> Any:
    """The dialect's own INSERT (PostgreSQL or SQLite), which knows ``ON CONFLICT``."""
    return _dialect_insert(conn.dialect.name, table)


def _upsert(dialect_name: str, table: Table, keep: Iterable[str] = ()) -> Insert:
    """The upsert; the columns in ``keep`` keep their stored value on conflict."""
    fixed = {*(c.name for c in table.primary_key.columns), *keep}
    keys = [c.name for c in table.primary_key.columns]
    stmt = _dialect_insert(dialect_name, table)
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in fixed}
    result: Insert = stmt.on_conflict_do_update(index_elements=keys, set_=updates)
    return result


def upsert(conn: Connection | AsyncConnection, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT (primary key) DO UPDATE`` for the connection's dialect."""
    return _upsert(conn.dialect.name, table)


def job_row(view: JobView) -> dict[str, Any]:
    """A job view as a ``jobs`` row."""
    return {name: getattr(view, name) for name in JOB_COLUMNS}


def task_row(job_id: str, task: TaskView) -> dict[str, Any]:
    """A task view as a ``tasks`` row."""
    row = {name: getattr(task, name) for name in TASK_COLUMNS if name != "job_id"}
    row["job_id"] = job_id
    return row


def view_from_rows(job: Any, task_rows: Sequence[Any]) -> JobView:
    """Rebuild a view from its rows (the inverse of :func:`job_row`/:func:`task_row`)."""
    mapping = dict(job._mapping)
    mapping["state"] = JobState(mapping["state"])
    ordered = sorted(task_rows, key=lambda r: r.task_index)
    mapping["tasks"] = tuple(
        TaskView(**{**{k: v for k, v in r._mapping.items() if k != "job_id"},
                    "state": JobState(r.state)})
        for r in ordered
    )
    return JobView(**mapping)


def chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    """Slices of at most ``size`` ids: an ``IN (...)`` list stays under the bind limits."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def fetch_views(conn: Connection, job_ids: Sequence[str]) -> dict[str, JobView]:
    """The stored views of some jobs (absent ones are missing from the result).

    Blocking: for code that runs inside a transaction on a sync connection (the
    projector's batch); :func:`load_views` is the same for async callers.
    """
    found: dict[str, JobView] = {}
    for chunk in chunks(list(job_ids)):
        job_rows = conn.execute(select(jobs).where(jobs.c.job_id.in_(chunk))).all()
        if not job_rows:
            continue
        task_rows = conn.execute(select(tasks).where(tasks.c.job_id.in_(chunk))).all()
        by_job: dict[str, list[Any]] = {}
        for row in task_rows:
            by_job.setdefault(row.job_id, []).append(row)
        for row in job_rows:
            found[row.job_id] = view_from_rows(row, by_job.get(row.job_id, []))
    return found


async def load_views(conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, JobView]:
    """The stored views of some jobs (absent ones are missing from the result)."""
    return await conn.run_sync(fetch_views, job_ids)


async def load_all_views(conn: AsyncConnection) -> dict[str, JobView]:
    """Every stored view (for verify and tests)."""
    job_rows = (await conn.execute(select(jobs))).all()
    by_job: dict[str, list[Any]] = {}
    for row in (await conn.execute(select(tasks))).all():
        by_job.setdefault(row.job_id, []).append(row)
    return {r.job_id: view_from_rows(r, by_job.get(r.job_id, [])) for r in job_rows}


async def known_event_ids(conn: AsyncConnection, event_ids: Sequence[str]) -> set[str]:
    """Which of these events were already applied."""
    return await conn.run_sync(lambda c: bulk_writers(c).known_event_ids(c, event_ids))


def fetch_offsets(conn: Connection, projection: str, topic: str) -> dict[int, int]:
    """The last applied offset of each partition of a topic (blocking: see fetch_views)."""
    rows = conn.execute(
        select(projector_offsets.c.partition, projector_offsets.c.offset).where(
            projector_offsets.c.projection == projection, projector_offsets.c.topic == topic
        )
    )
    return {int(p): int(o) for p, o in rows}


async def load_offsets(conn: AsyncConnection, projection: str, topic: str) -> dict[int, int]:
    """The last applied offset of each partition of a topic."""
    return await conn.run_sync(fetch_offsets, projection, topic)


async def load_skips(conn: AsyncConnection, projection: str) -> dict[str, int]:
    """How many records were skipped, by reason."""
    rows = await conn.execute(
        select(projector_skips.c.reason, projector_skips.c.count).where(
            projector_skips.c.projection == projection
        )
    )
    return {str(r): int(c) for r, c in rows}


# --- bulk writes for the projector -----------------------------------------------------------

Processor = Callable[[Any], Any]


#: SQLite's text of a datetime, by datetime: one event's time lands in its applied row,
#: its job's updated_at and its task's times, and a job's submission time in every row of
#: that job (four conversions in five are repeats). Equal instants have equal texts, so
#: the key may be any aware datetime. Emptied when full (what it holds is cheap to remake).
_SQLITE_TEXTS: dict[datetime, str] = {}
_SQLITE_TEXTS_MAX = 1 << 16


def _sqlite_datetime(value: datetime | None, _known: Callable[[datetime], str | None]
                     = _SQLITE_TEXTS.get) -> str | None:
    """What SQLAlchemy stores for a :class:`UTCDateTime` in SQLite, at C speed.

    A plain dict, not ``lru_cache``: called four times an event, the second function call
    and the LRU bookkeeping were a third of the conversion's time.
    """
    if value is None:
        return None
    text = _known(value)
    if text is None:
        if len(_SQLITE_TEXTS) >= _SQLITE_TEXTS_MAX:
            _SQLITE_TEXTS.clear()
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        # Event times already are UTC: no conversion for them; stored without "+00:00".
        text = _SQLITE_TEXTS[value] = utc.isoformat(" ", "microseconds")[:26]
    return text


def _naive_utc(value: datetime | None) -> datetime | None:
    """What SQLAlchemy hands asyncpg for a :class:`UTCDateTime`."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


#: Faster equivalents of SQLAlchemy's own bind processing, by dialect and column type (a
#: test checks they store the same values); other columns use SQLAlchemy's. None: the
#: driver takes the Python value as it is.
_FAST: dict[tuple[str, type[Any]], Processor | None] = {
    ("sqlite", UTCDateTime): _sqlite_datetime,
    ("postgresql", UTCDateTime): _naive_utc,
    ("sqlite", Boolean): None,  # sqlite3 stores a bool as the integer 0 or 1, as Core does
}


def bind_processors(table: Table, dialect: Dialect) -> list[Processor | None]:
    """Per column of ``table``, the function that makes a Python value a driver value."""
    found: list[Processor | None] = []
    for column in table.columns:
        key = (dialect.name, type(column.type))
        if key in _FAST:
            found.append(_FAST[key])
        else:
            # What Core itself runs: the type adapted to the dialect, then its processor.
            found.append(column.type.dialect_impl(dialect).bind_processor(dialect))
    return found


@dataclass(frozen=True)
class TableWriter:
    """Many rows of one table in one ``executemany``, values made ready for the driver once.

    SQLAlchemy's per-row parameter processing was half of the projector's time. The SQL
    here is still compiled by SQLAlchemy (once per dialect: the same SQL Core would run),
    but rows reach the driver as tuples, through ``exec_driver_sql``.
    """

    table: Table
    sql: str
    processors: tuple[tuple[int, Processor], ...]

    def prepare(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """A row (values in column order) as the driver takes it."""
        if not self.processors:
            return tuple(values)
        row = list(values)
        for i, process in self.processors:
            row[i] = process(row[i])
        return tuple(row)

    def write(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Write prepared rows (nothing to do for none)."""
        if rows:
            conn.exec_driver_sql(self.sql, list(rows))


def _writer(table: Table, stmt: Insert, dialect: Dialect) -> TableWriter:
    compiled = stmt.compile(dialect=dialect)
    names = [c.name for c in table.columns]
    if list(compiled.positiontup or ()) != names:
        raise RuntimeError(f"{table.name}: bulk writes need a positional dialect "
                           f"binding every column in order, not {dialect.name}")
    processors = tuple((i, p) for i, p in enumerate(bind_processors(table, dialect))
                       if p is not None)
    return TableWriter(table, compiled.string, processors)


@dataclass(frozen=True)
class BulkWriters:
    """The projector's writers for one dialect: one statement per table per batch."""

    jobs: TableWriter
    tasks: TableWriter
    applied_events: TableWriter
    offsets: TableWriter
    dialect_name: str

    def job_values(self, view: JobView) -> tuple[Any, ...]:
        """A job view as a prepared ``jobs`` row (what :func:`job_row` holds)."""
        return self.jobs.prepare(_job_getter(view))

    def task_values(self, job_id: str, task: TaskView) -> tuple[Any, ...]:
        """A task view as a prepared ``tasks`` row (what :func:`task_row` holds)."""
        return self.tasks.prepare((job_id, *_task_getter(task)))

    def known_event_ids(self, conn: Connection, event_ids: Sequence[str]) -> set[str]:
        """Which of these events were already applied (one indexed probe per id)."""
        if not event_ids:
            return set()
        if self.dialect_name == "postgresql":
            result = conn.exec_driver_sql(
                "SELECT event_id FROM applied_events WHERE event_id = ANY($1::VARCHAR[])",
                (list(event_ids),))
            return {r[0] for r in result}
        known: set[str] = set()
        for chunk in chunks(list(event_ids)):
            marks = ",".join("?" * len(chunk))
            result = conn.exec_driver_sql(
                f"SELECT event_id FROM applied_events WHERE event_id IN ({marks})",
                tuple(chunk))
            known.update(r[0] for r in result)
        return known


_job_getter = attrgetter(*JOB_COLUMNS)
_task_getter = attrgetter(*[c for c in TASK_COLUMNS if c != "job_id"])


_BULK_WRITERS: dict[tuple[str, str, str], BulkWriters] = {}


def bulk_writers(conn: Connection | AsyncConnection) -> BulkWriters:
    """The bulk writers for the connection's dialect (compiled once per dialect).

    Raises:
        RuntimeError: the dialect is not positional (SQLite and asyncpg both are).
    """
    dialect = conn.dialect
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    found = _BULK_WRITERS.get(key)
    if found is None:
        name = dialect.name
        found = _BULK_WRITERS[key] = BulkWriters(
            # Not in the UPDATE: what no event changes after JobSubmitted (so SQLite
            # leaves the (owner, submitted_at) index alone on every job update).
            jobs=_writer(jobs, _upsert(name, jobs, keep=SUBMISSION_FIELDS), dialect),
            tasks=_writer(tasks, _upsert(name, tasks), dialect),
            applied_events=_writer(applied_events, _dialect_insert(name, applied_events),
                                   dialect),
            offsets=_writer(projector_offsets, _upsert(name, projector_offsets), dialect),
            dialect_name=name,
        )
    return found
