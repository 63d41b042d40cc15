"""The live feed decodes a record only when it needs to: to learn a submission's owner.

Records are written and read back through the real broker, as the feed's tail reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.api.livefeed import LiveFeed
from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder, EventProducer
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


async def read_all(kafka: KafkaSettings) -> list[Any]:
    return [record async for batch in LogReader(kafka, kafka.jobs_topic).batches()
            for record in batch]


async def test_only_submissions_are_decoded_and_they_name_their_owner(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    kafka = await fresh_topics(kafka_bootstrap)
    cancel = Event(type="CancelRequested", job_id="job-a", producer="test",
                   payload={"requested_by": "u:alice"})
    async with EventProducer(kafka) as producer:
        await producer.publish_many([submitted("job-a", "u:alice"), cancel])
    first, second = sorted(await read_all(kafka), key=lambda r: r.offset)

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.sqlite3'}")
    decoder = CountingDecoder()
    feed = LiveFeed(kafka, engine, load_stream_settings(), decoder)
    try:
        assert feed._identify(second) == ("job-a", None, None)  # by its key alone
        assert decoder.reads == 0
        job_id, owner, event = feed._identify(first)
        assert (job_id, owner) == ("job-a", "u:alice") and event is not None
        assert event.type == "JobSubmitted" and decoder.reads == 1
    finally:
        await engine.dispose()
