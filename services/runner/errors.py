"""The runner's own errors (task errors are in :mod:`services.simulators.errors`).

Kafka and artifact-store outages are not task errors: they stop the runner,
and the task is re-run (same seed) by whoever takes it next, because its
offset was never committed.
"""

from __future__ import annotations

import asyncio


class ProcessTimeout(asyncio.TimeoutError):
    """A simulator ran past the wall-time limit; the output so far is kept."""

    retriable = False

    def __init__(self, message: str, output: bytes, *, wall_seconds: float | None = None,
                 cpu_seconds: float | None = None) -> None:
        super().__init__(message)
        self.output = output
        self.wall_seconds = wall_seconds
        self.cpu_seconds = cpu_seconds
