"""``python -m services.slurm_bridge``: the batch platform (clusters from SIMJOBS_CLUSTERS).

Besides the bridge it serves ``/metrics``, ``/healthz`` and ``/readyz`` on its ops port
(``SIMJOBS_SLURM_BRIDGE_METRICS_PORT``): ready once it follows the jobs topic and Kafka
answers. A cluster that cannot be reached does not make it unready (its jobs wait and
``simjobs_slurm_polls_total{outcome="failed"}`` says so): the bridge still serves the others.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from services.artifacts.store import ArtifactStore
from services.contract.topics import ensure_topics
from services.ops.health import Health, kafka_check
from services.ops.http import OpsServer
from services.ops.lag import LagSampler, consumer_lag
from services.ops.logs import setup_logging
from services.settings import load_ops_settings, load_settings, load_slurm_bridge_settings
from services.slurm_bridge.bridge import Bridge

log = logging.getLogger(__name__)


async def main() -> None:
    """Create the topics, then run the bridge until SIGTERM/SIGINT."""
    settings = load_settings()
    bridge_settings = load_slurm_bridge_settings()
    ops = load_ops_settings("slurm_bridge")
    await ensure_topics(settings.kafka)
    bridge = Bridge(settings.kafka, bridge_settings, ArtifactStore(settings.artifacts.root))
    health = Health([kafka_check(settings.kafka)], interval=ops.check_interval,
                    timeout=ops.check_timeout, started=lambda: bridge.consumer is not None)
    server = OpsServer(ops, health, "slurm-bridge")

    async def lag() -> dict[tuple[str, int], int]:
        consumer = bridge.consumer
        return {} if consumer is None else await consumer_lag(consumer)

    sampler = LagSampler("slurm-bridge", lag, ops.lag_interval)
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopping.add(loop.create_task(bridge.shutdown())))
    log.info(
        "slurm-bridge on %s, topics %s.*, clusters %s", settings.kafka.bootstrap_servers,
        settings.kafka.topic_prefix,
        ", ".join(f"{c.name} ({c.user}@{c.host}:{c.port}, every {c.poll_interval:g} s)"
                  for c in bridge_settings.clusters) or "none")
    await server.start()
    health.start()
    sampler.start()
    try:
        await bridge.run()
    finally:
        await sampler.stop()
        await health.stop()
        await server.stop()


if __name__ == "__main__":
    setup_logging("slurm-bridge")
    asyncio.run(main())
