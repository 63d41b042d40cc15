"""The one event envelope, and its one JSON encoding.

Every fact about a job travels in an :class:`Event`. The envelope is the
public contract of the log (third-party consumers read it), so its encoding
lives here and nowhere else: compact JSON, UTF-8, keys sorted so that the
same event always has the same bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from services.contract import jsonio
from services.contract.errors import MalformedEvent

#: Namespace for deterministic event ids (uuid5), so that a retried step that
#: emits "the same" derived event twice emits the same id, and consumers drop it.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d7a5e-4c1b-4bd5-9a36-0d8f3c1f2b7a")

ENVELOPE_KEYS = frozenset(
    {
        "event_id",
        "type",
        "version",
        "job_id",
        "occurred_at",
        "producer",
        "correlation_id",
        "causation_id",
        "payload",
    }
)


def utc_now() -> datetime:
    """The current time, timezone-aware (events never carry naive datetimes)."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a ``Z``; the only time format on the wire."""
    if moment.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Inverse of :func:`format_time` (also accepts any ISO-8601 with an offset)."""
    moment = datetime.fromisoformat(text)  # Python 3.11 reads the "Z" itself
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def derived_event_id(*parts: object) -> str:
    """A stable id for an event that a retry could emit twice (uuid5 of its causes)."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "/".join(str(p) for p in parts)))


@dataclass(frozen=True)
class Event:
    """One immutable fact about one job.

    ``version`` is the version of the payload's shape (its schema), not a
    sequence number: the order of a job's events is the order of its Kafka
    partition, since every event of a job is keyed by ``job_id``.
    """

    type: str
    job_id: str
    payload: Mapping[str, Any]
    producer: str
    version: int = 1
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=utc_now)
    correlation_id: str | None = None
    causation_id: str | None = None

    def caused(self, type: str, payload: Mapping[str, Any], producer: str,
               *, event_id: str | None = None, occurred_at: datetime | None = None) -> Event:
        """A follow-up event of the same job, linked to this one as its cause."""
        return Event(
            type=type,
            job_id=self.job_id,
            payload=payload,
            producer=producer,
            event_id=event_id or str(uuid.uuid4()),
            occurred_at=occurred_at or utc_now(),
            correlation_id=self.correlation_id or self.event_id,
            causation_id=self.event_id,
        )

    def with_payload(self, payload: Mapping[str, Any], version: int) -> Event:
        """The same event with a payload of another version (used by upcasters)."""
        return replace(self, payload=payload, version=version)

    def to_dict(self) -> dict[str, Any]:
        """The envelope as plain JSON-able data."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "version": self.version,
            "job_id": self.job_id,
            "occurred_at": format_time(self.occurred_at),
            "producer": self.producer,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "payload": dict(self.payload),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Build an event from decoded JSON, checking the envelope's shape.

        Raises:
            MalformedEvent: a key is missing or extra, or a field has the wrong type.
        """
        if data.keys() != ENVELOPE_KEYS:
            keys = set(data)
            missing = sorted(ENVELOPE_KEYS - keys)
            extra = sorted(keys - ENVELOPE_KEYS)
            raise MalformedEvent(f"envelope keys wrong: missing {missing}, unexpected {extra}")
        for name in ("event_id", "type", "job_id", "producer", "occurred_at"):
            if not isinstance(data[name], str) or not data[name]:
                raise MalformedEvent(f"envelope field {name!r} must be a non-empty string")
        for name in ("correlation_id", "causation_id"):
            if data[name] is not None and not isinstance(data[name], str):
                raise MalformedEvent(f"envelope field {name!r} must be a string or null")
        version = data["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise MalformedEvent("envelope field 'version' must be an integer >= 1")
        if not isinstance(data["payload"], dict):
            raise MalformedEvent("envelope field 'payload' must be an object")
        try:
            occurred_at = parse_time(data["occurred_at"])
        except ValueError as exc:
            raise MalformedEvent(f"envelope field 'occurred_at': {exc}") from exc
        # Every field is checked above, so the frozen dataclass's __init__ (one
        # object.__setattr__ per field, most of a consumer's decoding time) is skipped.
        event = object.__new__(cls)
        event.__dict__.update(
            type=data["type"],
            job_id=data["job_id"],
            payload=data["payload"],
            producer=data["producer"],
            version=version,
            event_id=data["event_id"],
            occurred_at=occurred_at,
            correlation_id=data["correlation_id"],
            causation_id=data["causation_id"],
        )
        return event


def encode(event: Event) -> bytes:
    """The event's bytes on the wire (orjson's speed, the standard library's values)."""
    return jsonio.dumps(event.to_dict(), sort_keys=True)


def decode(raw: bytes) -> Event:
    """Parse bytes from the wire into an event.

    Raises:
        MalformedEvent: not UTF-8 JSON, or not a well-formed envelope.
    """
    try:
        data = jsonio.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedEvent("an event must be a JSON object")
    return Event.from_dict(data)
