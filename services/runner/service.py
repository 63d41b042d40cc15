"""The runner process: coordinator, worker, or both, as one service.

Both parts are long-running services with ``run()``, ``shutdown()`` and
``async with``; :class:`Runner` runs the chosen ones side by side, stops the
others when one fails, and re-raises the first error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal, Protocol

from services.artifacts.store import ArtifactStore
from services.contract.kafka_io import EventProducer
from services.runner.coordinator import Coordinator
from services.runner.worker import Worker
from services.settings import KafkaSettings, RunnerSettings

log = logging.getLogger(__name__)

Role = Literal["both", "coordinator", "worker"]
ROLES: tuple[Role, ...] = ("both", "coordinator", "worker")


class Service(Protocol):
    """What the runner's parts have in common."""

    async def run(self) -> None: ...

    async def shutdown(self) -> None: ...


class Runner:
    """Coordinator and/or worker sharing one event producer."""

    def __init__(self, kafka: KafkaSettings, settings: RunnerSettings, artifacts: ArtifactStore,
                 *, role: Role = "both") -> None:
        self.kafka = kafka
        self.producer = EventProducer(kafka)
        self.coordinator = (Coordinator(kafka, settings, artifacts, producer=self.producer)
                            if role in ("both", "coordinator") else None)
        self.worker = (Worker(kafka, settings, artifacts, producer=self.producer)
                       if role in ("both", "worker") else None)
        self._services: list[Service] = [s for s in (self.coordinator, self.worker)
                                         if s is not None]
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Runner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop every part (idempotent, safe before start)."""
        self._stop.set()
        for service in self._services:
            await service.shutdown()

    async def run(self) -> None:
        """Run until shut down; on a part's failure stop the rest and raise its error."""
        await self.producer.start()
        try:
            tasks = [asyncio.create_task(s.run(), name=type(s).__name__)
                     for s in self._services]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                log.error("runner: %s failed, stopping", failed[0].get_name())
            await self.shutdown()
            await asyncio.wait(tasks)
            for task in failed or tasks:
                task.result()
        finally:
            await self.producer.stop()
