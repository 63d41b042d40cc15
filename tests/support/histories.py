"""Synthetic job histories: valid event streams covering every path of the life cycle.

Used by the projector tests (fold in memory vs. the read model) and by the
benchmarks. Deterministic for a given seed; per-job order is kept while jobs
interleave, as they do on a partition. :func:`any_history` (a hypothesis strategy)
draws streams that keep no order at all, for the fold's property tests.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from services.contract.envelope import Event
from services.contract.jobs import JobState, split_primaries, task_seed
from services.contract.registry import default_registry

HASH_A = "a" * 64
HASH_B = "b" * 64
START = datetime(2026, 11, 1, tzinfo=UTC)


def job_history(rng: random.Random, job_no: int, *, max_tasks: int = 6) -> list[Event]:
    """One job's events, ending in one of the life-cycle outcomes (or left running)."""
    job_id = f"20261101-000000-{uuid.UUID(int=rng.getrandbits(128))}DIRECT"
    ntasks = rng.randint(1, max_tasks)
    total = rng.randint(ntasks, 10 * ntasks + 7)
    base_seed = rng.randint(0, 2**31 - 1)
    clock = START + timedelta(seconds=job_no)

    def ev(type_: str, **payload: object) -> Event:
        nonlocal clock
        clock += timedelta(milliseconds=rng.randint(1, 500))
        return Event(type=type_, job_id=job_id, payload=payload, producer="synthetic",
                     event_id=str(uuid.UUID(int=rng.getrandbits(128))), occurred_at=clock)

    events = [ev("JobSubmitted", owner=f"u:user{job_no % 7}", title=f"job {job_no}",
                 sim_type="builtin", platform="direct", input_type="files", ntasks=ntasks,
                 number_of_all_primaries=total, base_seed=base_seed, input_ref=HASH_A)]
    shares = split_primaries(total, ntasks)
    for i, n in enumerate(shares):
        events.append(ev("TaskScheduled", task_index=i, requested_primaries=n,
                         seed=task_seed(base_seed, i)))
    outcome = rng.choice(["complete", "complete", "fail_one", "fail_all", "cancel", "running",
                          "reported"])
    for i, n in enumerate(shares):
        if outcome == "cancel" and i >= ntasks // 2:
            break
        events.append(ev("TaskStarted", task_index=i, requested_primaries=n, worker="w1"))
        done = 0
        while done < n and outcome != "running":
            done = min(n, done + rng.randint(1, max(1, n // 2)))
            events.append(ev("TaskProgress", task_index=i, simulated_primaries=done,
                             requested_primaries=n, estimated_time=rng.randint(0, 90)))
        if outcome == "running":
            events.append(ev("TaskProgress", task_index=i, simulated_primaries=n // 2,
                             requested_primaries=n, estimated_time=10))
            continue
        failed = outcome == "fail_all" or (outcome == "fail_one" and i == 0)
        if failed:
            events.append(ev("TaskFailed", task_index=i, reason="exit 1", exit_status=1,
                             log_ref=HASH_B))
        elif outcome != "cancel":
            events.append(ev("TaskCompleted", task_index=i, simulated_primaries=n,
                             requested_primaries=n, result_ref=HASH_B, log_ref=None,
                             cpu_seconds=1.5, wall_seconds=1.6))
    if outcome == "complete":
        events.append(ev("MergeStarted", completed_tasks=list(range(ntasks))))
        events.append(ev("JobCompleted", result_ref=HASH_A, simulated_primaries=total,
                         tasks_merged=ntasks))
    elif outcome in ("fail_one", "fail_all"):
        events.append(ev("JobFailed", reason="a task failed",
                         task_failures=[{"task_index": 0, "reason": "exit 1"}],
                         partial_result_ref=HASH_A if outcome == "fail_one" and ntasks > 1
                         else None))
    elif outcome == "cancel":
        events.append(ev("CancelRequested", requested_by="u:x"))
        events.append(ev("TaskCanceled", task_index=ntasks - 1, reason="job canceled"))
        events.append(ev("JobCanceled", reason="canceled", tasks_stopped=1))
        # Late events after the terminal state: they must change nothing.
        events.append(ev("JobCompleted", result_ref=HASH_A, simulated_primaries=1,
                         tasks_merged=1))
    elif outcome == "reported":
        events.append(ev("JobStateReported", job_state="MERGING_RUNNING"))
        events.append(ev("JobStateReported", job_state="COMPLETED"))
    return events


def interleave(rng: random.Random, histories: list[list[Event]]) -> Iterator[Event]:
    """Merge histories randomly while keeping each one's own order."""
    cursors = [0] * len(histories)
    live = [i for i, h in enumerate(histories) if h]
    while live:
        k = rng.randrange(len(live))
        i = live[k]
        yield histories[i][cursors[i]]
        cursors[i] += 1
        if cursors[i] == len(histories[i]):
            live[k] = live[-1]
            live.pop()


def synthetic_log(seed: int, jobs: int, *, duplicate_every: int = 0,
                  max_tasks: int = 6) -> list[Event]:
    """A whole log of ``jobs`` interleaved histories; optionally re-emits some events."""
    rng = random.Random(seed)
    log = list(interleave(rng, [job_history(rng, n, max_tasks=max_tasks) for n in range(jobs)]))
    if duplicate_every:
        with_dups: list[Event] = []
        for n, event in enumerate(log):
            with_dups.append(event)
            if n % duplicate_every == 0:
                with_dups.append(replace(event))  # same id: a retried emit
        log = with_dups
    return log


def example_payloads() -> dict[str, list[dict[str, object]]]:
    """Every schema example, by event type: valid payloads of every shape the log allows."""
    found: dict[str, list[dict[str, object]]] = {}
    for type_, _version, example in default_registry().examples():
        found.setdefault(type_, []).append(example)
    return found


@st.composite
def any_history(draw: st.DrawFn, *, jobs: int = 3, max_events: int = 60) -> list[Event]:
    """A few jobs' events in any order, drawn from every schema example.

    Unlike :func:`synthetic_log`, nothing here follows the life cycle: events come
    before the submission or after the end, twice (same id), for tasks a job does not
    have, with times out of order. Each is still valid against its schema.
    """
    examples = example_payloads()
    types = sorted(examples)
    job_ids = [f"20261101-000000-job{n}" for n in range(jobs)]
    events: list[Event] = []
    for _ in range(draw(st.integers(0, max_events))):
        if events and draw(st.integers(0, 9)) == 0:
            events.append(replace(draw(st.sampled_from(events))))  # a re-emitted event
            continue
        type_ = draw(st.sampled_from(types))
        payload = dict(draw(st.sampled_from(examples[type_])))
        if "task_index" in payload:
            payload["task_index"] = draw(st.integers(0, 3))
        if "simulated_primaries" in payload:
            payload["simulated_primaries"] = draw(st.integers(0, 5000))
        if type_ == "JobSubmitted":
            payload["ntasks"] = draw(st.integers(1, 3))
        if type_ == "JobStateReported":
            payload["job_state"] = draw(st.sampled_from([s.value for s in JobState]))
        events.append(Event(
            type=type_, job_id=draw(st.sampled_from(job_ids)), payload=payload,
            producer="hypothesis", event_id=f"e{len(events)}",
            occurred_at=START + timedelta(seconds=draw(st.integers(0, 600)))))
    return events
