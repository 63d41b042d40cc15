"""CORS for the configured UI origins, with credentials (the UI sends cookies)."""

from __future__ import annotations

from aiohttp import web

from services.api.common import API_SETTINGS
from services.api.errors import Handler

ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOWED_HEADERS = "Content-Type, Authorization"


def cors_headers(request: web.Request) -> dict[str, str]:
    """The headers that let an allowed ``Origin`` (never ``*``) read the response.

    A streamed response sends its headers before its handler returns, so it takes them
    from here instead of from the middleware.
    """
    origin = request.headers.get("Origin")
    if origin is None or origin not in request.app[API_SETTINGS].cors_origins:
        return {}
    return {"Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Expose-Headers": "Content-Length, Content-Range"}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo an allowed ``Origin`` and answer preflights for every path."""
    allowed = cors_headers(request)
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=200)
        response.headers["Allow"] = ALLOWED_METHODS
        if allowed and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = await handler(request)
    if response.prepared:
        return response  # a stream: its headers are already sent (with cors_headers)
    response.headers.update(allowed)
    response.headers.add("Vary", "Origin")
    return response
