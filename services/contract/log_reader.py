"""Read a topic's raw records from offset 0 by assignment (no group, nothing committed).

Partitions are looked up with the admin client: a consumer that subscribes to nothing
has no metadata for the topic right after ``start()``, so ``partitions_for_topic``
would answer None and the topic would look empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code

from services.contract.kafka_io import make_consumer
from services.settings import KafkaSettings


async def topic_partitions(kafka: KafkaSettings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``.

    Raises:
        aiokafka.errors.KafkaError: the cluster is unreachable or the topic does not exist.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers,
                                client_id=f"{kafka.client_id}-reader")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry["error_code"]:
            error: type[KafkaError] = for_code(entry["error_code"])
            raise error(f"topic {topic}")
        return sorted(TopicPartition(topic, p["partition"]) for p in entry["partitions"])
    return []


async def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """The end offset (next offset to be written) of each partition of ``topic``."""
    tps = await topic_partitions(kafka, topic)
    consumer = make_consumer(kafka)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(o) for tp, o in ends.items()}
    finally:
        await consumer.stop()


@dataclass
class LogReader:
    """Batches of raw records from offset 0 to a stop offset per partition.

    ``until`` maps a partition to the offset to stop before; if given, partitions it
    does not name are not read. Without it, each partition is read to its end offset
    at the time :meth:`batches` starts. ``stops`` tells where each partition stopped.
    """

    kafka: KafkaSettings
    topic: str
    until: Mapping[int, int] | None = None
    batch: int = 2000
    stops: dict[int, int] = field(default_factory=dict)

    async def batches(self) -> AsyncIterator[list[Any]]:
        """Yield lists of ``ConsumerRecord`` in log order per partition."""
        tps = await topic_partitions(self.kafka, self.topic)
        if not tps:
            return
        consumer = make_consumer(self.kafka)
        await consumer.start()
        try:
            consumer.assign(tps)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            until = self.until
            stops = {
                tp: ends[tp] if until is None else min(ends[tp], until.get(tp.partition, 0))
                for tp in tps
            }
            self.stops = {tp.partition: stops[tp] for tp in tps}
            await consumer.seek_to_beginning(*tps)
            remaining = {tp for tp, stop in stops.items() if stop > 0}
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=1000,
                                                 max_records=self.batch)
                records: list[Any] = []
                for tp, tp_records in fetched.items():
                    records.extend(r for r in tp_records if r.offset < stops[tp])
                if records:
                    yield records
                for tp in list(remaining):
                    if await consumer.position(tp) >= stops[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()


async def partition_records(kafka: KafkaSettings, topic: str, partition: int, start: int,
                            stop: int, batch: int = 2000,
                            consumer: Any = None) -> AsyncIterator[list[Any]]:
    """Batches of the raw records of one partition with ``start <= offset < stop``, in order.

    Read by assignment (no group, nothing committed). ``stop`` is clamped to the partition's
    end offset, so a bound that is too high cannot make the read wait for records forever.
    A started ``consumer`` of :func:`make_consumer` may be lent (its assignment is replaced
    and it is left running): starting one costs more than a short read.

    Raises:
        aiokafka.errors.KafkaError: the cluster is unreachable.
    """
    if stop <= start:
        return
    tp = TopicPartition(topic, partition)
    own = consumer is None
    if own:
        consumer = make_consumer(kafka)
        await consumer.start()
    try:
        consumer.assign([tp])
        stop = min(stop, int((await consumer.end_offsets([tp]))[tp]))
        consumer.seek(tp, max(start, 0))
        while await consumer.position(tp) < stop:
            fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=batch)
            records = [r for r in fetched.get(tp, []) if start <= r.offset < stop]
            if records:
                yield records
    finally:
        if own:
            await consumer.stop()
