"""Usage accounting: a faust-streaming worker that counts job events into the read model.

``python -m services.projector.usage`` runs it; ``make up`` starts it beside the
projector. It is its own process (not an agent inside the projector) on purpose: faust
runs its own worker life cycle and a consumer thread, and a crash there (its known risk,
rebalances) must not stop the read model; as its own consumer group it also progresses
independently of the projector, and can be killed and restarted alone.

How it is made safe (reference: ``kafka.md`` §4.3, §6):

* one agent with ``concurrency=1`` (faust issue #606: with more, it can commit past an
  event still being processed);
* at-least-once, the default: an event is acked only after the batch it is in has been
  committed to the database, and faust commits acked offsets every
  ``broker_commit_interval``; a crash redelivers what was not committed;
* the effect is idempotent (:mod:`services.projector.usage_model`): counted by natural
  keys in the same transaction as the counters, so a redelivered event counts once;
* a database error is retried (with back-off) inside the agent, never raised: raising
  would ack the batch (faust acks a ``take`` batch when its body ends, even by an
  exception) and so lose it;
* faust's web server is off (``web_enabled=False``); the process serves ``/metrics``,
  ``/healthz`` and ``/readyz`` on its own ops port like every service;
* no faust tables (state is in SQL), so no changelog topics; no leader topic.

Versions are pinned (faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as faust_aiokafka
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder
from services.contract.topics import ensure_topics
from services.ops.health import Health, database_check, kafka_check
from services.ops.http import OpsServer
from services.ops.lag import LagSampler, stored_lag
from services.ops.logs import setup_logging
from services.ops.metrics import USAGE_APPLIED, USAGE_DUPLICATES
from services.projector.__main__ import CONNECT_TIMEOUT_S, make_sqlite_dir
from services.projector.readmodel import create_schema, make_engine
from services.projector.usage_model import (
    TASK_ENDS,
    UsageBatch,
    apply_usage,
    load_usage_offsets,
    usage_metadata,
)
from services.settings import (
    CONSUMER_MAX_PARTITION_FETCH_BYTES,
    KafkaSettings,
    OpsSettings,
    Settings,
    UsageSettings,
    load_ops_settings,
    load_settings,
    load_usage_settings,
)

log = logging.getLogger(__name__)

#: How long a batch may wait to fill (its size is ``UsageSettings.batch``).
BATCH_SECONDS = 0.5
#: A fetch returns once this much is there, or after FETCH_MAX_WAIT_MS (see
#: :class:`BatchingConsumerThread`).
FETCH_MIN_BYTES = 256 * 1024
FETCH_MAX_WAIT_MS = 500
RELEVANT = frozenset({"JobSubmitted", *TASK_ENDS})


class BatchingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, whose fetches wait for a batch's worth of records.

    faust asks for ``fetch_min_bytes=1``: under a steady flow of submissions every fetch
    returns the few records that arrived since the last one, and each fetch pays faust's
    hand-over from its consumer thread to the agent's loop, and the broker its request.
    That was most of this worker's CPU (0.3 ms an event at 1,000 jobs/s, as much as the
    projector), taken from the API on the same cores. Counting usage may lag by half a
    second; nobody waits on it.
    """

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport
                                ) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads these when the consumer starts (it builds its fetcher then);
        # faust passes no way to set them.
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class BatchingConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, on a :class:`BatchingConsumerThread`."""

    def _new_consumer_thread(self) -> BatchingConsumerThread:
        return BatchingConsumerThread(self, loop=self.loop, beacon=self.beacon)


class BatchingTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport, with a :class:`BatchingConsumer`."""

    Consumer = BatchingConsumer


class UsageApp(faust.App):
    """A faust application whose consumer is :class:`BatchingConsumerThread`'s."""

    def _new_transport(self) -> BatchingTransport:
        return BatchingTransport(self.conf.broker_consumer, self)


class UsageCounter:
    """Decodes a batch and applies it in one transaction, retrying database errors."""

    def __init__(self, engine: AsyncEngine, topic: str) -> None:
        self.engine = engine
        self.topic = topic
        self.decoder = EventDecoder(consumer="usage")
        self.batches = 0

    def decode(self, value: bytes | None) -> Event | None:
        event = self.decoder.decode(value)
        return event if event is not None and event.type in RELEVANT else None

    async def apply(self, positioned: Sequence[tuple[int, int, bytes | None]]) -> UsageBatch:
        """Count one batch of ``(partition, offset, raw value)``; returns once it is durable."""
        decoded = [(p, o, self.decode(v)) for p, o, v in positioned]
        delay = 0.2
        while True:
            try:
                async with self.engine.begin() as conn:
                    batch = await apply_usage(conn, self.topic, decoded)
                break
            except SQLAlchemyError as exc:
                log.warning("usage: database error, retrying in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.batches += 1
        USAGE_APPLIED.inc(batch.counted)
        USAGE_DUPLICATES.inc(batch.duplicates)
        return batch


def make_app(kafka: KafkaSettings, usage: UsageSettings, counter: UsageCounter) -> faust.App:
    """The faust application: one agent over the jobs topic, feeding ``counter``."""
    app = UsageApp(
        usage.group_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        autodiscover=False,
        datadir=str(usage.data_dir),
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        consumer_max_fetch_size=CONSUMER_MAX_PARTITION_FETCH_BYTES,
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
    )
    topic = app.topic(kafka.jobs_topic, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")

    @app.agent(topic, concurrency=1)
    async def count_usage(stream: Any) -> None:
        async for events in stream.take_events(usage.batch, within=BATCH_SECONDS):
            await counter.apply([(e.message.partition, e.message.offset, e.value)
                                 for e in events])

    return app


async def serve(settings: Settings, usage: UsageSettings, ops: OpsSettings) -> None:
    """Count usage until SIGTERM/SIGINT.

    Raises:
        KafkaError, TimeoutError: the cluster is unreachable at start-up.
        SQLAlchemyError: the database cannot be set up.
    """
    kafka = settings.kafka
    await asyncio.wait_for(ensure_topics(kafka), CONNECT_TIMEOUT_S)
    make_sqlite_dir(settings.database.url)
    engine = make_engine(settings.database.url)
    app: faust.App | None = None
    state = {"started": False}
    health = Health([kafka_check(kafka), database_check(engine)], interval=ops.check_interval,
                    timeout=ops.check_timeout, started=lambda: state["started"])
    server = OpsServer(ops, health, "usage")

    async def stored() -> dict[int, int]:
        async with engine.connect() as conn:
            return await load_usage_offsets(conn, kafka.jobs_topic)

    lag = LagSampler("usage", lambda: stored_lag(kafka, kafka.jobs_topic, stored),
                     ops.lag_interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        health.start()
        await create_schema(engine, usage_metadata)
        counter = UsageCounter(engine, kafka.jobs_topic)
        app = make_app(kafka, usage, counter)
        await app.start()
        state["started"] = True
        lag.start()
        log.info("usage: counting %s into %s (group %s)", kafka.jobs_topic,
                 engine.url.render_as_string(hide_password=True), usage.group_id)
        await stop.wait()
        log.info("usage: stopping after %d batches", counter.batches)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        state["started"] = False
        await lag.stop()
        if app is not None:
            await app.stop()
        await health.stop()
        await server.stop()
        await engine.dispose()


def main() -> int:
    """``python -m services.projector.usage``; returns the exit status (as the projector)."""
    try:
        setup_logging("usage")
        settings = load_settings()
        usage = load_usage_settings()
        ops = load_ops_settings("usage")
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings, usage, ops))
    except (KafkaError, TimeoutError) as exc:
        log.error("fatal: Kafka at %s failed or is unreachable: %s",
                  settings.kafka.bootstrap_servers, exc or type(exc).__name__)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        log.error("fatal: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
