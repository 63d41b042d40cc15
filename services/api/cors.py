"""CORS for the configured UI origins, with credentials (the UI sends cookies)."""

from __future__ import annotations

from aiohttp import web

from services.api.common import API_SETTINGS
from services.api.errors import Handler

ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOWED_HEADERS = "Content-Type, Authorization"


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo an allowed ``Origin`` (never ``*``) and answer preflights for every path."""
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin in request.app[API_SETTINGS].cors_origins
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=200)
        response.headers["Allow"] = ALLOWED_METHODS
        if allowed and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = await handler(request)
    if allowed and origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = "Content-Length, Content-Range"
    response.headers.add("Vary", "Origin")
    return response
