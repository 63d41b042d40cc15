"""The fold: job state as a pure function of the job's events."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contract.envelope import Event
from services.contract.jobs import JobState, split_primaries, task_seed
from services.projector.state import SUBMISSION_FIELDS, BatchFold, JobView, _copy, apply, fold
from tests.support.histories import (
    HASH_A,
    HASH_B,
    any_history,
    example_payloads,
    job_history,
    synthetic_log,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


class History:
    """A tiny builder of one job's events with increasing times."""

    def __init__(self, ntasks: int = 2, total: int = 10) -> None:
        self.job_id = "j-1"
        self.clock = T0
        self.events: list[Event] = []
        self.add("JobSubmitted", owner="u:a", title="t", sim_type="builtin", platform="direct",
                 input_type="files", ntasks=ntasks, number_of_all_primaries=total, base_seed=7,
                 input_ref=HASH_A)

    def add(self, type_: str, **payload: object) -> History:
        self.clock += timedelta(seconds=1)
        self.events.append(Event(type=type_, job_id=self.job_id, payload=payload,
                                 producer="t", occurred_at=self.clock))
        return self

    def view(self) -> JobView:
        return fold(self.events)[self.job_id]

    def completed(self, i: int, n: int = 5) -> History:
        return self.add("TaskCompleted", task_index=i, simulated_primaries=n,
                        requested_primaries=n, result_ref=HASH_B)


def test_submission_creates_pending_tasks_with_all_primaries() -> None:
    view = History(ntasks=3, total=11).view()
    assert view.state is JobState.PENDING
    assert [t.requested_primaries for t in view.tasks] == [4, 4, 3]
    assert all(t.state is JobState.PENDING for t in view.tasks)


def test_life_cycle_to_completed() -> None:
    h = History()
    h.add("TaskStarted", task_index=0, requested_primaries=5)
    assert h.view().state is JobState.RUNNING
    assert h.view().tasks[0].start_time == T0 + timedelta(seconds=2)
    h.completed(0).completed(1)
    assert h.view().state is JobState.MERGING_QUEUED
    h.add("MergeStarted", completed_tasks=[0, 1])
    assert h.view().state is JobState.MERGING_RUNNING
    h.add("JobCompleted", result_ref=HASH_A, simulated_primaries=10, tasks_merged=2)
    view = h.view()
    assert (view.state, view.result_ref, view.end_time) == (JobState.COMPLETED, HASH_A, h.clock)


def test_terminal_states_never_change() -> None:
    h = History().add("CancelRequested", requested_by="u:a")
    canceled = h.view()
    assert canceled.state is JobState.CANCELED
    assert {t.state for t in canceled.tasks} == {JobState.CANCELED}
    h.completed(0).add("JobCompleted", result_ref=HASH_A, simulated_primaries=1, tasks_merged=1)
    h.add("JobStateReported", job_state="RUNNING")
    after = h.view()
    assert after.state is JobState.CANCELED
    assert after.tasks == canceled.tasks
    assert after.result_ref is None


def test_partial_failure_keeps_the_partial_result() -> None:
    h = History().completed(0)
    h.add("TaskFailed", task_index=1, reason="exit 1", exit_status=1, log_ref=HASH_B)
    h.add("JobFailed", reason="1 of 2 tasks failed", partial_result_ref=HASH_A)
    view = h.view()
    assert view.state is JobState.FAILED
    assert (view.result_ref, view.result_partial) == (HASH_A, True)
    assert view.tasks[1].exit_status == 1 and view.tasks[1].log_ref == HASH_B


def test_progress_never_goes_backwards() -> None:
    h = History()
    h.add("TaskProgress", task_index=0, simulated_primaries=4, requested_primaries=5)
    h.add("TaskProgress", task_index=0, simulated_primaries=2, requested_primaries=5)
    assert h.view().tasks[0].simulated_primaries == 4


def test_events_of_unknown_jobs_and_tasks_are_ignored() -> None:
    stray = Event(type="TaskStarted", job_id="nope", producer="t",
                  payload={"task_index": 0, "requested_primaries": 1})
    assert apply(None, stray) is None
    h = History().add("TaskStarted", task_index=99, requested_primaries=1)
    assert h.view().state is JobState.PENDING


def test_duplicate_event_ids_apply_once() -> None:
    h = History()
    h.add("TaskProgress", task_index=0, simulated_primaries=4, requested_primaries=5)
    dup = replace(h.events[-1])
    assert fold([*h.events, dup]) == fold(h.events)


def test_worker_report_respects_terminal_rule() -> None:
    h = History().add("JobStateReported", job_state="FAILED", message="collect failed",
                      end_time="2026-11-01T00:10:00.000000Z")
    view = h.view()
    assert view.state is JobState.FAILED and view.failure_reason == "collect failed"
    assert view.end_time == datetime(2026, 11, 1, 0, 10, tzinfo=UTC)


def test_fold_is_deterministic_and_order_of_other_jobs_does_not_matter() -> None:
    rng = random.Random(3)
    histories = [job_history(rng, n) for n in range(30)]
    sequential = [e for h in histories for e in h]
    interleaved = synthetic_log(3, 30)
    assert fold(sequential) == fold(sequential)
    assert fold(interleaved) == fold(sequential)


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 10**9), ntasks=st.integers(1, 5000))
def test_split_primaries_loses_nothing(total: int, ntasks: int) -> None:
    shares = split_primaries(total, ntasks)
    assert len(shares) == ntasks
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), index=st.integers(0, 10000))
def test_task_seeds_are_stable_and_in_range(seed: int, index: int) -> None:
    assert task_seed(seed, index) == task_seed(seed, index)
    assert 0 <= task_seed(seed, index) < 2**31


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_terminal_state_is_final_whatever_follows(seed: int) -> None:
    log = synthetic_log(seed, 8)
    views = fold(log)
    for job_id, view in views.items():
        if view.state.terminal:
            late = Event(type="JobStateReported", job_id=job_id, producer="t",
                         payload={"job_state": "RUNNING"}, occurred_at=view.updated_at)
            assert fold([*log, late])[job_id].state is view.state


def test_deletion_hides_only_ended_jobs_and_is_final() -> None:
    running = History().add("TaskStarted", task_index=0, requested_primaries=5)
    running.add("JobDeleted", requested_by="u:a")
    assert running.view().deleted is False
    ended = History().add("CancelRequested", requested_by="u:a")
    ended.add("JobDeleted", requested_by="u:a")
    assert ended.view().deleted is True
    ended.add("JobStateReported", job_state="RUNNING")
    assert ended.view().deleted is True and ended.view().state is JobState.CANCELED


# --- the batch fold (the projector's) against event-by-event apply --------------------------


def batch_fold(events: list[Event], cuts: list[int]) -> list[dict[str, JobView]]:
    """Fold ``events`` in batches cut at ``cuts``; the views after each batch."""
    views: dict[str, JobView] = {}
    seen: set[str] = set()
    after: list[dict[str, JobView]] = []
    bounds = [0, *sorted(c % (len(events) + 1) for c in cuts), len(events)]
    for start, end in itertools.pairwise(bounds):
        batch = BatchFold(views)
        for event in events[start:end]:
            if event.event_id not in seen:
                seen.add(event.event_id)
                batch.apply(event)
        views = {**views, **batch.views()}
        after.append(views)
    return after


@settings(max_examples=300, deadline=None)
@given(events=any_history(), cuts=st.lists(st.integers(0, 100), max_size=6))
def test_batch_fold_equals_apply_event_by_event(events: list[Event], cuts: list[int]) -> None:
    assert batch_fold(events, cuts)[-1] == fold(events)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_batch_fold_equals_apply_on_life_cycles(seed: int, cuts: list[int]) -> None:
    log = synthetic_log(seed, 12, duplicate_every=9)
    assert batch_fold(log, cuts)[-1] == fold(log)


@settings(max_examples=200, deadline=None)
@given(events=any_history(jobs=1), split=st.integers(0, 60))
def test_batch_fold_keeps_the_object_of_a_job_it_did_not_change(
    events: list[Event], split: int
) -> None:
    """The projector writes a job's row only when its view is a new object."""
    before = fold(events[:split])
    batch = BatchFold(before)
    stepwise = dict(before)
    for event in events[split:]:
        batch.apply(event)
        new = apply(stepwise.get(event.job_id), event)
        if new is not None:
            stepwise[event.job_id] = new
    for job_id, view in batch.views().items():
        assert (view is before.get(job_id)) == (stepwise[job_id] is before.get(job_id))


def broken_payloads(payload: dict[str, object]) -> list[dict[str, object]]:
    """The payload without each of its keys in turn, and with each value of a wrong type."""
    found: list[dict[str, object]] = [{}]
    for key in payload:
        found.append({k: v for k, v in payload.items() if k != key})
        found.append({**payload, key: "x" if not isinstance(payload[key], str) else 7})
    return found


def states_of_one_job() -> list[JobView]:
    """One job pending, running, merging and ended."""
    h = History(ntasks=2)
    views = [h.view()]
    h.add("TaskStarted", task_index=0, requested_primaries=5)
    views.append(h.view())
    h.completed(0).completed(1)
    views.append(h.view())
    h.add("JobCompleted", result_ref=HASH_A, simulated_primaries=10, tasks_merged=2)
    views.append(h.view())
    return views


def test_an_event_the_fold_cannot_read_changes_nothing() -> None:
    """The projector skips such an event and goes on with the same batch."""
    unreadable = 0
    for type_, payloads in example_payloads().items():
        for payload in (p for example in payloads for p in broken_payloads(example)):
            event = Event(type=type_, job_id="j-1", payload=payload, producer="t",
                          occurred_at=T0 + timedelta(hours=1))
            for view in states_of_one_job():
                batch = BatchFold({view.job_id: view})
                try:
                    expected = apply(view, event)
                except (KeyError, TypeError, ValueError):
                    unreadable += 1
                    with pytest.raises((KeyError, TypeError, ValueError)):
                        batch.apply(event)
                    assert batch.views() == {view.job_id: view}
                    assert batch.views()[view.job_id] is view
                    continue
                batch.apply(event)
                assert batch.views() == {view.job_id: expected}
    assert unreadable > 100  # the broken payloads did reach the rules


def test_fast_copy_is_dataclasses_replace() -> None:
    view = History(ntasks=3).view()
    assert _copy(view, state=JobState.RUNNING, event_count=9, log_ref=HASH_B) == replace(
        view, state=JobState.RUNNING, event_count=9, log_ref=HASH_B)
    task = view.tasks[1]
    assert _copy(task, simulated_primaries=3) == replace(task, simulated_primaries=3)
    assert _copy(task, simulated_primaries=3) is not task


def test_a_job_with_many_tasks_ends_merging_queued_when_the_last_task_ends() -> None:
    h = History(ntasks=300, total=3000)
    for i in range(300):
        h.completed(i, n=10)
        if i < 299:
            assert h.view().state is JobState.RUNNING
    assert h.view().state is JobState.MERGING_QUEUED
    assert batch_fold(h.events, [17, 150])[-1] == fold(h.events)


@settings(max_examples=200, deadline=None)
@given(events=any_history())
def test_no_event_after_the_submission_changes_its_fields(events: list[Event]) -> None:
    """The read model's upsert relies on it: it never rewrites these columns."""
    views: dict[str, JobView] = {}
    for event in events:
        before = views.get(event.job_id)
        after = apply(before, event)
        if before is not None and after is not None:
            assert {f: getattr(after, f) for f in SUBMISSION_FIELDS} == {
                f: getattr(before, f) for f in SUBMISSION_FIELDS}
        if after is not None:
            views[event.job_id] = after
