"""A job's state as of a past moment, or after its first N events.

"As of T" means: as the log stood at T. The jobs topic records the broker's append time
of every record (``message.timestamp.type=LogAppendTime``), so the records of the job
that were in the log at T are the prefix whose append time is at most T; an imported
record keeps the time it entered its source log. That prefix is folded with the
production fold and de-duplication (:func:`services.audit.timeline.steps_of`), and
records this code cannot read are skipped as the projector skips them, so the result is
what the read model held once the projector had caught up to T: what ``GET /jobs``
answered then.

On a topic created before the jobs topic used append time, the record time is the
producer's clock; the prefix rule still holds, with the producer's clock as the witness.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.audit.history import JobRecord, job_records
from services.audit.timeline import steps_of
from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder
from services.projector.state import JobView
from services.settings import KafkaSettings


@dataclass(frozen=True)
class AsOf:
    """A job's state at a point of its history."""

    job_id: str
    #: The moment asked for (None when cut by event count).
    at: datetime | None
    #: Records of the job in the log up to that point (readable or not).
    records: int
    #: The last record taken, if any.
    last: JobRecord | None
    #: The state then (None: not submitted yet at that point).
    state: JobView | None


def fold_as_of(job_id: str, records: Iterable[JobRecord], *, at: datetime | None = None,
               events: int | None = None) -> AsOf:
    """The state after the prefix of ``records`` logged at or before ``at``.

    With ``events``, the prefix is also at most that many records long.
    """
    taken: list[JobRecord] = []
    for record in records:
        if at is not None and record.logged_at > at:
            break
        if events is not None and len(taken) >= events:
            break
        taken.append(record)
    decoder = EventDecoder(validate=True, consumer="audit")
    decoded: list[tuple[int, int, Event]] = []
    for record in taken:
        event = decoder.decode(record.value)
        if event is not None and event.job_id == job_id:
            decoded.append((record.partition, record.offset, event))
    state: JobView | None = None
    for step in steps_of(iter(decoded)):
        state = step.view
    return AsOf(job_id, at, len(taken), taken[-1] if taken else None, state)


async def state_as_of(kafka: KafkaSettings, job_id: str, *, at: datetime | None = None,
                      events: int | None = None, topic: str | None = None) -> AsOf:
    """The state of ``job_id`` as the log stood at ``at`` (or after ``events`` records).

    Raises:
        aiokafka.errors.KafkaError: the cluster is unreachable or the topic does not exist.
    """
    records = await job_records(kafka, job_id, topic=topic)
    return fold_as_of(job_id, records, at=at, events=events)
