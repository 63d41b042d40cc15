"""Produce and consume events: the only place that turns events into Kafka records.

Producers validate every event against its schema before it leaves the
process (a malformed event never reaches the log), and key it by job id so
that all of a job's events land in one partition, in order. Consumers decode,
skip (and count) what they cannot read, and upcast old versions.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.contract.envelope import Event, encode
from services.contract.envelope import decode as decode_event
from services.contract.errors import (
    ContractError,
    EventTooLarge,
    PublishFailed,
    SchemaViolation,
    UnknownEventType,
)
from services.contract.registry import EventRegistry, default_registry
from services.settings import (
    CONSUMER_FETCH_MAX_BYTES,
    CONSUMER_MAX_PARTITION_FETCH_BYTES,
    MAX_EVENT_BYTES,
    PRODUCER_MAX_REQUEST_BYTES,
    KafkaSettings,
    validate_on_consume,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """Where an event was durably written."""

    topic: str
    partition: int
    offset: int


class EventProducer:
    """An idempotent producer of validated events (``acks=all``)."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        registry: EventRegistry | None = None,
        request_timeout_ms: int = 15000,
    ) -> None:
        self.settings = settings
        self.registry = registry or default_registry()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.client_id}-producer",
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_request_size=PRODUCER_MAX_REQUEST_BYTES,
            request_timeout_ms=request_timeout_ms,
            compression_type="zstd",
        )
        self.sent: Counter[str] = Counter()

    async def start(self) -> None:
        """Connect to the cluster.

        Raises:
            PublishFailed: the cluster cannot be reached.
        """
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise PublishFailed(f"cannot connect to Kafka at "
                                f"{self.settings.bootstrap_servers}: {exc}") from exc

    async def stop(self) -> None:
        """Flush what is pending and disconnect (safe to call twice)."""
        await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _record(self, event: Event) -> bytes:
        self.registry.validate(event)
        raw = encode(event)
        if len(raw) > MAX_EVENT_BYTES:
            raise EventTooLarge(
                f"{event.type} for job {event.job_id} is {len(raw)} bytes, over the "
                f"{MAX_EVENT_BYTES}-byte limit: store large data as an artifact"
            )
        return raw

    async def publish(self, event: Event, topic: str | None = None) -> Published:
        """Write one event and wait until Kafka has it on every in-sync replica.

        Raises:
            SchemaViolation, UnknownEventType, EventTooLarge: the event is wrong (not retried).
            PublishFailed: Kafka did not acknowledge it (retriable).
        """
        return (await self.publish_many([event], topic))[0]

    async def publish_many(
        self, events: Sequence[Event], topic: str | None = None
    ) -> list[Published]:
        """Write several events (all validated first, so none is sent if one is wrong)."""
        target = topic or self.settings.jobs_topic
        records = [(e, self._record(e)) for e in events]
        try:
            futures = [
                await self._producer.send(target, raw, key=e.job_id.encode())
                for e, raw in records
            ]
            metas = await asyncio.gather(*futures)
        except KafkaError as exc:
            raise PublishFailed(f"Kafka did not accept events for {target}: {exc}") from exc
        for e, _ in records:
            self.sent[e.type] += 1
        return [Published(m.topic, m.partition, m.offset) for m in metas]


@dataclass
class EventDecoder:
    """Turns consumed records into events; what it cannot read it skips and counts.

    A consumer must not stop forever on one bad record (a poison message) nor
    on an event type added by a newer producer, so both are skipped with a
    warning and counted in ``skipped`` (by reason).
    """

    registry: EventRegistry = field(default_factory=default_registry)
    validate: bool = field(default_factory=validate_on_consume)
    skipped: Counter[str] = field(default_factory=Counter)

    def decode(self, raw: bytes | None) -> Event | None:
        """The record's event brought to the current version, or None if it is skipped."""
        event, reason = self.decode_with_reason(raw)
        if reason is not None:
            self.skipped[reason] += 1
        return event

    def decode_with_reason(self, raw: bytes | None) -> tuple[Event | None, str | None]:
        """Like :meth:`decode`, but says why a record is skipped instead of counting it."""
        if raw is None:
            return None, "tombstone"
        try:
            event = decode_event(raw)
        except ContractError as exc:
            log.warning("skipping malformed record: %s", exc)
            return None, "malformed"
        if not self.registry.knows_type(event.type):
            log.warning("skipping event of unknown type %s (%s)", event.type, event.event_id)
            return None, f"unknown:{event.type}"
        try:
            if self.validate:
                self.registry.validate(event)
            return self.registry.upcast(event), None
        except (SchemaViolation, UnknownEventType) as exc:
            log.warning("skipping unreadable event %s: %s", event.event_id, exc)
            return None, f"invalid:{event.type}"


def make_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str | None = None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A consumer with the project's size limits and manual commits.

    Offsets are never committed automatically: each consumer decides when its
    work is durable (the projector keeps them in its own database).
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id}-consumer",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": CONSUMER_MAX_PARTITION_FETCH_BYTES,
        "fetch_max_bytes": CONSUMER_FETCH_MAX_BYTES,
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)
