"""The runner's errors, classified on the class (``retriable``), not by message text.

A task error that is not retriable ends the task FAILED with the error's
message as the reason (a missing simulator, unusable input, output that
cannot be collected). Kafka and artifact-store outages are not task errors:
they stop the runner, and the task is re-run (same seed) by whoever takes it
next, because its offset was never committed.
"""

from __future__ import annotations

import asyncio


class RunnerError(Exception):
    """Base of the errors a task can end with."""

    retriable = False


class SimulatorUnavailable(RunnerError):
    """No plug-in, or no executable configured, for the job's simulator."""


class BadInput(RunnerError):
    """The job's input cannot be turned into a simulator work directory."""


class CollectError(RunnerError):
    """The simulator exited cleanly but its outputs cannot be read as a result."""


class ProcessTimeout(asyncio.TimeoutError):
    """A simulator ran past the wall-time limit; the output so far is kept."""

    retriable = False

    def __init__(self, message: str, output: bytes) -> None:
        super().__init__(message)
        self.output = output
