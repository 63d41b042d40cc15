"""Readiness: each dependency checked in the background, the last answers served at once.

``/healthz`` says the process is alive (it answers); ``/readyz`` says it can do its work:
it has finished starting (its consumer runs, its producer is connected: the service's
own ``started`` test) and every dependency answered its last check within the timeout.
Checks run every ``check_interval`` seconds in one background task, so a probe costs
one lookup and a slow dependency never slows the probe; until every check has answered
once the service is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.settings import KafkaSettings

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Check:
    """One dependency: a probe that returns if it is usable and raises otherwise."""

    name: str
    probe: Probe


@dataclass(frozen=True)
class CheckResult:
    """A check's last answer (``detail`` says what failed)."""

    ok: bool
    detail: str
    checked_at: float


def kafka_check(kafka: KafkaSettings, topic: str | None = None) -> Check:
    """Kafka answers a metadata request and has the service's topic.

    The request names that one topic: listing all of them costs every service a
    metadata response of the whole cluster per check (about 8 % of the usage worker's
    CPU on a broker holding 800 partitions of benchmark and test topics).
    """
    wanted = topic or kafka.jobs_topic

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers,
                                    client_id=f"{kafka.client_id}-health",
                                    request_timeout_ms=5000)
        try:
            await admin.start()
            described = await admin.describe_topics([wanted])
        finally:
            await admin.close()
        if not any(t["topic"] == wanted and t["error_code"] == 0 for t in described):
            raise LookupError(f"topic {wanted} does not exist")

    return Check("kafka", probe)


def database_check(engine: AsyncEngine) -> Check:
    """The database answers a query on a fresh or pooled connection."""

    async def probe() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return Check("database", probe)


class Health:
    """The readiness of one service (see the module docstring)."""

    def __init__(self, checks: Sequence[Check], *, interval: float, timeout: float,
                 started: Callable[[], bool] = lambda: True) -> None:
        self.checks = list(checks)
        self.interval = interval
        self.timeout = timeout
        self.started = started
        self.results: dict[str, CheckResult] = {}
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> None:
        """Run every check now (concurrently) and keep the answers."""
        async def one(check: Check) -> None:
            try:
                await asyncio.wait_for(check.probe(), self.timeout)
                result = CheckResult(True, "ok", time.time())
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                result = CheckResult(False, detail, time.time())
            previous = self.results.get(check.name)
            if previous is not None and previous.ok != result.ok:
                log.warning("%s is %s: %s", check.name,
                            "back" if result.ok else "unavailable", result.detail)
            self.results[check.name] = result

        await asyncio.gather(*(one(c) for c in self.checks))

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether the service is ready, with each check's last answer."""
        started = self.started()
        checks = {name: {"ok": r.ok, "detail": r.detail} for name, r in self.results.items()}
        ok = started and len(self.results) == len(self.checks) and all(
            r.ok for r in self.results.values())
        return ok, {"started": started, "checks": checks}

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="health-checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
