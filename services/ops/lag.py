"""Consumer lag, sampled in the background into ``simjobs_consumer_lag``.

Two ways to know where a consumer is: the consumer itself (its position, against the
partition's high-water mark from its last fetch: the runner's consumers), or the offsets
a service stores with its effects (the projector and the usage worker keep them in the
database; what is applied is the truth there, not what was fetched). Either way the lag
is the number of records after that position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.contract.log_reader import end_offsets
from services.ops.metrics import CONSUMER_LAG
from services.settings import KafkaSettings

log = logging.getLogger(__name__)

StoredOffsets = Callable[[], Awaitable[dict[int, int]]]


async def consumer_lag(consumer: Any) -> dict[tuple[str, int], int]:
    """Lag per assigned partition of an aiokafka consumer (known high-water marks only)."""
    lags: dict[tuple[str, int], int] = {}
    for tp in list(consumer.assignment()):
        high = consumer.highwater(tp)
        if high is None:
            continue
        position = await asyncio.wait_for(consumer.position(tp), 1.0)
        lags[(tp.topic, tp.partition)] = max(0, int(high) - int(position))
    return lags


async def stored_lag(kafka: KafkaSettings, topic: str,
                     stored: StoredOffsets) -> dict[tuple[str, int], int]:
    """Lag per partition from the last offset a service stored as applied."""
    ends = await end_offsets(kafka, topic)
    done = await stored()
    return {(topic, p): max(0, end - (done.get(p, -1) + 1)) for p, end in ends.items()}


class LagSampler:
    """Samples one consumer's lag every ``interval`` seconds until stopped."""

    def __init__(self, name: str, sample: Callable[[], Awaitable[dict[tuple[str, int], int]]],
                 interval: float) -> None:
        self.name = name
        self.sample = sample
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def sample_once(self) -> None:
        for (topic, partition), lag in (await self.sample()).items():
            CONSUMER_LAG.labels(self.name, topic, str(partition)).set(lag)

    async def run(self) -> None:
        while True:
            try:
                await self.sample_once()
            except Exception as exc:  # a sample is worth less than the service: log, go on
                log.debug("lag sample of %s failed: %r", self.name, exc)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"lag-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
