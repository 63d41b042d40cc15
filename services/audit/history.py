"""A job's raw records from a topic, with where and when each entered the log.

The audit tools that need more than the decoded event (as-of needs the record's time,
export needs the exact bytes) read through here; the producer keys every event by its job
id, so one job's records are the records of one key, in partition order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.contract.log_reader import LogReader
from services.settings import KafkaSettings

#: Record headers an import writes, so an imported record still says where it came from.
SOURCE_TOPIC = "simjobs-source-topic"
SOURCE_PARTITION = "simjobs-source-partition"
SOURCE_OFFSET = "simjobs-source-offset"
SOURCE_TIMESTAMP = "simjobs-source-timestamp"
BUNDLE_ID = "simjobs-bundle"


@dataclass(frozen=True)
class JobRecord:
    """One record of a job as stored: position, log time, headers and exact value."""

    partition: int
    offset: int
    #: Milliseconds since the epoch when the record entered the log: the broker's append
    #: time on topics with ``message.timestamp.type=LogAppendTime`` (the jobs topic), the
    #: producer's otherwise; for an imported record, the time it entered its source log.
    timestamp_ms: int
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def logged_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @classmethod
    def of(cls, record: Any) -> JobRecord:
        """From an aiokafka ``ConsumerRecord`` (an imported record keeps its source time)."""
        headers = tuple((k, bytes(v)) for k, v in (record.headers or ()))
        stamp = int(record.timestamp)
        for key, value in headers:
            if key == SOURCE_TIMESTAMP:
                stamp = int(value.decode())
        return cls(record.partition, record.offset, stamp, record.value, headers)


async def job_records(
    kafka: KafkaSettings,
    job_id: str,
    *,
    topic: str | None = None,
    until: Mapping[int, int] | None = None,
) -> list[JobRecord]:
    """Every record keyed by ``job_id`` in ``topic`` (default: the jobs topic), in log order.

    Raises:
        aiokafka.errors.KafkaError: the cluster is unreachable or the topic does not exist.
    """
    key = job_id.encode()
    found: list[JobRecord] = []
    async for batch in LogReader(kafka, topic or kafka.jobs_topic, until=until).batches():
        found.extend(JobRecord.of(r) for r in batch if r.key == key)
    found.sort(key=lambda r: (r.partition, r.offset))
    return found
