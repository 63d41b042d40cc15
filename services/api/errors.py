"""Domain errors of the REST API and the one middleware that turns them into JSON.

Handlers raise; :func:`error_middleware` owns the error contract: every error
body is ``{"message": ...}`` (plus optional extra keys), unknown exceptions
become ``500 Internal server error`` and are logged with their traceback.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.contract import jsonio
from services.projector.transactions import transient

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Messages the framework produces in the original API (kept for compatibility).
NOT_UNDERSTOOD = "The browser (or proxy) sent a request that this server could not understand."
METHOD_NOT_ALLOWED = "The method is not allowed for the requested URL."
DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly."


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response (:func:`services.contract.jsonio.dumps`: a tenth of ``json.dumps``)."""
    return web.Response(body=jsonio.dumps(body), status=status,
                        content_type="application/json", charset="utf-8")


def reply(message: str, status: int = 200, **extra: Any) -> web.Response:
    """The API's flat envelope: ``message`` (HTML-escaped, as the original does) plus fields."""
    body: dict[str, Any] = {"message": html.escape(message)}
    body.update(extra)
    return json_response(body, status)


class ApiError(Exception):
    """An error with an HTTP status and a user-facing message."""

    status = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def response(self) -> web.Response:
        return reply(self.message, self.status, **self.extra)


class BadRequest(ApiError):
    """400."""

    status = 400


class Unauthorized(ApiError):
    """401: no credentials."""

    status = 401


class Forbidden(ApiError):
    """403: credentials refused."""

    status = 403


class NotFound(ApiError):
    """404."""

    status = 404


class PayloadTooLarge(ApiError):
    """413."""

    status = 413


class TooManyRequests(ApiError):
    """429."""

    status = 429


class ServiceUnavailable(ApiError):
    """503: a backing service is down; retry later."""

    status = 503


class SubmissionFailed(ApiError):
    """500: the job was accepted but the platform could not submit it (SSH, sbatch)."""

    status = 500


class JobNotFound(NotFound):
    """Unknown job, or a job of another user (the two are indistinguishable on purpose)."""

    def __init__(self) -> None:
        super().__init__("Job with provided ID does not exist")


class WrongParameters(BadRequest):
    """Query parameters that the route does not know or cannot parse."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("Wrong parameters", **errors)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors, aiohttp's HTTP exceptions and crashes to JSON bodies."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 405:
            message = METHOD_NOT_ALLOWED
        elif exc.status == 413:
            message = "Request body too large"
        elif exc.status == 404:
            message = "Not found"
        else:
            message = exc.reason
        response = json_response({"message": message}, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        if transient(exc):  # the read model's server is down or restarting
            log.warning("read model unavailable on %s %s: %s", request.method, request.path,
                        type(exc).__name__)
            return ServiceUnavailable(DATABASE_UNAVAILABLE).response()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"message": "Internal server error"}, 500)
