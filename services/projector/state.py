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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from services.contract.envelope import Event, parse_time
from services.contract.jobs import DELETABLE, JobState, split_primaries

S = JobState
V = TypeVar("V", "JobView", "TaskView")


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


#: The fields JobSubmitted sets and no later event changes (the read model's bulk
#: upsert leaves them out of its UPDATE; a property test holds the fold to it).
SUBMISSION_FIELDS = frozenset({
    "owner", "title", "sim_type", "platform", "input_type", "ntasks",
    "number_of_all_primaries", "base_seed", "input_ref", "submitted_at",
})


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


def _copy(view: V, **changes: Any) -> V:
    """``dataclasses.replace`` without re-running ``__init__``: the fold's hot path.

    The views have no ``__post_init__`` and every caller names real fields, so a copy
    of the instance dictionary is the same value, four times faster.
    """
    new = object.__new__(type(view))
    attrs = new.__dict__
    attrs.update(view.__dict__)
    attrs.update(changes)
    return new


def _task_update(task: TaskView, event: Event) -> TaskView:
    """A task after one task event (task terminal states are sticky)."""
    p = event.payload
    at = event.occurred_at
    if task.state.terminal:
        if event.type == "TaskCanceled" and task.state is S.CANCELED:
            # The platform confirms a cancel we already applied: keep what it says.
            platform = _platform(p)
            return _copy(task, **platform) if platform else task
        return task
    started = task.start_time or at
    if event.type == "TaskScheduled":
        return _copy(task, requested_primaries=p["requested_primaries"], seed=p["seed"],
                     last_update_time=at)
    if event.type == "TaskStarted":
        return _copy(task, state=S.RUNNING, start_time=started,
                     requested_primaries=p["requested_primaries"], last_update_time=at)
    if event.type == "TaskProgress":
        return _copy(
            task,
            state=S.RUNNING,
            start_time=started,
            requested_primaries=p["requested_primaries"],
            simulated_primaries=max(task.simulated_primaries, p["simulated_primaries"]),
            estimated_time=p.get("estimated_time"),
            last_update_time=at,
        )
    if event.type == "TaskCompleted":
        return _copy(
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
        return _copy(
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
        return _copy(task, state=S.CANCELED, end_time=at, estimated_time=None,
                     last_update_time=at, **_platform(p))
    raise AssertionError(event.type)


TASK_EVENTS = frozenset(
    {"TaskScheduled", "TaskStarted", "TaskProgress", "TaskCompleted", "TaskFailed",
     "TaskCanceled"}
)


class _Draft:
    """One job while events are folded into it: the fields every event touches, mutable.

    Copying the whole frozen view (and its tuple of tasks) for every event was a quarter
    of the projector's time, and O(tasks) per event. A draft is made once per job and
    batch, takes any number of events, and is frozen once at the end. The job-level
    fields that change once in a job's life (batch ids, results, failure) still go
    through ``view``, a frozen view replaced whole.

    Every rule reads the whole payload before it assigns anything: an event that the
    fold cannot read (KeyError, TypeError, ValueError) leaves the draft as it was.
    """

    __slots__ = ("ended", "event_count", "started", "state", "tasks", "tasks_changed",
                 "updated_at", "view")

    def __init__(self, view: JobView) -> None:
        self.view = view
        self.state = view.state
        self.updated_at = view.updated_at
        self.event_count = view.event_count
        self.tasks = list(view.tasks)
        self.tasks_changed = False
        #: Tasks in a terminal state, and tasks no longer PENDING: the job's derived
        #: state from two counters instead of a scan of every task per event.
        self.ended = self.started = 0
        for task in self.tasks:
            if task.state is not S.PENDING:
                self.started += 1
                self.ended += task.state.terminal

    def set_task(self, index: int, new: TaskView) -> None:
        old = self.tasks[index]
        self.ended += new.state.terminal - old.state.terminal
        self.started += (new.state is not S.PENDING) - (old.state is not S.PENDING)
        self.tasks[index] = new
        self.tasks_changed = True

    def derived_state(self) -> JobState:
        """Where task events leave a job that no job-level event has ended."""
        if self.state is S.MERGING_RUNNING:
            return self.state
        if self.tasks and self.ended == len(self.tasks):
            return S.MERGING_QUEUED
        if self.started:
            return S.RUNNING
        return self.state

    def end(self, state: JobState, at: datetime, **changes: Any) -> None:
        self.view = _copy(self.view, end_time=self.view.end_time or at, **changes)
        self.state = state

    def freeze(self) -> JobView:
        """The draft as a view; the very same object when no event changed anything."""
        view = self.view
        if (self.tasks_changed or self.state is not view.state
                or self.event_count != view.event_count or self.updated_at != view.updated_at):
            view = self.view = _copy(
                view, state=self.state, updated_at=self.updated_at,
                event_count=self.event_count,
                tasks=tuple(self.tasks) if self.tasks_changed else view.tasks)
            self.tasks_changed = False
        return view


def _apply(draft: _Draft, event: Event) -> None:
    """Fold one event of a submitted job into its draft (the rules of the module docstring).

    Raises:
        KeyError, TypeError, ValueError: the payload lacks what the rule reads; the
            draft is unchanged.
    """
    if event.type == "JobSubmitted":
        return  # a second submission of the same job changes nothing
    p = event.payload
    at = event.occurred_at
    updated_at = max(draft.updated_at, at)
    if event.type in TASK_EVENTS:
        index = p["task_index"]
        if 0 <= index < len(draft.tasks):
            old = draft.tasks[index]
            new = _task_update(old, event)
            if new is not old:
                draft.set_task(index, new)
        if not draft.state.terminal:
            draft.state = draft.derived_state()
    else:
        _job_event(draft, event, at)
    draft.updated_at = updated_at
    draft.event_count += 1


def _job_event(draft: _Draft, event: Event, at: datetime) -> None:
    """A job-level event (any other type changes nothing but the job's event count)."""
    p = event.payload
    view = draft.view
    if event.type == "BatchSubmitted":
        draft.view = _copy(view, cluster_name=p["cluster_name"],
                           array_job_id=p["array_job_id"],
                           collect_job_id=p["collect_job_id"], job_dir=p["job_dir"])
    elif event.type == "JobDeleted":
        if draft.state in DELETABLE:
            draft.view = _copy(view, deleted=True)
    elif draft.state.terminal:
        pass
    elif event.type == "CancelRequested" or event.type == "JobCanceled":
        for i, t in enumerate(draft.tasks):
            if not t.state.terminal:
                draft.set_task(i, _copy(t, state=S.CANCELED, end_time=at, estimated_time=None,
                                        last_update_time=at))
        draft.end(S.CANCELED, at)
    elif event.type == "MergeStarted":
        draft.state = S.MERGING_RUNNING
    elif event.type == "JobCompleted":
        draft.end(S.COMPLETED, at, result_ref=p["result_ref"], result_partial=False)
    elif event.type == "JobFailed":
        partial = p.get("partial_result_ref")
        draft.end(S.FAILED, at, failure_reason=p["reason"], result_ref=partial,
                  result_partial=partial is not None)
    elif event.type == "BatchSubmitFailed":
        draft.end(S.FAILED, at, failure_reason=p["reason"])
    elif event.type == "JobStateReported":
        _reported(draft, event)


def _reported(draft: _Draft, event: Event) -> None:
    """A worker's report: taken as it says, within the rules (no way back from terminal)."""
    p = event.payload
    state = S(p["job_state"])
    changes: dict[str, Any] = {}
    if p.get("log_ref"):
        changes["log_ref"] = p["log_ref"]
    if state is S.UNKNOWN:
        if changes:
            draft.view = _copy(draft.view, **changes)
        return
    if state.terminal:
        end_time = p.get("end_time")
        if end_time and not isinstance(end_time, str):
            raise TypeError(f"end_time must be a string, not {end_time!r}")
        end = parse_time(end_time) if end_time else event.occurred_at
        if state is S.FAILED and p.get("message"):
            changes["failure_reason"] = p["message"]
        draft.end(state, end, **changes)
        return
    if changes:
        draft.view = _copy(draft.view, **changes)
    draft.state = state


def apply(view: JobView | None, event: Event) -> JobView | None:
    """The job after one more event (pure; see the module docstring for the rules).

    Raises:
        KeyError, TypeError, ValueError: the payload lacks what the rule reads.
    """
    if view is None:
        return _submitted(event) if event.type == "JobSubmitted" else None
    draft = _Draft(view)
    _apply(draft, event)
    return draft.freeze()


class BatchFold:
    """Fold many events of many jobs, copying each job's view once, not once per event.

    The projector's unit: ``apply`` every event of a batch, then ``views()``. The result
    is exactly what :func:`apply` event by event gives (the same rules run on the same
    drafts; a property test checks it on generated histories). ``known`` is read, never
    changed: the views of jobs submitted before this fold.
    """

    def __init__(self, known: Mapping[str, JobView]) -> None:
        self._known = known
        self._drafts: dict[str, _Draft] = {}

    def apply(self, event: Event) -> bool:
        """Fold one event; False if its job was never submitted (the event is ignored).

        Raises:
            KeyError, TypeError, ValueError: the payload lacks what the rule reads;
                nothing is changed.
        """
        draft = self._drafts.get(event.job_id)
        if draft is not None:
            _apply(draft, event)
            return True
        view = self._known.get(event.job_id)
        if view is not None:
            draft = self._drafts[event.job_id] = _Draft(view)
            _apply(draft, event)
            return True
        if event.type != "JobSubmitted":
            return False
        self._drafts[event.job_id] = _Draft(_submitted(event))
        return True

    def views(self) -> dict[str, JobView]:
        """Every job an event reached, as it is now (an unchanged job: its very object)."""
        return {job_id: draft.freeze() for job_id, draft in self._drafts.items()}


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
