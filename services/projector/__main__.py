"""``python -m services.projector``: run the read-model projector until SIGTERM/SIGINT.

Configuration comes from the ``SIMJOBS_*`` environment (:mod:`services.settings`). The
topics are created first if missing, as every service does on start-up. Logs go to
stderr. Exit status: 0 after a requested shutdown, 1 on a fatal error (Kafka or the
database unreachable, a failing batch), 2 on a configuration error.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiokafka.errors import KafkaError
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from services.contract.kafka_io import EventDecoder
from services.contract.topics import ensure_topics
from services.ops.gctune import tune_garbage_collector
from services.ops.health import Health, database_check, kafka_check
from services.ops.http import OpsServer
from services.ops.lag import LagSampler, stored_lag
from services.ops.logs import setup_logging
from services.projector import readmodel as rm
from services.projector.metered import MeteredProjector
from services.projector.readmodel import make_engine
from services.settings import OpsSettings, Settings, load_ops_settings, load_settings

log = logging.getLogger("services.projector")

#: How long start-up may wait for the cluster before the service gives up.
CONNECT_TIMEOUT_S = 30.0


async def serve(settings: Settings, ops: OpsSettings | None = None) -> None:
    """Create the topics, then project until a signal asks to stop.

    ``/metrics``, ``/healthz`` and ``/readyz`` are served on the ops port from the start
    (not ready until the consumer runs and Kafka and the database answer).

    Raises:
        KafkaError: the cluster is unreachable or failed.
        TimeoutError: the cluster did not answer within :data:`CONNECT_TIMEOUT_S`.
        SQLAlchemyError: the read-model database failed.
        OSError: the ops port is taken.
    """
    ops = ops or load_ops_settings("projector")
    make_sqlite_dir(settings.database.url)
    engine = make_engine(settings.database.url)
    projector = MeteredProjector(
        settings.kafka,
        engine,
        group_id=settings.projector.group_id,
        max_batch=settings.projector.max_batch,
        decoder=EventDecoder(consumer="projector"),
    )
    health = Health([kafka_check(settings.kafka), database_check(engine)],
                    interval=ops.check_interval, timeout=ops.check_timeout,
                    started=lambda: projector.consumer is not None)
    server = OpsServer(ops, health, "projector")

    async def stored() -> dict[int, int]:
        async with engine.connect() as conn:
            return await rm.load_offsets(conn, projector.projection, projector.topic)

    lag = LagSampler("projector", lambda: stored_lag(settings.kafka, projector.topic, stored),
                     ops.lag_interval)
    await server.start()
    health.start()
    try:
        await asyncio.wait_for(ensure_topics(settings.kafka), CONNECT_TIMEOUT_S)
        lag.start()
        await _project(settings, projector)
    finally:
        await lag.stop()
        await health.stop()
        await server.stop()
        await engine.dispose()


async def _project(settings: Settings, projector: MeteredProjector) -> None:
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    def request_stop(signum: int) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        task = loop.create_task(projector.shutdown())
        pending.add(task)
        task.add_done_callback(pending.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    log.info(
        "projecting %s into %s (group %s, batches of up to %d)",
        settings.kafka.jobs_topic, projector.engine.url.render_as_string(hide_password=True),
        settings.projector.group_id, settings.projector.max_batch,
    )  # fmt: skip
    tune_garbage_collector()
    try:
        await projector.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("stopped after applying %d events", projector.applied_total)


def make_sqlite_dir(url: str) -> None:
    """Create the directory of a SQLite file (the embedded default lives in the state dir)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)


def main() -> int:
    """Entry point; returns the process exit status."""
    try:
        setup_logging("projector")
        settings = load_settings()
        ops = load_ops_settings("projector")
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings, ops))
    except (KafkaError, TimeoutError) as exc:
        log.error(
            "fatal: Kafka at %s failed or is unreachable: %s",
            settings.kafka.bootstrap_servers, exc or type(exc).__name__,
        )  # fmt: skip
        return 1
    except SQLAlchemyError as exc:
        log.error("fatal: read-model database error: %s", exc)
        return 1
    except OSError as exc:
        log.error("fatal: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
