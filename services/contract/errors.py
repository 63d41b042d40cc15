"""Errors of the event contract, classified on the class (retriable or not).

Caller mistakes (a malformed event, a schema violation) are never worth a
retry; machinery failures (Kafka unreachable, a send timing out) are. Retry
loops decide by the ``retriable`` attribute, never by message text.
"""

from __future__ import annotations


class ContractError(Exception):
    """Base of every error raised by the contract package."""

    retriable = False


class MalformedEvent(ContractError):
    """Bytes or data that are not a well-formed event envelope."""


class SchemaViolation(ContractError):
    """An event whose payload does not match its type's JSON Schema."""


class UnknownEventType(ContractError):
    """An event type (or version) that this code has no schema for."""


class EventTooLarge(ContractError):
    """An encoded event over the size limit: large data belongs in the artifact store."""


class PublishFailed(ContractError):
    """Kafka did not acknowledge an event (broker down, timeout): safe to retry."""

    retriable = True


class UnreadableRecord(ContractError):
    """A consumed record this code cannot turn into an event; ``reason`` is its skip category.

    Categories: ``tombstone``, ``malformed``, ``unknown:<Type>``, ``invalid:<Type>``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
