"""``python -m services.slurm_bridge``: the batch platform (clusters from SIMJOBS_CLUSTERS)."""

from __future__ import annotations

import asyncio
import logging
import signal

from services.artifacts.store import ArtifactStore
from services.contract.topics import ensure_topics
from services.settings import load_settings, load_slurm_bridge_settings
from services.slurm_bridge.bridge import Bridge


async def main() -> None:
    """Create the topics, then run the bridge until SIGTERM/SIGINT."""
    settings = load_settings()
    bridge_settings = load_slurm_bridge_settings()
    await ensure_topics(settings.kafka)
    bridge = Bridge(settings.kafka, bridge_settings, ArtifactStore(settings.artifacts.root))
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopping.add(loop.create_task(bridge.shutdown())))
    logging.getLogger(__name__).info(
        "slurm-bridge on %s, topics %s.*, clusters %s", settings.kafka.bootstrap_servers,
        settings.kafka.topic_prefix,
        ", ".join(f"{c.name} ({c.user}@{c.host}:{c.port}, every {c.poll_interval:g} s)"
                  for c in bridge_settings.clusters) or "none")
    await bridge.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
