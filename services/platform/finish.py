"""Ending jobs the same way on every platform: merge, JobCompleted / JobFailed, JobCanceled.

* Every task ended: MergeStarted, the completed tasks' results merged
  (:func:`services.simulators.merge.merge_results`) and stored, then JobCompleted,
  or JobFailed with a partial result (some tasks failed) or with the reasons
  (all failed, or the merge itself failed). A job is never left MERGING.
* Cancel: once the platform knows its work is stopped, JobCanceled confirms it.

Every event written here has an id derived from (job, type), so a restarted
platform that writes one again is harmless: consumers drop the repeat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.artifacts.store import ArtifactError, ArtifactStore
from services.contract.envelope import Event, derived_event_id
from services.contract.jobs import JobState
from services.contract.kafka_io import EventProducer
from services.platform.follower import JobTrack
from services.projector.state import JobView, TaskView
from services.simulators.merge import MergeError, TaskResult, merge_results

log = logging.getLogger(__name__)

S = JobState


class JobFinisher:
    """Writes a platform's job-level events (ids derived, caused by the JobSubmitted)."""

    def __init__(self, producer: EventProducer, artifacts: ArtifactStore,
                 producer_name: str) -> None:
        self.producer = producer
        self.artifacts = artifacts
        self.producer_name = producer_name

    def caused(self, view: JobView, track: JobTrack, type: str, payload: dict[str, Any],
               *parts: object) -> Event:
        """An event of the job with an id derived from (job, type, *parts)."""
        event_id = derived_event_id(view.job_id, type, *parts)
        cause = track.submitted
        if cause is None:
            return Event(type=type, job_id=view.job_id, payload=payload,
                         producer=self.producer_name, event_id=event_id)
        return cause.caused(type, payload, self.producer_name, event_id=event_id)

    async def fail(self, view: JobView, track: JobTrack, reason: str) -> None:
        """End a job that cannot run at all (unreadable input, ...)."""
        track.finishing = True
        await self.producer.publish(self.caused(view, track, "JobFailed", {
            "reason": reason, "partial_result_ref": None}))
        log.info("%s: job %s failed: %s", self.producer_name, view.job_id, reason)

    async def confirm_cancel(self, view: JobView, track: JobTrack) -> None:
        """JobCanceled: every task of the canceled job is known to be stopped."""
        track.job_canceled = True
        requested_by = track.cancel.payload.get("requested_by") if track.cancel else None
        await self.producer.publish(self.caused(view, track, "JobCanceled", {
            "reason": f"canceled by {requested_by}" if requested_by else "canceled",
            "tasks_stopped": track.tasks_canceled,
        }))
        log.info("%s: job %s canceled (%d tasks stopped)", self.producer_name, view.job_id,
                 track.tasks_canceled)

    async def finish(self, view: JobView, track: JobTrack) -> None:
        """Merge the completed tasks and end the job (see the module docstring)."""
        track.finishing = True
        completed = [t for t in view.tasks if t.state is S.COMPLETED]
        failures = [t for t in view.tasks if t.state is not S.COMPLETED]
        if view.state is S.MERGING_QUEUED:
            await self.producer.publish(self.caused(view, track, "MergeStarted", {
                "completed_tasks": [t.task_index for t in completed]}))
        task_failures = [{"task_index": t.task_index,
                          "reason": t.failure_reason or f"task {t.state.value.lower()}"}
                         for t in failures]
        merged: dict[str, Any] | None = None
        result_ref: str | None = None
        if completed:
            try:
                merged = await self.merge(completed, partial=bool(failures))
                result_ref = await self.artifacts.aput_json(merged)
            except (ArtifactError, MergeError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s: merging job %s failed: %s", self.producer_name, view.job_id,
                            exc)
                await self.producer.publish(self.caused(view, track, "JobFailed", {
                    "reason": f"merging the task results failed: {exc}",
                    "task_failures": task_failures, "partial_result_ref": None}))
                return
        if merged is not None and result_ref is not None and not failures:
            await self.producer.publish(self.caused(view, track, "JobCompleted", {
                "result_ref": result_ref, "simulated_primaries": merged["simulated_primaries"],
                "tasks_merged": merged["tasks_merged"]}))
            log.info("%s: job %s completed", self.producer_name, view.job_id)
            return
        payload: dict[str, Any] = {"task_failures": task_failures,
                                   "partial_result_ref": result_ref}
        if merged is not None:
            payload["reason"] = f"{len(failures)} of {view.ntasks} tasks failed"
            payload["simulated_primaries"] = merged["simulated_primaries"]
        else:
            payload["reason"] = ("every task failed: " + failures[0].failure_reason
                                 if failures and failures[0].failure_reason
                                 else "every task failed")
        await self.producer.publish(self.caused(view, track, "JobFailed", payload))
        log.info("%s: job %s failed: %s", self.producer_name, view.job_id, payload["reason"])

    async def merge(self, completed: list[TaskView], *, partial: bool) -> dict[str, Any]:
        """The completed tasks' results merged (in a thread: it is CPU work).

        Raises:
            MergeError: a task has no result, or the results do not fit together.
            ArtifactError: a result cannot be read from the store.
        """
        results = []
        for task in completed:
            if task.result_ref is None:
                raise MergeError(f"task {task.task_index} completed without a result")
            document = await self.artifacts.aget_json(task.result_ref)
            results.append(TaskResult(task.simulated_primaries, document))
        merged = await asyncio.to_thread(merge_results, results)
        if partial:
            merged["partial"] = True
            merged["tasks_merged_indices"] = [t.task_index for t in completed]
        return merged
