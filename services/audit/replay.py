"""Replay: check that today's code turns every stored history into the state stored for it.

Like Temporal's replayer, this runs the production code and nothing else: records are
decoded, validated against today's schemas and upcast by the contract's
:class:`~services.contract.kafka_io.EventDecoder`, repeated event ids are dropped as the
projector drops them, and each event goes through the production fold
(:func:`services.projector.state.apply`). Replay only reads and folds: it writes nothing
anywhere, so it can never start a simulation, an ``sbatch`` or a ``scancel``.

A history can fail in three typed ways (all :class:`ReplayFailure`):

* :class:`UnreadableEvent`: a record today's code cannot read (not an envelope, a type or
  version it does not know, a payload its schema rejects, or one the fold cannot use);
* :class:`StateDiverged`: the fold ends somewhere else than the stored state (the
  differences are named field by field);
* :class:`MissingHistory`: a stored state with no readable JobSubmitted behind it.

Per job there is a :class:`JobReplayResult`; :class:`ReplayResults` adds the aggregate
``{job_id: failure}`` map. Sources: fixture or bundle files, and a live deployment's log
compared with its read model (up to the model's own offsets, as ``verify`` does, so a
lagging projector is no false alarm).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.audit.jsonview import task_to_json, view_from_json
from services.contract.envelope import Event, encode
from services.contract.errors import UnreadableRecord
from services.contract.kafka_io import EventDecoder
from services.contract.log_reader import LogReader
from services.projector import readmodel as rm
from services.projector.projector import PROJECTION
from services.projector.state import JobView, apply
from services.settings import KafkaSettings

SNAPSHOT_ATTEMPTS = 20


class ReplayFailure(Exception):
    """Today's code does not reproduce a stored history of ``job_id``."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(f"job {job_id}: {message}")
        self.job_id = job_id


class UnreadableEvent(ReplayFailure):
    """A record of the history that today's code cannot read or fold."""

    def __init__(self, job_id: str, where: str, reason: str, detail: str) -> None:
        super().__init__(job_id, f"record {where} unreadable ({reason}): {detail}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class FieldDiff:
    """One field whose replayed value is not the stored one (``tasks[2].state``...)."""

    field: str
    stored: Any
    replayed: Any

    def describe(self) -> str:
        return f"{self.field}: stored={self.stored!r} replayed={self.replayed!r}"


class StateDiverged(ReplayFailure):
    """The fold of the history ends in another state than the stored one."""

    def __init__(self, job_id: str, diffs: Sequence[FieldDiff]) -> None:
        shown = "; ".join(d.describe() for d in diffs[:5])
        more = f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""
        super().__init__(job_id, f"state diverged in {len(diffs)} fields: {shown}{more}")
        self.diffs = list(diffs)


class MissingHistory(ReplayFailure):
    """A state is stored for the job but its history has no readable JobSubmitted."""


def diff_views(stored: JobView, replayed: JobView) -> list[FieldDiff]:
    """Every field (tasks field by field) in which two views differ."""
    diffs = [FieldDiff(f.name, getattr(stored, f.name), getattr(replayed, f.name))
             for f in fields(JobView)
             if f.name != "tasks" and getattr(stored, f.name) != getattr(replayed, f.name)]
    if len(stored.tasks) != len(replayed.tasks):
        diffs.append(FieldDiff("len(tasks)", len(stored.tasks), len(replayed.tasks)))
    for a, b in zip(stored.tasks, replayed.tasks, strict=False):
        left, right = task_to_json(a), task_to_json(b)
        diffs.extend(FieldDiff(f"tasks[{a.task_index}].{k}", left[k], right[k])
                     for k in left if left[k] != right[k])
    return diffs


@dataclass(frozen=True)
class JobReplayResult:
    """How one job's history replayed."""

    job_id: str
    records: int
    applied: int
    state: JobView | None
    failure: ReplayFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class ReplayResults:
    """Every job's result, and the aggregate ``{job_id: failure}`` map."""

    results: dict[str, JobReplayResult] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, ReplayFailure]:
        return {j: r.failure for j, r in self.results.items() if r.failure is not None}

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class JobReplay:
    """The fold of one job's history so far (fed record by record, in log order)."""

    job_id: str
    decoder: EventDecoder = field(default_factory=lambda: EventDecoder(validate=True,
                                                                      consumer="replay"))
    view: JobView | None = None
    records: int = 0
    applied: int = 0
    failure: ReplayFailure | None = None
    _seen: set[str] = field(default_factory=set)

    def feed(self, raw: bytes | None, where: str) -> None:
        """Fold one more record; the first unreadable one fails the job (and ends it)."""
        self.records += 1
        if self.failure is not None:
            return
        try:
            event = self.decoder.read(raw)
        except UnreadableRecord as exc:
            self.failure = UnreadableEvent(self.job_id, where, exc.reason, str(exc))
            return
        if event.event_id in self._seen:
            return  # a repeated id: the projector drops it too
        self._seen.add(event.event_id)
        try:
            new = apply(self.view, event)
        except (KeyError, TypeError, ValueError) as exc:
            self.failure = UnreadableEvent(self.job_id, where, f"fold:{event.type}", repr(exc))
            return
        if new is not None:
            self.view = new
            self.applied += 1

    def result(self, stored: JobView | None) -> JobReplayResult:
        """The outcome, compared with the stored state (None: nothing to compare)."""
        failure = self.failure
        if failure is None and stored is not None:
            if self.view is None:
                failure = MissingHistory(self.job_id, "no readable JobSubmitted in the history")
            else:
                diffs = diff_views(stored, self.view)
                if diffs:
                    failure = StateDiverged(self.job_id, diffs)
        return JobReplayResult(self.job_id, self.records, self.applied, self.view, failure)


def replay_history(job_id: str, records: Iterable[bytes | None],
                   stored: JobView | None) -> JobReplayResult:
    """Replay one job's records (exact bytes, log order) against its stored state."""
    job = JobReplay(job_id)
    for n, raw in enumerate(records):
        job.feed(raw, f"#{n}")
    return job.result(stored)


# --- fixtures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFixture:
    """A committed history: records as the log stored them, and the state stored for them."""

    path: Path
    job_id: str
    description: str
    generated_by: str
    records: list[bytes]
    expected: JobView


def load_fixture(path: Path) -> HistoryFixture:
    """Read a ``tests/fixtures/replay/*.json`` file.

    Each event is kept as the envelope JSON the log held; it is re-encoded in the one
    wire encoding (sorted keys, compact), which is how it was written.

    Raises:
        OSError: the file cannot be read.
        KeyError, TypeError, ValueError: it is not a history fixture.
    """
    data = json.loads(path.read_text())
    records = [json.dumps(e, sort_keys=True, separators=(",", ":")).encode()
               for e in data["events"]]
    return HistoryFixture(path, data["job_id"], data.get("description", ""),
                          data.get("generated_by", ""), records,
                          view_from_json(data["expected"]))


def replay_fixture(fixture: HistoryFixture) -> JobReplayResult:
    """Replay one fixture against the state it stores."""
    return replay_history(fixture.job_id, fixture.records, fixture.expected)


# --- a deployment's log against its read model ---------------------------------------------


async def stored_views(engine: AsyncEngine, topic: str, job_ids: Sequence[str] | None
                       ) -> tuple[dict[int, int], dict[str, JobView]]:
    """The read model's views with the offsets they were projected up to (read together).

    Raises:
        RuntimeError: the live projector committed during every attempt.
    """
    for _ in range(SNAPSHOT_ATTEMPTS):
        async with engine.connect() as conn:
            before = await rm.load_offsets(conn, PROJECTION, topic)
            views = (await rm.load_views(conn, job_ids) if job_ids is not None
                     else await rm.load_all_views(conn))
            after = await rm.load_offsets(conn, PROJECTION, topic)
        if before == after:
            return after, views
    raise RuntimeError(f"the read model changed during {SNAPSHOT_ATTEMPTS} reads")


async def replay_log(
    kafka: KafkaSettings,
    stored: Mapping[str, JobView],
    *,
    topic: str | None = None,
    until: Mapping[int, int] | None = None,
    job_ids: Sequence[str] | None = None,
    fail_fast: bool = False,
) -> ReplayResults:
    """Replay every job of a topic (or only ``job_ids``) against ``stored``.

    Jobs are folded as the log streams by (memory grows with the number of jobs, not
    of events). A job with events but no stored state is replayed and reported without
    a comparison; a stored state without events is a :class:`MissingHistory`.
    """
    wanted = set(job_ids) if job_ids is not None else None
    jobs: dict[str, JobReplay] = {}
    reader = LogReader(kafka, topic or kafka.jobs_topic, until=until)
    async for batch in reader.batches():
        for record in batch:
            job_id = record.key.decode(errors="replace") if record.key else "(no key)"
            if wanted is not None and job_id not in wanted:
                continue
            job = jobs.setdefault(job_id, JobReplay(job_id))
            job.feed(record.value, f"p{record.partition}@{record.offset}")
            if fail_fast and job.failure is not None:
                return ReplayResults({job_id: job.result(stored.get(job_id))})
    results = ReplayResults()
    for job_id in sorted(jobs.keys() | (stored.keys() if wanted is None else wanted)):
        job = jobs.get(job_id) or JobReplay(job_id)
        result = job.result(stored.get(job_id))
        results.results[job_id] = result
        if fail_fast and result.failure is not None:
            break
    return results


async def replay_read_model(
    kafka: KafkaSettings,
    engine: AsyncEngine,
    *,
    job_ids: Sequence[str] | None = None,
    fail_fast: bool = False,
) -> ReplayResults:
    """Replay the deployment's log against its read model, up to the model's offsets."""
    offsets, views = await stored_views(engine, kafka.jobs_topic, job_ids)
    until = {p: o + 1 for p, o in offsets.items()}
    return await replay_log(kafka, views, until=until, job_ids=job_ids, fail_fast=fail_fast)


def record_bytes(events: Iterable[Event]) -> list[bytes]:
    """Events as the log stores them (for replaying in-memory histories)."""
    return [encode(e) for e in events]
