"""A job view as plain JSON, and back: how fixtures and bundles store an expected state.

Times are written in the wire format of events (:func:`services.contract.envelope.format_time`),
states by name, so a stored view reads the same in any release and compares field by field.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from services.contract.envelope import format_time, parse_time
from services.contract.jobs import JobState
from services.projector.state import JobView, TaskView

_JOB_TIMES = frozenset(f.name for f in fields(JobView) if "datetime" in str(f.type))
_TASK_TIMES = frozenset(f.name for f in fields(TaskView) if "datetime" in str(f.type))


def _out(value: Any) -> Any:
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, datetime):
        return format_time(value)
    return value


def task_to_json(task: TaskView) -> dict[str, Any]:
    """One task view as JSON data."""
    return {f.name: _out(getattr(task, f.name)) for f in fields(TaskView)}


def view_to_json(view: JobView) -> dict[str, Any]:
    """A job view (with its tasks) as JSON data."""
    data = {f.name: _out(getattr(view, f.name)) for f in fields(JobView) if f.name != "tasks"}
    data["tasks"] = [task_to_json(t) for t in view.tasks]
    return data


def _times(data: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {k: parse_time(v) if k in names and v is not None else v for k, v in data.items()}


def view_from_json(data: dict[str, Any]) -> JobView:
    """The inverse of :func:`view_to_json`.

    Raises:
        KeyError, TypeError, ValueError: the data is not a stored view.
    """
    job = _times({k: v for k, v in data.items() if k != "tasks"}, _JOB_TIMES)
    job["state"] = JobState(job["state"])
    tasks = []
    for raw in data["tasks"]:
        task = _times(dict(raw), _TASK_TIMES)
        task["state"] = JobState(task["state"])
        tasks.append(TaskView(**task))
    return JobView(**job, tasks=tuple(tasks))
