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
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from services.contract.envelope import Event, encode
from services.contract.envelope import decode as decode_event
from services.contract.errors import (
    EventTooLarge,
    MalformedEvent,
    PublishFailed,
    SchemaViolation,
    UnknownEventType,
    UnreadableRecord,
)
from services.contract.partitioner import partition_for
from services.contract.registry import EventRegistry, default_registry
from services.ops.metrics import EVENTS_CONSUMED, EVENTS_PRODUCED, RECORDS_SKIPPED, labelled
from services.settings import (
    CONSUMER_FETCH_MAX_BYTES,
    CONSUMER_MAX_PARTITION_FETCH_BYTES,
    MAX_EVENT_BYTES,
    PRODUCER_MAX_REQUEST_BYTES,
    KafkaSettings,
    validate_on_consume,
)

log = logging.getLogger(__name__)

_PRODUCED = labelled(EVENTS_PRODUCED)
_CONSUMED = labelled(EVENTS_CONSUMED)  # per event: labels() was a tenth of decode time

# Errors after which an idempotent producer's sequence numbers are no longer accepted.
_PRODUCER_STATE_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)


@dataclass(frozen=True)
class Published:
    """Where an event was durably written."""

    topic: str
    partition: int
    offset: int


class EventProducer:
    """An idempotent producer of validated events (``acks=all``).

    ``give_up_seconds`` is for a caller that someone waits on (the API: a submit must answer
    503 promptly rather than hang): with the broker down but its leaders still in the
    client's metadata, aiokafka keeps a batch and retries it for as long as it takes. With
    ``give_up_seconds`` set, a publish not acknowledged in that time fails, and what is
    still buffered is dropped first, so the event cannot reach the log later behind a
    failure the caller was told of. Background services leave it unset: they wait for the
    broker and keep their place.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        registry: EventRegistry | None = None,
        request_timeout_ms: int = 15000,
        retry_seconds: float = 30.0,
        give_up_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or default_registry()
        self._request_timeout_ms = request_timeout_ms
        self._retry_seconds = retry_seconds if give_up_seconds is None else give_up_seconds
        self._give_up_seconds = give_up_seconds
        self._producer = self._new_producer()
        self._client_down = False  # a replacement client not connected yet
        self._started = False
        self.sent: Counter[str] = Counter()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=f"{self.settings.client_id}-producer",
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            partitioner=partition_for,
            max_request_size=PRODUCER_MAX_REQUEST_BYTES,
            request_timeout_ms=self._request_timeout_ms,
            compression_type="zstd",
        )

    @property
    def started(self) -> bool:
        """Whether :meth:`start` succeeded (and :meth:`stop` has not been called since)."""
        return self._started

    async def start(self) -> None:
        """Connect to the cluster; after a failed attempt it may be called again.

        Raises:
            PublishFailed: the cluster cannot be reached.
        """
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            self._producer = self._new_producer()  # a stopped client cannot start again
            raise PublishFailed(f"cannot connect to Kafka at "
                                f"{self.settings.bootstrap_servers}: {exc}") from exc
        self._started = True

    async def stop(self) -> None:
        """Flush what is pending and disconnect (safe to call twice)."""
        self._started = False
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
        if not self._started:
            raise PublishFailed(f"not connected to Kafka at {self.settings.bootstrap_servers}")
        keyed = [(raw, e.job_id.encode(), None) for e, raw in records]
        metas = await self._send_retrying(target, keyed, what="events")
        for e, _ in records:
            self.sent[e.type] += 1
            _PRODUCED(e.type).inc()
        return [Published(m.topic, m.partition, m.offset) for m in metas]

    async def publish_raw(
        self, records: Sequence[tuple[bytes, Sequence[tuple[str, bytes]]]], topic: str
    ) -> list[Published]:
        """Write records exactly as another log stored them (audit imports), with headers.

        Unlike :meth:`publish`, a payload is not checked against today's schemas: an import
        must keep old and foreign shapes as they are. Each record must still be a
        well-formed envelope within the size limit, and is keyed by its job id.

        Raises:
            MalformedEvent: a record is not an event envelope.
            EventTooLarge: a record is over the size limit.
            PublishFailed: Kafka did not acknowledge them (retriable).
        """
        keyed = []
        for raw, headers in records:
            if len(raw) > MAX_EVENT_BYTES:
                raise EventTooLarge(f"a record of {len(raw)} bytes is over the "
                                    f"{MAX_EVENT_BYTES}-byte limit")
            keyed.append((decode_event(raw).job_id.encode(), raw, list(headers)))
        if not self._started:
            raise PublishFailed(f"not connected to Kafka at {self.settings.bootstrap_servers}")
        metas = await self._send_retrying(
            topic, [(raw, key, headers) for key, raw, headers in keyed], what="records")
        return [Published(m.topic, m.partition, m.offset) for m in metas]

    async def _send_retrying(
        self, topic: str, records: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]] | None]],
        *, what: str,
    ) -> list[Any]:
        """Send and await acks, riding out a broker restart or a leader election.

        A retriable error (no leader, timeout, connection lost) is retried with backoff for up
        to ``retry_seconds``; an error that leaves the idempotent producer's sequence state
        unusable (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch: seen
        after the broker restarts) replaces the client, whose new producer id starts fresh.
        The whole batch is sent again, so an event that did land the first time is written
        twice with the same ``event_id``; every consumer skips an id it has applied. Anything
        else, or the window running out, raises :class:`PublishFailed`.
        """
        deadline = asyncio.get_running_loop().time() + self._retry_seconds
        delay = 0.2
        while True:
            try:
                return await self._send_once(topic, records, deadline)
            except TimeoutError as exc:
                raise PublishFailed(f"Kafka did not acknowledge {what} for {topic} within "
                                    f"{self._give_up_seconds:.0f} s (is the broker down?)"
                                    ) from exc
            except KafkaError as exc:
                fatal_state = isinstance(exc, _PRODUCER_STATE_ERRORS)
                if not (exc.retriable or fatal_state):
                    raise PublishFailed(f"Kafka did not accept {what} for {topic}: {exc}") from exc
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise PublishFailed(f"Kafka did not accept {what} for {topic} within "
                                        f"{self._retry_seconds:.0f} s: {exc!r}") from exc
                log.warning("publish to %s failed (%r); retrying in %.1f s%s", topic, exc,
                            delay, ", with a new producer" if fatal_state else "")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                if fatal_state:
                    await self._replace_producer()

    async def _send_once(
        self, topic: str, records: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]] | None]],
        deadline: float,
    ) -> list[Any]:
        """One attempt; with ``give_up_seconds``, bounded by ``deadline``.

        Raises:
            TimeoutError: not acknowledged by the deadline; nothing buffered is left to send.
        """
        async def send() -> list[Any]:
            if self._client_down:
                await self._connect_client()
            futures = [await self._producer.send(topic, raw, key=key, headers=headers)
                       for raw, key, headers in records]
            if len(futures) == 1:  # most publishes: no gathering future, one loop hop less
                return [await futures[0]]
            return list(await asyncio.gather(*futures))

        if self._give_up_seconds is None:
            return await send()
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            async with asyncio.timeout(remaining):  # no task of its own, unlike wait_for
                return await send()
        except TimeoutError:
            await self._replace_producer(drop_buffered=True)
            raise

    async def _replace_producer(self, *, drop_buffered: bool = False) -> None:
        """A new client in place of the current one; it connects on the next send.

        ``drop_buffered``: the old client's buffered records must never be delivered (the
        caller was told the publish failed). aiokafka has no public way to withdraw a
        buffered record, and ``stop()`` flushes (it would deliver them once the broker is
        back). So its sender is stopped first (nothing leaves any more), then its batches
        are failed, as aiokafka itself does when its sender dies. A batch already on the
        wire when the broker went away may still have been written: that is the one
        ambiguous case, as with any producer.
        """
        old, self._producer = self._producer, self._new_producer()
        self._client_down = True
        if not drop_buffered:
            try:
                await old.stop()
            except KafkaError as exc:  # its pending sends have failed already
                log.warning("stopping the old producer: %r", exc)
            return
        try:
            await asyncio.wait_for(old._sender.close(), 5.0)
        except Exception as exc:
            log.warning("stopping the abandoned producer's sender: %r", exc)
        old._message_accumulator.fail_all(KafkaTimeoutError("publish given up"))
        try:
            await old.client.close()
        except Exception as exc:
            log.warning("closing the abandoned producer: %r", exc)
        log.warning("publish given up after %.0f s; producer replaced, its buffer dropped",
                    self._give_up_seconds or 0.0)

    async def _connect_client(self) -> None:
        """Start the replacement client; a failed start leaves a fresh one for the next try.

        Raises:
            KafkaError: the cluster cannot be reached yet (retriable).
        """
        try:
            await self._producer.start()
        except KafkaError:
            await self._producer.stop()
            self._producer = self._new_producer()  # a client whose start failed cannot retry
            raise
        self._client_down = False


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
    #: Who consumes (the ``consumer`` label of the consumed/skipped metrics).
    consumer: str = "events"

    def decode(self, raw: bytes | None) -> Event | None:
        """The record's event brought to the current version, or None if it is skipped."""
        event, reason = self.decode_with_reason(raw)
        if reason is not None:
            self.skipped[reason] += 1
        return event

    def decode_with_reason(self, raw: bytes | None) -> tuple[Event | None, str | None]:
        """Like :meth:`decode`, but says why a record is skipped instead of counting it."""
        try:
            event = self.read(raw)
        except UnreadableRecord as exc:
            if exc.reason != "tombstone":
                log.warning("skipping record: %s", exc)
            RECORDS_SKIPPED.labels(self.consumer, exc.reason).inc()
            return None, exc.reason
        _CONSUMED(self.consumer, event.type).inc()
        return event, None

    def read(self, raw: bytes | None) -> Event:
        """The record's event brought to the current version.

        Raises:
            UnreadableRecord: a tombstone, not an envelope, a type this code does not
                know, or a payload its schema rejects; ``reason`` says which.
        """
        if raw is None:
            raise UnreadableRecord("tombstone", "a tombstone (no value)")
        try:
            event = decode_event(raw)
        except MalformedEvent as exc:
            raise UnreadableRecord("malformed", f"malformed record: {exc}") from exc
        if not self.registry.knows_type(event.type):
            raise UnreadableRecord(f"unknown:{event.type}",
                                   f"event {event.event_id} of unknown type {event.type}")
        try:
            if self.validate:
                self.registry.validate(event)
            return self.registry.upcast(event)
        except (SchemaViolation, UnknownEventType) as exc:
            raise UnreadableRecord(f"invalid:{event.type}",
                                   f"unreadable event {event.event_id}: {exc}") from exc


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

