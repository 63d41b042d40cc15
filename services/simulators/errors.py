"""Errors a task can end with, classified on the class (``retriable``), not by message text.

None of them is worth a retry: the task ends FAILED with the error's message as
its reason (a missing simulator, unusable input, outputs that cannot be read).
Outages of Kafka or the artifact store are not task errors and are not here.
"""

from __future__ import annotations


class SimulatorError(Exception):
    """Base of the errors a task can end with."""

    retriable = False


class SimulatorUnavailable(SimulatorError):
    """No plug-in, or no executable configured, for the job's simulator."""


class BadInput(SimulatorError):
    """The job's input cannot be turned into a simulator work directory."""


class CollectError(SimulatorError):
    """The simulator exited cleanly but its outputs cannot be read as a result."""
