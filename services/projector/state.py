"""The fold: a job's state as a pure function of its events.

``apply(view, event)`` never reads a clock, a database or a random source:
every time it records comes from the event. The projector, the audit tools
and the tests all fold with this one function, so what ``GET /jobs`` serves
is what replaying the log gives.

Rules (YAPTIDE's states, without its inconsistencies):

* JobSubmitted creates the job (PENDING) with its tasks (PENDING, each with
  its share of primaries); a second JobSubmitted for the same id is ignored.
* Events of a job never submitted are ignored (``apply`` returns None).
* COMPLETED, FAILED and CANCELED never change once reached; the same holds
  for each task.
* Task events move the job: PENDING while no task has started, RUNNING once
  one has, MERGING_QUEUED when every task has ended, MERGING_RUNNING on
  MergeStarted; JobCompleted / JobFailed / BatchSubmitFailed end it.
* CancelRequested ends the job CANCELED at once (the owner's word is final)
  and every task not yet ended is CANCELED with it.
* Progress never goes backwards: ``simulated_primaries`` only grows.
* JobDeleted hides a job that has ended (or is merging) from users; its
  events stay in the log, so deletion is itself auditable and survives a rebuild.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.contract.envelope import Event, parse_time
from services.contract.jobs import DELETABLE, JobState, split_primaries

S = JobState


@dataclass(frozen=True)
class TaskView:
    """One task as users see it."""

    task_index: int
    state: JobState = S.PENDING
    requested_primaries: int = 0
    simulated_primaries: int = 0
    estimated_time: int | None = None
    seed: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    last_update_time: datetime | None = None
    result_ref: str | None = None
    log_ref: str | None = None
    failure_reason: str | None = None
    exit_status: int | None = None
    platform_state: str | None = None
    platform_exit_code: int | None = None


@dataclass(frozen=True)
class JobView:
    """One job as users see it: what the read model stores and ``GET /jobs`` serves."""

    job_id: str
    owner: str
    title: str
    sim_type: str
    platform: str
    input_type: str
    ntasks: int
    number_of_all_primaries: int
    base_seed: int
    input_ref: str
    submitted_at: datetime
    updated_at: datetime
    state: JobState = S.PENDING
    end_time: datetime | None = None
    result_ref: str | None = None
    result_partial: bool = False
    failure_reason: str | None = None
    log_ref: str | None = None
    cluster_name: str | None = None
    array_job_id: str | None = None
    collect_job_id: str | None = None
    job_dir: str | None = None
    deleted: bool = False
    event_count: int = 1
    tasks: tuple[TaskView, ...] = ()


def _submitted(event: Event) -> JobView:
    p = event.payload
    shares = split_primaries(p["number_of_all_primaries"], p["ntasks"])
    batch = p.get("batch_options") or {}
    return JobView(
        job_id=event.job_id,
        owner=p["owner"],
        title=p["title"],
        sim_type=p["sim_type"],
        platform=p["platform"],
        input_type=p["input_type"],
        ntasks=p["ntasks"],
        number_of_all_primaries=p["number_of_all_primaries"],
        base_seed=p["base_seed"],
        input_ref=p["input_ref"],
        submitted_at=event.occurred_at,
        updated_at=event.occurred_at,
        cluster_name=batch.get("cluster_name"),
        tasks=tuple(
            TaskView(task_index=i, requested_primaries=n, last_update_time=event.occurred_at)
            for i, n in enumerate(shares)
        ),
    )


def _platform(p: dict[str, Any] | Any) -> dict[str, Any]:
    ps = p.get("platform_state")
    if not ps:
        return {}
    return {"platform_state": ps["state"], "platform_exit_code": ps.get("exit_code")}


def _task_update(task: TaskView, event: Event) -> TaskView:
    """A task after one task event (task terminal states are sticky)."""
    p = event.payload
    at = event.occurred_at
    if task.state.terminal:
        if event.type == "TaskCanceled" and task.state is S.CANCELED:
            # The platform confirms a cancel we already applied: keep what it says.
            return replace(task, **_platform(p))
        return task
    started = task.start_time or at
    if event.type == "TaskScheduled":
        return replace(task, requested_primaries=p["requested_primaries"], seed=p["seed"],
                       last_update_time=at)
    if event.type == "TaskStarted":
        return replace(task, state=S.RUNNING, start_time=started,
                       requested_primaries=p["requested_primaries"], last_update_time=at)
    if event.type == "TaskProgress":
        return replace(
            task,
            state=S.RUNNING,
            start_time=started,
            requested_primaries=p["requested_primaries"],
            simulated_primaries=max(task.simulated_primaries, p["simulated_primaries"]),
            estimated_time=p.get("estimated_time"),
            last_update_time=at,
        )
    if event.type == "TaskCompleted":
        return replace(
            task,
            state=S.COMPLETED,
            start_time=started,
            end_time=at,
            requested_primaries=p["requested_primaries"],
            simulated_primaries=max(task.simulated_primaries, p["simulated_primaries"]),
            estimated_time=None,
            result_ref=p["result_ref"],
            log_ref=p.get("log_ref"),
            last_update_time=at,
            **_platform(p),
        )
    if event.type == "TaskFailed":
        return replace(
            task,
            state=S.FAILED,
            end_time=at,
            simulated_primaries=max(task.simulated_primaries, p.get("simulated_primaries", 0)),
            estimated_time=None,
            failure_reason=p["reason"],
            exit_status=p.get("exit_status"),
            log_ref=p.get("log_ref"),
            last_update_time=at,
            **_platform(p),
        )
    if event.type == "TaskCanceled":
        return replace(task, state=S.CANCELED, end_time=at, estimated_time=None,
                       last_update_time=at, **_platform(p))
    raise AssertionError(event.type)


TASK_EVENTS = frozenset(
    {"TaskScheduled", "TaskStarted", "TaskProgress", "TaskCompleted", "TaskFailed",
     "TaskCanceled"}
)


def _derived_state(state: JobState, tasks: tuple[TaskView, ...]) -> JobState:
    """Where task events leave a job that no job-level event has ended."""
    if state is S.MERGING_RUNNING:
        return state
    if tasks and all(t.state.terminal for t in tasks):
        return S.MERGING_QUEUED
    if any(t.state is not S.PENDING for t in tasks):
        return S.RUNNING
    return state


def _end(view: JobView, state: JobState, at: datetime, **changes: Any) -> JobView:
    return replace(view, state=state, end_time=view.end_time or at, **changes)


def apply(view: JobView | None, event: Event) -> JobView | None:
    """The job after one more event (pure; see the module docstring for the rules)."""
    if event.type == "JobSubmitted":
        return view if view is not None else _submitted(event)
    if view is None:
        return None
    p = event.payload
    at = event.occurred_at
    updated_at = max(view.updated_at, at)
    if event.type in TASK_EVENTS:
        # The hot path (progress): one copy of the view per event.
        index = p["task_index"]
        tasks = view.tasks
        if index < len(tasks):
            old = tasks[index]
            new = _task_update(old, event)
            if new is not old:
                tasks = (*tasks[:index], new, *tasks[index + 1:])
        state = view.state if view.state.terminal else _derived_state(view.state, tasks)
        return replace(view, tasks=tasks, state=state, updated_at=updated_at,
                       event_count=view.event_count + 1)
    view = replace(view, updated_at=updated_at, event_count=view.event_count + 1)
    if event.type == "BatchSubmitted":
        return replace(view, cluster_name=p["cluster_name"], array_job_id=p["array_job_id"],
                       collect_job_id=p["collect_job_id"], job_dir=p["job_dir"])
    if event.type == "JobDeleted":
        return replace(view, deleted=True) if view.state in DELETABLE else view
    if view.state.terminal:
        return view
    if event.type == "CancelRequested" or event.type == "JobCanceled":
        tasks = tuple(
            t if t.state.terminal
            else replace(t, state=S.CANCELED, end_time=at, estimated_time=None,
                         last_update_time=at)
            for t in view.tasks
        )
        return _end(view, S.CANCELED, at, tasks=tasks)
    if event.type == "MergeStarted":
        return replace(view, state=S.MERGING_RUNNING)
    if event.type == "JobCompleted":
        return _end(view, S.COMPLETED, at, result_ref=p["result_ref"], result_partial=False)
    if event.type == "JobFailed":
        return _end(view, S.FAILED, at, failure_reason=p["reason"],
                    result_ref=p.get("partial_result_ref"),
                    result_partial=p.get("partial_result_ref") is not None)
    if event.type == "BatchSubmitFailed":
        return _end(view, S.FAILED, at, failure_reason=p["reason"])
    if event.type == "JobStateReported":
        return _reported(view, event)
    return view


def _reported(view: JobView, event: Event) -> JobView:
    """A worker's report: taken as it says, within the rules (no way back from terminal)."""
    p = event.payload
    state = S(p["job_state"])
    changes: dict[str, Any] = {}
    if p.get("log_ref"):
        changes["log_ref"] = p["log_ref"]
    if state is S.UNKNOWN:
        return replace(view, **changes)
    if state.terminal:
        end = parse_time(p["end_time"]) if p.get("end_time") else event.occurred_at
        if state is S.FAILED and p.get("message"):
            changes["failure_reason"] = p["message"]
        return _end(view, state, end, **changes)
    return replace(view, state=state, **changes)


def fold(events: Iterable[Event]) -> dict[str, JobView]:
    """Fold a whole log in memory (events in log order), dropping repeated event ids."""
    views: dict[str, JobView] = {}
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        new = apply(views.get(event.job_id), event)
        if new is not None:
            views[event.job_id] = new
    return views
