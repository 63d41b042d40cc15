"""What every route module shares: typed app keys, body and query parsing, time formats."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.errors import NOT_UNDERSTOOD, BadRequest, PayloadTooLarge, WrongParameters
from services.artifacts.store import ArtifactStore
from services.contract import jsonio
from services.contract.kafka_io import EventProducer
from services.settings import ApiSettings, Settings

SETTINGS = web.AppKey("settings", Settings)
API_SETTINGS = web.AppKey("api_settings", ApiSettings)
PRODUCER = web.AppKey("producer", EventProducer)
ENGINE = web.AppKey("engine", AsyncEngine)
ARTIFACTS = web.AppKey("artifacts", ArtifactStore)

#: The ``producer`` field of every event this service writes.
PRODUCER_NAME = "api"


def http_date(moment: datetime | None) -> str | None:
    """RFC 1123 / HTTP-date in GMT, second resolution (``Tue, 02 Jan 2024 03:04:05 GMT``)."""
    if moment is None:
        return None
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


async def read_json(request: web.Request) -> Any:
    """The request body parsed as JSON (any content type, like the original).

    Raises:
        PayloadTooLarge: the body is over the configured limit.
        BadRequest: the body is not JSON.
    """
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge("Request body too large") from exc
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """A JSON document read exactly as ``json.loads`` reads it, NaN and Infinity refused.

    Raises:
        BadRequest: not JSON.
    """
    try:
        return jsonio.loads(raw, constants=False)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(NOT_UNDERSTOOD) from exc


async def read_object(request: web.Request) -> dict[str, Any]:
    """A JSON object body; ``{}`` is ``No JSON in body`` and a non-object is wrong data."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("Wrong data provided: the body must be a JSON object")
    if not body:
        raise BadRequest("No JSON in body")
    return body


def missing_keys(body: dict[str, Any], required: Iterable[str]) -> None:
    """Raise the original's ``Missing keys in JSON payload: {...}`` if any key is absent."""
    missing = {k for k in required if k not in body}
    if missing:
        raise BadRequest(f"Missing keys in JSON payload: {_set_repr(missing)}")


def _set_repr(keys: set[str]) -> str:
    return "{" + ", ".join(repr(k) for k in sorted(keys)) + "}"


def query(request: web.Request, allowed: Iterable[str]) -> dict[str, str]:
    """The query parameters, each at most once; anything unknown is ``400 Wrong parameters``."""
    allowed = set(allowed)
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for key in request.query:
        if key not in allowed:
            errors[key] = ["Unknown field."]
        elif len(request.query.getall(key)) > 1:
            errors[key] = ["Given more than once."]
        else:
            values[key] = request.query[key]
    if errors:
        raise WrongParameters(errors)
    return values


def required_job_id(params: dict[str, str]) -> str:
    """The ``job_id`` parameter, which every job route needs."""
    job_id = params.get("job_id")
    if not job_id:
        raise WrongParameters({"job_id": ["Missing data for required field."]})
    return job_id


def int_param(params: dict[str, str], name: str, default: int) -> int:
    """An integer query parameter (``400 Wrong parameters`` if it is not one)."""
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise WrongParameters({name: ["Not a valid integer."]}) from None
