"""One job's history straight from Kafka, with its state after each event.

The state is computed with the production fold (:func:`services.projector.state.apply`)
and the production de-duplication rule (an event id seen before is ignored), so line
``n`` shows what the read model held once the job's first ``n`` events were applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from services.contract.envelope import Event, format_time
from services.contract.kafka_io import EventDecoder
from services.contract.log_reader import LogReader
from services.projector.state import JobView, apply
from services.settings import KafkaSettings

SUMMARY_WIDTH = 90


@dataclass(frozen=True)
class Step:
    """One event of the job and the view after it (None before JobSubmitted)."""

    partition: int
    offset: int
    event: Event
    duplicate: bool
    view: JobView | None


def summarize_payload(payload: Mapping[str, Any], width: int = SUMMARY_WIDTH) -> str:
    """``key=value`` pairs on one line, cut to ``width`` characters."""
    text = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in payload.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def summarize_view(view: JobView | None) -> str:
    """The job's state, its tasks' states and its progress in one short line."""
    if view is None:
        return "(no job: not submitted yet)"
    tasks = "".join(t.state.value[0] for t in view.tasks)
    done = sum(t.simulated_primaries for t in view.tasks)
    return (f"{view.state.value} tasks=[{tasks}] primaries={done}/"
            f"{view.number_of_all_primaries} events={view.event_count}")


def steps_of(events: Iterator[tuple[int, int, Event]]) -> Iterator[Step]:
    """Fold one job's ``(partition, offset, event)`` in log order, step by step."""
    view: JobView | None = None
    seen: set[str] = set()
    for partition, offset, event in events:
        duplicate = event.event_id in seen
        if not duplicate:
            seen.add(event.event_id)
            view = apply(view, event)
        yield Step(partition, offset, event, duplicate, view)


async def job_events(
    kafka: KafkaSettings, job_id: str, decoder: EventDecoder
) -> list[tuple[int, int, Event]]:
    """Every readable event of one job in log order (one partition holds them all)."""
    found = []
    key = job_id.encode()
    async for records in LogReader(kafka, kafka.jobs_topic).batches():
        for record in records:
            if record.key != key:
                continue  # the producer keys every event by its job id
            event = decoder.decode(record.value)
            if event is not None and event.job_id == job_id:
                found.append((record.partition, record.offset, event))
    found.sort(key=lambda item: (item[0], item[1]))
    return found


def render(steps: list[Step]) -> Iterator[str]:
    """The lines ``timeline`` prints."""
    for step in steps:
        e = step.event
        mark = "  (duplicate id: ignored)" if step.duplicate else ""
        yield (f"p{step.partition}@{step.offset:<8} {format_time(e.occurred_at)} "
               f"{e.type:<17} {e.producer:<12} {summarize_payload(e.payload)}{mark}")
        yield f"{'':>12}-> {summarize_view(step.view)}"
