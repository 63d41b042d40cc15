"""What a live stream tells a browser about a job: its state after one event, or all of it.

The task entries are exactly those of ``GET /jobs/direct`` (:func:`services.api.jobs.task_status`),
so a page that polls and a page that listens see the same numbers. An update carries
only the tasks the event changed (a 10,000-task job must not resend every task on every
progress line); a snapshot carries them all. Both carry the job's totals of requested
and simulated primaries, which is what a progress bar needs.
"""

from __future__ import annotations

from typing import Any

from services.api.common import http_date
from services.api.jobs import task_status
from services.contract.envelope import Event, format_time
from services.projector.state import TASK_EVENTS, JobView, TaskView


def job_fields(view: JobView) -> dict[str, Any]:
    """The job-level fields of every message."""
    return {
        "job_id": view.job_id,
        "job_state": view.state.value,
        "requested_primaries": sum(t.requested_primaries for t in view.tasks),
        "simulated_primaries": sum(t.simulated_primaries for t in view.tasks),
        "end_time": http_date(view.end_time),
        "deleted": view.deleted,
    }


def changed_tasks(before: JobView | None, after: JobView, event: Event) -> list[TaskView]:
    """The tasks whose view an event replaced (the fold copies only what changes)."""
    if before is None or len(before.tasks) != len(after.tasks):
        return list(after.tasks)
    if event.type in TASK_EVENTS:
        index = event.payload.get("task_index")
        if isinstance(index, int) and 0 <= index < len(after.tasks) \
                and after.tasks[index] is not before.tasks[index]:
            return [after.tasks[index]]
        return []
    return [new for old, new in zip(before.tasks, after.tasks, strict=True) if new is not old]


def update(before: JobView | None, after: JobView, event: Event, partition: int,
           offset: int, *, final: bool) -> dict[str, Any]:
    """The message for one event: the job after it, the tasks it changed, and the event.

    ``final`` says that the job's stream ends with this message (the job reached a
    terminal state, or was deleted).
    """
    return {
        **job_fields(after),
        "final": final,
        "event": {"type": event.type, "event_id": event.event_id,
                  "occurred_at": format_time(event.occurred_at),
                  "partition": partition, "offset": offset},
        "job_tasks_status": [task_status(t, after) for t in changed_tasks(before, after, event)],
    }


def snapshot(view: JobView, *, final: bool) -> dict[str, Any]:
    """The whole job as of a position (sent when a stream starts without Last-Event-ID)."""
    return {**job_fields(view), "final": final, "event": None,
            "job_tasks_status": [task_status(t, view) for t in view.tasks]}
