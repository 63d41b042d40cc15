"""Session-wide real infrastructure: one Kafka broker, one PostgreSQL server.

Kafka starts once per session; each test gets its own topic prefix, so tests
never see each other's events and the broker is never restarted between them.
The read-model tests run on SQLite and, through the ``db_url`` parameter, on
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import kafka_broker, postgres
from services.contract.topics import delete_prefixed_topics, ensure_topics
from services.projector.readmodel import make_engine
from services.settings import KafkaSettings
from tests.support.fault_tally import write_summary

# Consumers re-validate every event (the default; a test session must not inherit a 0).
os.environ["SIMJOBS_VALIDATE_ON_CONSUME"] = "1"

TEST_KAFKA_HOME = Path(os.environ.get("SIMJOBS_TEST_KAFKA_HOME",
                                      Path.home() / ".cache" / "simjobs" / "kafka-test"))
TEST_PG_HOME = Path(os.environ.get("SIMJOBS_TEST_PG_HOME",
                                   Path.home() / ".cache" / "simjobs" / "postgres-test"))


# Every topic prefix this session has handed out; its topics are deleted when it ends.
_SESSION_PREFIXES: set[str] = set()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The session's broker (the project's own test broker, or SIMJOBS_KAFKA_BOOTSTRAP's).

    It is left running at the end: another test session may be using it (stopping it
    would pull the broker from under that session), and the next session starts
    faster. ``make down`` stops it. A broker launched anew starts on empty data, and the
    session deletes its own topics at the end, so sessions never pile partitions up.
    """
    broker = kafka_broker.start(TEST_KAFKA_HOME, jars_home=kafka_broker.default_home(),
                                disposable=True)
    yield broker.bootstrap
    asyncio.run(delete_prefixed_topics(broker.bootstrap, frozenset(_SESSION_PREFIXES)))


def new_prefix() -> str:
    """A topic prefix no other test uses (deleted with its topics when the session ends)."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    _SESSION_PREFIXES.add(prefix)
    return prefix


async def fresh_topics(bootstrap: str, *, tasks_partitions: int = 4,
                       client_id: str = "test") -> KafkaSettings:
    """Settings with topics of their own, created as the services create them."""
    settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=new_prefix(),
                             jobs_partitions=3, tasks_partitions=tasks_partitions,
                             client_id=client_id)
    await ensure_topics(settings)
    return settings


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Settings with this test's own topics."""
    return await fresh_topics(kafka_bootstrap)


@pytest.fixture(scope="session")
def postgres_server() -> postgres.PostgresHandle:
    """The session's PostgreSQL server (installed and started by the project; left running
    for the same reason as the broker, stopped by ``make down``)."""
    return postgres.start(TEST_PG_HOME)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty read-model database on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'readmodel.sqlite3'}"
    server: postgres.PostgresHandle = request.getfixturevalue("postgres_server")
    return postgres.create_database(server, f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault-injection report (tests marked ``faults``), pasted from the end of a run."""
    write_summary(terminalreporter)
