"""``python -m services.runner [--role both|coordinator|worker]``: the direct platform.

Besides the runner itself it serves ``/metrics``, ``/healthz`` and ``/readyz`` on its ops
port (``SIMJOBS_RUNNER_METRICS_PORT``): ready once its consumers run and Kafka answers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from services.artifacts.store import ArtifactStore
from services.contract.topics import ensure_topics
from services.ops.health import Health, kafka_check
from services.ops.http import OpsServer
from services.ops.lag import LagSampler, consumer_lag
from services.ops.logs import setup_logging
from services.runner.coordinator import Coordinator
from services.runner.service import ROLES, Role, Runner
from services.runner.worker import Worker
from services.settings import load_ops_settings, load_runner_settings, load_settings

log = logging.getLogger(__name__)


async def main(role: Role) -> None:
    """Create the topics, then run the runner until SIGTERM/SIGINT."""
    settings = load_settings()
    runner_settings = load_runner_settings()
    ops = load_ops_settings("runner")
    await ensure_topics(settings.kafka)
    runner = Runner(settings.kafka, runner_settings, ArtifactStore(settings.artifacts.root),
                    role=role)
    parts = [p for p in (runner.coordinator, runner.worker) if p is not None]
    health = Health([kafka_check(settings.kafka, settings.kafka.tasks_topic)],
                    interval=ops.check_interval, timeout=ops.check_timeout,
                    started=lambda: all(p.consumer is not None for p in parts))
    server = OpsServer(ops, health, "runner")
    samplers = [LagSampler(name, _lag_of(part), ops.lag_interval)
                for name, part in (("coordinator", runner.coordinator),
                                   ("worker", runner.worker)) if part is not None]
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopping.add(loop.create_task(runner.shutdown())))
    log.info(
        "runner (%s) on %s, topics %s.*, concurrency %d, simulators %s", role,
        settings.kafka.bootstrap_servers, settings.kafka.topic_prefix,
        runner_settings.concurrency, sorted(runner_settings.executables) or "none")
    await server.start()
    health.start()
    for sampler in samplers:
        sampler.start()
    try:
        await runner.run()
    finally:
        for sampler in samplers:
            await sampler.stop()
        await health.stop()
        await server.stop()


def _lag_of(part: Coordinator | Worker) -> Callable[[], Awaitable[dict[tuple[str, int], int]]]:
    async def sample() -> dict[tuple[str, int], int]:
        consumer = part.consumer
        return {} if consumer is None else await consumer_lag(consumer)

    return sample


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m services.runner",
                                     description="Run direct-platform jobs.")
    parser.add_argument("--role", choices=ROLES, default="both")
    args = parser.parse_args()
    setup_logging("runner")
    asyncio.run(main(args.role))
