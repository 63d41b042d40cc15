"""Real-process tests of devstack: a Kafka broker and a PostgreSQL server in temporary homes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devstack import kafka_broker, postgres, process_alive
from services.contract.topics import delete_prefixed_topics, topic_specs
from tests.conftest import fresh_topics


def _gone(pid: int | None) -> bool:
    assert pid is not None
    return not process_alive(pid)  # an exited, not yet reaped process (zombie) counts as gone


# --- Kafka -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.environ.get(kafka_broker.ENV_BOOTSTRAP):
        pytest.skip("SIMJOBS_KAFKA_BOOTSTRAP points at an external cluster")
    home = tmp_path_factory.mktemp("kafka-home")
    yield home
    kafka_broker.stop(home)


def _start_broker(home: Path) -> kafka_broker.BrokerHandle:
    # Reuse the developer's jar cache instead of copying ~45 jars into every temporary home.
    return kafka_broker.start(home, jars_home=kafka_broker.default_home())


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def _wait_for_topic(bootstrap: str, topic: str, timeout: float = 15.0) -> list[str]:
    # A new topic reaches the broker's metadata cache shortly after the controller commits it.
    deadline = time.monotonic() + timeout
    topics = asyncio.run(_list_topics(bootstrap))
    while topic not in topics and time.monotonic() < deadline:
        time.sleep(0.2)
        topics = asyncio.run(_list_topics(bootstrap))
    return topics


@pytest.mark.kafka
def test_broker_start_is_idempotent_even_when_racing(kafka_home: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        racing = [pool.submit(_start_broker, kafka_home) for _ in range(2)]
        first, second = (future.result() for future in racing)
    third = _start_broker(kafka_home)

    assert first == second == third
    assert first.pid is not None and not first.external
    assert first.bootstrap.startswith("127.0.0.1:")
    asyncio.run(_create_topic(first.bootstrap, "devstack-smoke"))
    assert "devstack-smoke" in _wait_for_topic(first.bootstrap, "devstack-smoke")
    assert first.log_file is not None
    assert kafka_broker.STARTED_LINE in first.log_file.read_text()
    assert kafka_broker.status(kafka_home) == first


@pytest.mark.kafka
def test_broker_stop_then_restart_keeps_topics(kafka_home: Path) -> None:
    before = _start_broker(kafka_home)
    asyncio.run(_create_topic(before.bootstrap, "devstack-kept"))
    assert "devstack-kept" in _wait_for_topic(before.bootstrap, "devstack-kept")

    assert kafka_broker.stop(kafka_home) is True
    assert _gone(before.pid)
    assert kafka_broker.stop(kafka_home) is False
    assert kafka_broker.status(kafka_home) is None

    after = _start_broker(kafka_home)
    assert after.pid != before.pid
    assert "devstack-kept" in _wait_for_topic(after.bootstrap, "devstack-kept")


@pytest.mark.kafka
def test_disposable_broker_reuses_a_running_one_but_launches_on_empty_data(
    kafka_home: Path,
) -> None:
    running = _start_broker(kafka_home)
    asyncio.run(_create_topic(running.bootstrap, "devstack-left-over"))
    assert "devstack-left-over" in _wait_for_topic(running.bootstrap, "devstack-left-over")
    reused = kafka_broker.start(kafka_home, jars_home=kafka_broker.default_home(),
                                disposable=True)
    assert reused == running
    assert "devstack-left-over" in asyncio.run(_list_topics(reused.bootstrap))

    assert kafka_broker.stop(kafka_home) is True
    fresh = kafka_broker.start(kafka_home, jars_home=kafka_broker.default_home(),
                               disposable=True)
    assert fresh.pid != running.pid
    asyncio.run(_create_topic(fresh.bootstrap, "devstack-marker"))
    topics = _wait_for_topic(fresh.bootstrap, "devstack-marker")
    assert "devstack-left-over" not in topics


@pytest.mark.kafka
def test_a_session_deletes_its_own_topics_and_no_other(kafka_bootstrap: str) -> None:
    ours = asyncio.run(fresh_topics(kafka_bootstrap))
    theirs = asyncio.run(fresh_topics(kafka_bootstrap))
    deleted = asyncio.run(delete_prefixed_topics(kafka_bootstrap,
                                                frozenset({ours.topic_prefix})))
    assert deleted == len(topic_specs(ours))
    deadline = time.monotonic() + 15.0
    topics = asyncio.run(_list_topics(kafka_bootstrap))
    while ours.jobs_topic in topics and time.monotonic() < deadline:
        time.sleep(0.2)
        topics = asyncio.run(_list_topics(kafka_bootstrap))
    assert ours.jobs_topic not in topics and ours.tasks_topic not in topics
    assert theirs.jobs_topic in topics and theirs.tasks_topic in topics


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.environ.get(postgres.ENV_URL):
        pytest.skip("SIMJOBS_PG_URL points at an external server")
    home = tmp_path_factory.mktemp("pg-home")
    yield home
    postgres.stop(home)


async def _select_one_and_fsync(url: str) -> tuple[int, str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            one = (await conn.execute(text("SELECT 1"))).scalar_one()
            fsync = (await conn.execute(text("SHOW fsync"))).scalar_one()
    finally:
        await engine.dispose()
    return int(one), str(fsync)


@pytest.mark.postgres
def test_postgres_lifecycle(pg_home: Path) -> None:
    first = postgres.start(pg_home)
    second = postgres.start(pg_home)
    assert first == second
    assert first.pid is not None and not first.external
    assert first.url.startswith("postgresql+asyncpg://simjobs@127.0.0.1:")

    url = postgres.create_database(first, "devstack_test")
    assert postgres.create_database(first, "devstack_test") == url
    assert url.endswith(f":{first.port}/devstack_test")
    assert asyncio.run(_select_one_and_fsync(url)) == (1, "on")

    assert postgres.stop(pg_home) is True
    assert _gone(first.pid)
    assert postgres.stop(pg_home) is False
    assert postgres.status(pg_home) is None
