"""Results, inputs, logs and estimator metadata: read model + artifact store, read-only.

A job's ``result_ref`` names a JSON artifact ``{"estimators": [{"name",
"metadata", "pages": [{"metadata": {"page_number", ...}, "dimensions",
"data", "axis_dim1", ...}]}]}``; pages are served by page number.

Estimator order: for an editor job, the order of the project's outputs (the
UI matches outputs to estimators by position), each estimator being the one
named like its output (the converter makes the output name the estimator's
file name); estimators no output names follow in stored order. For a files
job, stored order.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.api.auth import require_user
from services.api.common import ARTIFACTS, int_param, query, required_job_id
from services.api.errors import NotFound, WrongParameters, reply
from services.api.readwait import owned_job
from services.artifacts.store import ArtifactError
from services.converter import output_names

routes = web.RouteTableDef()

MAX_PAGES = 100_000


async def _artifact(request: web.Request, ref: str | None, missing: str) -> Any:
    if not ref:
        raise NotFound(missing)
    try:
        return await request.app[ARTIFACTS].aget_json(ref)
    except (ArtifactError, ValueError) as exc:
        raise NotFound(missing) from exc


def page_number(page: Any, default: int) -> int:
    """A page's number from its metadata (the simulators write it as text)."""
    try:
        return int(page["metadata"]["page_number"])
    except (KeyError, TypeError, ValueError):
        return default


def _sorted_pages(estimator: dict[str, Any]) -> list[dict[str, Any]]:
    pages = [p for p in estimator.get("pages") or [] if isinstance(p, dict)]
    return [p for _, p in sorted(enumerate(pages), key=lambda ip: page_number(ip[1], ip[0]))]


def parse_page_numbers(text: str) -> list[int]:
    """``0-2,5`` -> ``[0, 1, 2, 5]`` (inclusive ranges, de-duplicated, sorted)."""
    numbers: set[int] = set()
    try:
        for part in text.split(","):
            first, sep, last = part.strip().partition("-")
            low = int(first)
            high = int(last) if sep else low
            if low < 0 or high < low or high - low > MAX_PAGES or len(numbers) > MAX_PAGES:
                raise ValueError(part)
            numbers.update(range(low, high + 1))
    except ValueError:
        raise WrongParameters({"page_numbers": ["Not a list of page numbers and ranges "
                                                "like 0-2,5."]}) from None
    return sorted(numbers)


def in_output_order(estimators: list[dict[str, Any]],
                    outputs: list[str]) -> list[dict[str, Any]]:
    """The estimators in the order of the project's outputs, matched by name.

    An output without an estimator is skipped; estimators that match no output
    keep their stored order after the matched ones. Nothing is dropped.
    """
    remaining = list(estimators)
    ordered = []
    for name in outputs:
        match = next((e for e in remaining if e.get("name") == name), None)
        if match is not None:
            ordered.append(match)
            remaining.remove(match)
    return ordered + remaining


async def _estimators(request: web.Request, missing: str,
                      allowed: tuple[str, ...]) -> tuple[str, list[dict[str, Any]]]:
    user = await require_user(request)
    params = query(request, allowed)
    job = await owned_job(request, user.owner, required_job_id(params))
    data = await _artifact(request, job.result_ref, missing)
    estimators = data.get("estimators") if isinstance(data, dict) else None
    if not isinstance(estimators, list) or not estimators:
        raise NotFound(missing)
    found = [e for e in estimators if isinstance(e, dict)]
    if job.input_type == "editor":
        stored = await _artifact(request, job.input_ref, missing)
        project = stored.get("input_json") if isinstance(stored, dict) else None
        if isinstance(project, dict):
            found = in_output_order(found, output_names(project))
    return job.job_id, found


@routes.get("/results")
async def results(request: web.Request) -> web.Response:
    """GET /results."""
    allowed = ("job_id", "estimator_name", "page_number", "page_numbers")
    job_id, estimators = await _estimators(request, "Results are unavailable", allowed)
    params = query(request, allowed)
    name = params.get("estimator_name")
    if name is None:
        full = [{"name": e.get("name"), "metadata": e.get("metadata", {}),
                 "pages": _sorted_pages(e)} for e in estimators]
        return reply(f"Results for simulation: {job_id}", estimators=full)
    matches = [e for e in estimators if e.get("name") == name]
    pages = _sorted_pages(matches[0]) if matches else []
    if "page_number" in params:
        wanted = int_param(params, "page_number", 0)
        found = [p for i, p in enumerate(pages) if page_number(p, i) == wanted]
        if not found:
            raise NotFound("Page not found")
        return reply("Page retrieved successfully", page=found[0])
    if "page_numbers" in params:
        wanted_set = set(parse_page_numbers(params["page_numbers"]))
        chosen = [p for i, p in enumerate(pages) if page_number(p, i) in wanted_set]
        return reply("Pages retrieved successfully", pages=chosen)
    if not matches:
        raise NotFound("Estimator not found")
    return reply(f"Estimator '{name}' for simulation: {job_id}", name=name,
                 metadata=matches[0].get("metadata", {}), pages=pages)


@routes.get("/estimators")
async def estimators_metadata(request: web.Request) -> web.Response:
    """GET /estimators."""
    _, estimators = await _estimators(request, "Pages metadata not found", ("job_id",))
    listing = []
    for estimator in estimators:
        pages = []
        for i, page in enumerate(_sorted_pages(estimator)):
            raw_meta = page.get("metadata")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            dimension = page.get("dimensions", meta.get("page_dimension", 0))
            pages.append({
                "page_number": page_number(page, i),
                "page_name": str(meta.get("page_name", meta.get("name", ""))),
                "page_dimension": int(str(dimension)) if str(dimension).isdigit() else 0,
            })
        listing.append({"name": estimator.get("name"), "pages_metadata": pages})
    return reply("Estimators metadata", estimators_metadata=listing)


@routes.get("/inputs")
async def inputs(request: web.Request) -> web.Response:
    """GET /inputs."""
    user = await require_user(request)
    job = await owned_job(request, user.owner, required_job_id(query(request, ("job_id",))))
    stored = await _artifact(request, job.input_ref, "Input of simulation is unavailable")
    return reply("Input of simulation", input=stored)


async def _log_texts(request: web.Request, ref: str, name: str) -> dict[str, str]:
    try:
        raw = await request.app[ARTIFACTS].aget_bytes(ref)
    except ArtifactError:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {name: raw.decode(errors="replace")}
    if isinstance(value, dict):
        return {f"{name}/{k}" if name != "job" else str(k):
                v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
    return {name: raw.decode(errors="replace")}


@routes.get("/logfiles")
async def logfiles(request: web.Request) -> web.Response:
    """GET /logfiles."""
    user = await require_user(request)
    job = await owned_job(request, user.owner, required_job_id(query(request, ("job_id",))))
    logs: dict[str, str] = {}
    if job.log_ref:
        logs.update(await _log_texts(request, job.log_ref, "job"))
    for task in job.tasks:
        if task.log_ref:
            logs.update(await _log_texts(request, task.log_ref, f"task_{task.task_index + 1}"))
    if not logs:
        raise NotFound("Logfiles are unavailable")
    return reply("Logfiles", logfiles=logs)
