"""``python -m services.runner [--role both|coordinator|worker]``: the direct platform."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from services.artifacts.store import ArtifactStore
from services.contract.topics import ensure_topics
from services.runner.service import ROLES, Role, Runner
from services.settings import load_runner_settings, load_settings


async def main(role: Role) -> None:
    """Create the topics, then run the runner until SIGTERM/SIGINT."""
    settings = load_settings()
    runner_settings = load_runner_settings()
    await ensure_topics(settings.kafka)
    runner = Runner(settings.kafka, runner_settings, ArtifactStore(settings.artifacts.root),
                    role=role)
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopping.add(loop.create_task(runner.shutdown())))
    logging.getLogger(__name__).info(
        "runner (%s) on %s, topics %s.*, concurrency %d, simulators %s", role,
        settings.kafka.bootstrap_servers, settings.kafka.topic_prefix,
        runner_settings.concurrency, sorted(runner_settings.executables) or "none")
    await runner.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m services.runner",
                                     description="Run direct-platform jobs.")
    parser.add_argument("--role", choices=ROLES, default="both")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(args.role))
