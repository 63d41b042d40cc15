"""The live feed learns a submission's owner from its record's header, or else decodes it.

Records are written and read back through the real broker: the producer's header is what
the consumer sees, and a record written without it (one from before the header existed,
or an audit import) still yields its owner, from its payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.api.livefeed import LiveFeed
from services.contract.envelope import Event, encode
from services.contract.kafka_io import OWNER_HEADER, EventDecoder, EventProducer
from services.contract.log_reader import LogReader
from services.projector.readmodel import make_engine
from services.settings import KafkaSettings, load_stream_settings
from tests.conftest import fresh_topics

pytestmark = pytest.mark.kafka


@dataclass
class CountingDecoder(EventDecoder):
    """The real decoder, counting the records it had to decode."""

    reads: int = 0

    def decode(self, raw: bytes | None) -> Event | None:
        self.reads += 1
        return super().decode(raw)


def submitted(job_id: str, owner: str) -> Event:
    return Event(type="JobSubmitted", job_id=job_id, producer="test", payload={
        "owner": owner, "title": "t", "sim_type": "shieldhit", "platform": "direct",
        "input_type": "files", "ntasks": 1, "number_of_all_primaries": 10, "base_seed": 1,
        "input_ref": "0" * 64})


async def read_all(kafka: KafkaSettings) -> dict[str, Any]:
    """Every record of the jobs topic by job id."""
    found: dict[str, Any] = {}
    async for batch in LogReader(kafka, kafka.jobs_topic).batches():
        for record in batch:
            found[record.key.decode()] = record
    return found


async def test_the_owner_comes_from_the_header_without_decoding_or_from_the_payload(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    kafka = await fresh_topics(kafka_bootstrap)
    with_header, without = submitted("job-header", "u:alice"), submitted("job-plain", "u:bob")
    async with EventProducer(kafka) as producer:
        await producer.publish(with_header)
        await producer.publish_raw([(encode(without), [])], kafka.jobs_topic)
    records = await read_all(kafka)
    assert (OWNER_HEADER, b"u:alice") in list(records["job-header"].headers)
    assert not records["job-plain"].headers

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.sqlite3'}")
    decoder = CountingDecoder()
    feed = LiveFeed(kafka, engine, load_stream_settings(), decoder)
    try:
        assert feed._identify(records["job-header"]) == ("job-header", "u:alice", None)
        assert decoder.reads == 0
        job_id, owner, event = feed._identify(records["job-plain"])
        assert (job_id, owner) == ("job-plain", "u:bob") and event is not None
        assert decoder.reads == 1
    finally:
        await engine.dispose()
