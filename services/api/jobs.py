"""Submit, status and cancel (direct and batch), and the worker-facing update routes.

Every write is an event: a 202 means the event is durably in the log, never
that a row was written. Reads come from the read model (the projector's
fold), never re-derived here, so ``/jobs``, ``/jobs/direct`` and
``/jobs/batch`` agree with each other and with a replay of the log.

Worker routes (``POST /jobs``, ``POST /tasks``) authenticate with an update
key (:func:`services.api.auth.mint_update_key`): a JWT with its own secret,
scoped to one job, refused once the job is terminal. How ``POST /tasks``
updates become events:

* ``task_state: RUNNING`` on a pending task -> ``TaskStarted``;
* progress fields (``simulated_primaries``, ``requested_primaries``,
  ``estimated_time``) -> ``TaskProgress``;
* ``COMPLETED`` with a ``result_ref`` (sha256 of a stored result artifact, an
  extension of the original protocol) -> ``TaskCompleted``; ``COMPLETED``
  without one -> ``TaskProgress`` with all requested primaries done: the task
  completes when its result is registered by the platform (runner or SLURM
  bridge), since a completed task without a result could not be merged;
* ``FAILED`` -> ``TaskFailed``; ``CANCELED`` -> ``TaskCanceled``.
Reported ``start_time`` / ``end_time`` become the events' ``occurred_at``.

Editor input (``input_type: editor``, the project in ``input_json`` or
``sim_data``) is converted at submit (:mod:`services.converter`) for the
simulators that have a converter; a project that does not convert is a 400
naming its JSON path. The generated files are stored next to the project in
the input artifact, so every platform runs editor and files jobs alike.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets as pysecrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from services.api.auth import SECRETS, User, check_update_key, require_keycloak_user, require_user
from services.api.common import (
    API_SETTINGS,
    ARTIFACTS,
    PRODUCER,
    PRODUCER_NAME,
    http_date,
    missing_keys,
    query,
    read_object,
    required_job_id,
)
from services.api.errors import BadRequest, ServiceUnavailable, SubmissionFailed, reply
from services.api.readwait import WAITER, find_job, owned_job
from services.contract.envelope import Event, format_time, utc_now
from services.contract.errors import PublishFailed
from services.contract.jobs import CANCELABLE, JobState
from services.converter import TARGETS, ConversionError, convert
from services.engine.input import InputError, parse_inputs
from services.projector.state import JobView, TaskView
from services.settings import ApiSettings
from services.simulators.errors import BadInput
from services.simulators.registry import input_primaries
from services.slurm_bridge.errors import OptionRefused
from services.slurm_bridge.options import check_header, check_options, sbatch_lines

routes = web.RouteTableDef()

SIM_TYPES = ("shieldhit", "fluka", "geant4", "topas", "builtin")
MAX_NTASKS = 10_000
MAX_PRIMARIES = 2**53
MAX_TITLE = 1000
MAX_FILES = 1000
_HASH = re.compile(r"^[0-9a-f]{64}$")

# --- submission ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A validated submission body."""

    title: str
    sim_type: str
    input_type: str
    ntasks: int
    number_of_all_primaries: int
    input_object: dict[str, Any]
    batch_options: dict[str, Any] | None = None
    #: The body field that held an editor project (``input_json``, or ``sim_data`` as the
    #: jobs-endpoints document names it); conversion errors name paths from it.
    project_field: str = "input_json"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number_as_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _check_files(files: object) -> dict[str, str]:
    if not isinstance(files, dict) or not files:
        raise BadRequest("Wrong data provided: input_files must be a non-empty object "
                         "mapping file names to their text")
    if len(files) > MAX_FILES:
        raise BadRequest(f"Wrong data provided: more than {MAX_FILES} input files")
    for name, content in files.items():
        if not name or len(name) > 255 or "/" in name or "\\" in name or "\0" in name \
                or name in (".", ".."):
            raise BadRequest(f"Wrong data provided: bad input file name {name[:80]!r}")
        if not isinstance(content, str):
            raise BadRequest(f"Wrong data provided: input file {name[:80]!r} must be text")
    return files


def editor_primaries(project: dict[str, Any], field: str = "input_json") -> int:
    """N from the editor project's ``beam.numberOfParticles``."""
    beam = project.get("beam")
    value = beam.get("numberOfParticles") if isinstance(beam, dict) else None
    number = _number_as_int(value)
    path = f"{field}.beam.numberOfParticles"
    if number is None:
        raise BadRequest(f"Wrong data provided: {path} must be an integer", path=path)
    if number < 1 or number > MAX_PRIMARIES:
        raise BadRequest(f"Wrong data provided: {path}: the number of primaries must be "
                         f"between 1 and {MAX_PRIMARIES}, got {str(number)[:30]}", path=path)
    return number


def editor_files(sub: Submission) -> dict[str, str]:
    """The simulator input files of an editor submission (CPU-bound: run it in a thread).

    Raises:
        BadRequest: the project cannot be converted; the message and ``path`` name the
            offending part of the project.
    """
    try:
        return convert(sub.input_object["input_json"], sub.sim_type,
                       root=sub.project_field).files
    except ConversionError as exc:
        raise BadRequest(f"Wrong data provided: {exc}", path=exc.path) from None


_BATCH_KEYS = {"cluster_name", "slurm_options", "array_header", "array_options",
               "collect_header", "collect_options"}


def _slurm_options(name: str, value: object) -> dict[str, str]:
    """Options checked by the SLURM bridge's allow-list (the bridge checks them again)."""
    try:
        return check_options(f"batch_options.{name}", value)
    except OptionRefused as exc:
        raise BadRequest(f"Wrong data provided: {exc}") from None


def _slurm_header(name: str, value: object) -> str:
    try:
        options = check_header(f"batch_options.{name}", value)
    except OptionRefused as exc:
        raise BadRequest(f"Wrong data provided: {exc}") from None
    return "\n".join(sbatch_lines(options))


def batch_options(raw: object, api: ApiSettings) -> dict[str, Any]:
    """Validated batch options with the cluster resolved (the bridge's allow-list)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadRequest("Wrong data provided: batch_options must be an object")
    unknown = set(raw) - _BATCH_KEYS
    if unknown:
        raise BadRequest(f"Wrong data provided: unknown batch_options keys {sorted(unknown)}")
    if not api.clusters:
        raise BadRequest("No clusters are available")
    wanted = raw.get("cluster_name")
    if wanted is not None and not isinstance(wanted, str):
        raise BadRequest("Wrong data provided: batch_options.cluster_name must be a string")
    if wanted in (None, "", "default"):
        cluster = api.clusters[0]
    else:
        matches = [c for c in api.clusters if c.name == wanted]
        if not matches:
            raise BadRequest(f"Unknown cluster: {wanted[:100]}")
        cluster = matches[0]
    return {
        "cluster_name": cluster.name,
        "slurm_options": _slurm_options("slurm_options", raw.get("slurm_options")),
        "array_header": _slurm_header("array_header", raw.get("array_header")),
        "array_options": _slurm_options("array_options", raw.get("array_options")),
        "collect_header": _slurm_header("collect_header", raw.get("collect_header")),
        "collect_options": _slurm_options("collect_options", raw.get("collect_options")),
    }


def parse_submission(body: dict[str, Any], api: ApiSettings, *, batch: bool) -> Submission:
    """Validate a submission body completely (every failure is a 400 naming the problem)."""
    missing_keys(body, ("sim_type", "ntasks", "input_type"))
    sim_type, input_type, ntasks = body["sim_type"], body["input_type"], body["ntasks"]
    if not isinstance(sim_type, str) or sim_type not in SIM_TYPES:
        raise BadRequest(f"Wrong data provided: unknown sim_type {str(sim_type)[:40]!r}; "
                         f"expected one of {', '.join(SIM_TYPES)}")
    if input_type not in ("editor", "files"):
        raise BadRequest("Wrong data provided: input_type must be 'editor' or 'files'")
    if not _is_int(ntasks):
        raise BadRequest("Wrong data provided: ntasks must be an integer")
    title = body.get("title", "")
    if title is None:
        title = ""
    if not isinstance(title, str) or len(title) > MAX_TITLE:
        raise BadRequest(f"Wrong data provided: title must be a string of at most "
                         f"{MAX_TITLE} characters")
    input_object: dict[str, Any]
    field = "input_json"
    if input_type == "editor":
        field = "input_json" if "input_json" in body or "sim_data" not in body else "sim_data"
        project = body.get(field)
        if not isinstance(project, dict):
            raise BadRequest(f"Wrong data provided: input_type 'editor' needs an {field} "
                             "object (the editor project)")
        if sim_type not in TARGETS:
            raise BadRequest(f"Wrong data provided: sim_type {sim_type!r} cannot run editor "
                             f"input: there is no editor converter for it (editor projects "
                             f"run on {', '.join(TARGETS)}); submit input_type 'files' with "
                             "its own input files")
        primaries = editor_primaries(project, field)
        input_object = {"input_type": "EDITOR", "input_json": project, "input_files": {}}
    else:
        if "input_files" not in body:
            raise BadRequest("Wrong data provided: input_type 'files' needs input_files")
        files = _check_files(body["input_files"])
        if sim_type == "builtin":  # refuse at once what the built-in engine cannot run
            try:
                parse_inputs(files)
            except InputError as exc:
                raise BadRequest(f"Wrong data provided: {exc}", file=exc.file, line=exc.line,
                                 card=exc.card) from exc
        try:  # read as the job's simulator reads its input (its plug-in knows the format)
            primaries = input_primaries(sim_type, files)
        except BadInput as exc:
            raise BadRequest(f"Wrong data provided: cannot find the number of primaries: "
                             f"{exc}") from exc
        input_object = {"input_type": "FILES", "input_files": files}
    if primaries < 1 or primaries > MAX_PRIMARIES:
        raise BadRequest(f"Wrong data provided: the number of primaries must be between 1 and "
                         f"{MAX_PRIMARIES}, got {primaries}")
    input_object["number_of_all_primaries"] = primaries
    ntasks = min(max(int(ntasks), 1), primaries)
    if ntasks > MAX_NTASKS:
        raise BadRequest(f"Wrong data provided: ntasks must not exceed {MAX_NTASKS}")
    options = batch_options(body.get("batch_options"), api) if batch else None
    return Submission(title=title, sim_type=sim_type, input_type=input_type, ntasks=ntasks,
                      number_of_all_primaries=primaries, input_object=input_object,
                      batch_options=options, project_field=field)


def new_job_id(platform: str) -> str:
    """``YYYYMMDD-HHMMSS-<uuid4><DIRECT|BATCH>``; the time is UTC (the original used local)."""
    return f"{utc_now():%Y%m%d-%H%M%S}-{uuid.uuid4()}{platform.upper()}"


async def publish(request: web.Request, events: list[Event]) -> None:
    """Write events to the log, or fail with 503 (nothing else was written)."""
    try:
        await request.app[PRODUCER].publish_many(events)
    except PublishFailed as exc:
        raise ServiceUnavailable("The job log is unavailable, try again later") from exc


async def _submit(request: web.Request, user: User, platform: str) -> web.Response:
    body = await read_object(request)
    sub = parse_submission(body, request.app[API_SETTINGS], batch=platform == "batch")
    if sub.input_type == "editor":
        sub.input_object["input_files"] = await asyncio.to_thread(editor_files, sub)
    input_ref = await request.app[ARTIFACTS].aput_json(sub.input_object)
    job_id = new_job_id(platform)
    payload: dict[str, Any] = {
        "owner": user.owner, "title": sub.title, "sim_type": sub.sim_type,
        "platform": platform, "input_type": sub.input_type, "ntasks": sub.ntasks,
        "number_of_all_primaries": sub.number_of_all_primaries,
        "base_seed": pysecrets.randbelow(2**31), "input_ref": input_ref,
    }
    if sub.batch_options is not None:
        payload["batch_options"] = sub.batch_options
    event = Event(type="JobSubmitted", job_id=job_id, payload=payload, producer=PRODUCER_NAME)
    await publish(request, [event])
    request.app[WAITER].published(job_id)
    if platform == "batch":
        return await _batch_submitted(request, job_id)
    return reply("Task started", 202, job_id=job_id)


async def _batch_submitted(request: web.Request, job_id: str) -> web.Response:
    """202 once the SLURM bridge has submitted the job, 500 with its reason if it could not.

    The wait is bounded (``SIMJOBS_API_BATCH_SUBMIT_WAIT_MS``): without an answer by
    then (the bridge is down or slow) the job stays accepted and waits for submission,
    as in the original. A job that failed to submit stays in the log and in the user's
    list as FAILED with the reason (the same whether it failed within the wait or after
    it); the 500 names it so it can be looked at or deleted.

    Raises:
        SubmissionFailed: the bridge reported BatchSubmitFailed (SSH refused, sbatch error).
    """
    bound = request.app[API_SETTINGS].batch_submit_wait_seconds
    if bound > 0 and await request.app[WAITER].wait(job_id, submitted=True,
                                                    bound_seconds=bound):
        job = await find_job(request.app[WAITER], job_id)
        if job is not None and job.state is JobState.FAILED:
            raise SubmissionFailed(f"Job submission failed: {job.failure_reason}",
                                   job_id=job_id)
        if job is not None and job.array_job_id is not None:
            return reply("Batch job submitted", 202, job_id=job_id)
    return reply("Job waiting for submission", 202, job_id=job_id)


@routes.post("/jobs/direct")
async def submit_direct(request: web.Request) -> web.Response:
    """POST /jobs/direct."""
    return await _submit(request, await require_user(request), "direct")


@routes.post("/jobs/batch")
async def submit_batch(request: web.Request) -> web.Response:
    """POST /jobs/batch."""
    return await _submit(request, await require_keycloak_user(request), "batch")


# --- status and cancel --------------------------------------------------------------------


def task_status(task: TaskView, job: JobView) -> dict[str, Any]:
    """One entry of ``job_tasks_status`` (``task_id`` is the 1-based task number)."""
    entry: dict[str, Any] = {
        "task_id": task.task_index + 1,
        "task_state": task.state.value,
        "requested_primaries": task.requested_primaries,
        "simulated_primaries": task.simulated_primaries,
        "last_update_time": http_date(task.last_update_time or job.updated_at),
    }
    if task.estimated_time:
        seconds = task.estimated_time
        entry["estimated_time"] = {"hours": seconds // 3600, "minutes": seconds % 3600 // 60,
                                   "seconds": seconds % 60}
    if task.start_time is not None:
        entry["start_time"] = http_date(task.start_time)
    if task.end_time is not None:
        entry["end_time"] = http_date(task.end_time)
    return entry


def status_body(job: JobView) -> dict[str, Any]:
    """The state fields of a status response."""
    return {"job_state": job.state.value,
            "job_tasks_status": [task_status(t, job) for t in job.tasks]}


async def _status(request: web.Request, user: User, platform: str | None) -> web.Response:
    job_id = required_job_id(query(request, ("job_id",)))
    job = await owned_job(request, user.owner, job_id, platform)
    return reply("Job status", **status_body(job))


async def _cancel(request: web.Request, user: User, platform: str) -> web.Response:
    job_id = required_job_id(query(request, ("job_id",)))
    job = await owned_job(request, user.owner, job_id, platform)
    if job.state not in CANCELABLE:
        return reply(f"Cannot cancel job which is in {job.state.value} state",
                      job_state=job.state.value)
    event = Event(type="CancelRequested", job_id=job_id, payload={"requested_by": user.owner},
                  producer=PRODUCER_NAME)
    await publish(request, [event])
    # Read your writes: a status read right after this shows the cancel (bounded wait).
    await request.app[WAITER].wait(job_id, {s.value for s in JobState if s.terminal})
    return reply("Cancelled sucessfully" if platform == "direct" else "Job canceled")


@routes.get("/jobs/direct")
async def status_direct(request: web.Request) -> web.Response:
    """GET /jobs/direct."""
    return await _status(request, await require_user(request), "direct")


@routes.get("/jobs/batch")
async def status_batch(request: web.Request) -> web.Response:
    """GET /jobs/batch."""
    return await _status(request, await require_keycloak_user(request), "batch")


@routes.get("/jobs")
async def status_any(request: web.Request) -> web.Response:
    """GET /jobs."""
    return await _status(request, await require_user(request), None)


@routes.delete("/jobs/direct")
async def cancel_direct(request: web.Request) -> web.Response:
    """DELETE /jobs/direct."""
    return await _cancel(request, await require_user(request), "direct")


@routes.delete("/jobs/batch")
async def cancel_batch(request: web.Request) -> web.Response:
    """DELETE /jobs/batch."""
    return await _cancel(request, await require_keycloak_user(request), "batch")


# --- worker routes ------------------------------------------------------------------------


def worker_time(value: object, name: str) -> datetime:
    """A worker's timestamp: ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (naive = UTC) or ISO-8601."""
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest(f"Wrong data provided: {name} must be a date-time string")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Wrong data provided: {name} is not a date-time: {value!r}") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment > utc_now() + timedelta(minutes=5):
        raise BadRequest(f"Wrong data provided: {name} is in the future")
    return moment


async def _worker_job(request: web.Request, job_id: object, key: object) -> JobView:
    if not isinstance(job_id, str) or not job_id:
        raise BadRequest("Wrong data provided: the job id must be a string")
    check_update_key(key, job_id, request.app[SECRETS])
    job = await find_job(request.app[WAITER], job_id)
    if job is None:
        raise BadRequest(f"Simulation {job_id} does not exist")
    if job.state.terminal:
        raise BadRequest(f"Invalid update key: job is already {job.state.value}")
    return job


def _state(value: object, name: str) -> JobState:
    if not isinstance(value, str) or value not in JobState.__members__:
        raise BadRequest(f"Wrong data provided: unknown {name} {str(value)[:40]!r}")
    return JobState(value)


@routes.post("/jobs", name="worker_job_update")
async def worker_job_update(request: web.Request) -> web.Response:
    """POST /jobs."""
    body = await read_object(request)
    missing_keys(body, ("sim_id", "update_key"))
    job = await _worker_job(request, body["sim_id"], body["update_key"])
    payload: dict[str, Any] = {}
    if "job_state" in body:
        payload["job_state"] = _state(body["job_state"], "job_state").value
    if body.get("end_time") is not None:
        payload["end_time"] = format_time(worker_time(body["end_time"], "end_time"))
    log = body.get("log")
    if log is not None:
        if not isinstance(log, dict):
            raise BadRequest("Wrong data provided: log must be an object")
        payload["log_ref"] = await request.app[ARTIFACTS].aput_json(log)
        text = log.get("error") or log.get("message")
        if isinstance(text, str) and text:
            payload["message"] = text[:2000]
        payload.setdefault("job_state", JobState.UNKNOWN.value)
    if "job_state" in payload:
        await publish(request, [Event(type="JobStateReported", job_id=job.job_id,
                                      payload=payload, producer=PRODUCER_NAME)])
    return reply("Task updated", 202)


_TASK_KEYS = {"simulation_id", "task_id", "update_key", "update_dict"}


def _count(update: dict[str, Any], name: str) -> int | None:
    value = update.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 0 or value > MAX_PRIMARIES:
        raise BadRequest(f"Wrong data provided: {name} must be a non-negative integer")
    return int(value)


def task_events(job: JobView, task: TaskView, update: dict[str, Any],
                store_has: Any) -> list[Event]:
    """The events one ``update_dict`` stands for (see the module docstring)."""
    index = task.task_index
    state = _state(update["task_state"], "task_state") if update.get("task_state") else None
    requested = _count(update, "requested_primaries") or task.requested_primaries
    simulated = _count(update, "simulated_primaries")
    estimated = _count(update, "estimated_time")
    start = worker_time(update["start_time"], "start_time") if update.get("start_time") else None
    end = worker_time(update["end_time"], "end_time") if update.get("end_time") else None
    result_ref = update.get("result_ref")
    if result_ref is not None and (not isinstance(result_ref, str)
                                   or not _HASH.match(result_ref) or not store_has(result_ref)):
        raise BadRequest("Wrong data provided: result_ref is not a stored artifact")
    now = utc_now()

    def ev(type_: str, at: datetime | None, **payload: Any) -> Event:
        return Event(type=type_, job_id=job.job_id, payload={"task_index": index, **payload},
                     producer=PRODUCER_NAME, occurred_at=at or now)

    events: list[Event] = []
    if state is JobState.RUNNING and task.state is JobState.PENDING:
        events.append(ev("TaskStarted", start, requested_primaries=requested, worker="http"))
    if state is JobState.COMPLETED and result_ref is not None:
        events.append(ev("TaskCompleted", end, requested_primaries=requested,
                         simulated_primaries=simulated or requested, result_ref=result_ref))
    elif state is JobState.COMPLETED:
        events.append(ev("TaskProgress", end, requested_primaries=requested,
                         simulated_primaries=requested, estimated_time=None))
    elif state is JobState.FAILED:
        message = update.get("message")
        reason = message[:2000] if isinstance(message, str) and message else \
            "the worker reported the task failed"
        extra = {} if simulated is None else {"simulated_primaries": simulated}
        events.append(ev("TaskFailed", end, reason=reason, **extra))
    elif state is JobState.CANCELED:
        events.append(ev("TaskCanceled", end, reason="the worker reported the task canceled"))
    elif simulated is not None or estimated is not None or "requested_primaries" in update:
        events.append(ev("TaskProgress", None, requested_primaries=requested,
                         simulated_primaries=simulated if simulated is not None
                         else task.simulated_primaries,
                         estimated_time=estimated))
    return events


@routes.post("/tasks")
async def worker_task_update(request: web.Request) -> web.Response:
    """POST /tasks."""
    body = await read_object(request)
    if set(body) != _TASK_KEYS:
        missing = _TASK_KEYS - set(body)
        if missing:
            missing_keys(body, _TASK_KEYS)
        raise BadRequest(f"Unexpected keys in JSON payload: {sorted(set(body) - _TASK_KEYS)}")
    job = await _worker_job(request, body["simulation_id"], body["update_key"])
    task_id, update = body["task_id"], body["update_dict"]
    if not _is_int(task_id) or not 1 <= task_id <= len(job.tasks):
        raise BadRequest(f"Task {str(task_id)[:40]} does not exist")
    if not isinstance(update, dict):
        raise BadRequest("Wrong data provided: update_dict must be an object")
    events = task_events(job, job.tasks[task_id - 1], update, request.app[ARTIFACTS].exists)
    if events:
        await publish(request, events)
    return reply("Task updated", 202)
