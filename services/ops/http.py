"""``/metrics``, ``/healthz`` and ``/readyz``: routes for the API, a small server for the rest.

The API adds :data:`routes` to its own application; the projector, the runner and the
usage worker, which are not HTTP servers, run :class:`OpsServer` on the port their
settings name (``SIMJOBS_<SERVICE>_METRICS_PORT``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from services.ops.health import Health
from services.ops.logs import job_context
from services.ops.metrics import (
    CONTENT_TYPE_LATEST,
    HTTP_DURATION,
    HTTP_REQUESTS,
    exposition,
    labelled,
)
from services.settings import OpsSettings

log = logging.getLogger(__name__)

HEALTH = web.AppKey("health", Health)

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text exposition of this process."""
    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is alive."""
    return web.json_response({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 when started and every dependency answered, else 503."""
    ready, detail = request.app[HEALTH].ready()
    return web.json_response({"status": "ready" if ready else "not ready", **detail},
                             status=200 if ready else 503)


class OpsServer:
    """The three routes on their own port, in the service's event loop."""

    def __init__(self, settings: OpsSettings, health: Health, service: str) -> None:
        self.settings = settings
        self.health = health
        self.service = service
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen (nothing when the port is negative).

        Raises:
            OSError: the port is taken.
        """
        if self.settings.port < 0:
            return
        app = web.Application()
        app[HEALTH] = self.health
        app.add_routes(routes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.settings.port
        log.info("%s: metrics and health on http://%s:%d/metrics", self.service,
                 self.settings.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_label(request: web.Request) -> str:
    """The route template a request matched (``/jobs/direct``), never its raw path."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "(unmatched)"


_REQUESTS = labelled(HTTP_REQUESTS)
_DURATION = labelled(HTTP_DURATION)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by route and status and time it; log lines name its job.

    Outermost, so it sees the status the client gets (the error middleware inside it
    has turned exceptions into responses already).
    """
    started = time.perf_counter()
    status = 500
    try:
        with job_context(request.query.get("job_id")):
            response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route, method = route_label(request), request.method
        _REQUESTS(route, method, str(status)).inc()
        _DURATION(route, method).observe(time.perf_counter() - started)


class JobAccessLogger(AbstractAccessLogger):
    """aiohttp's access log as structured fields, with the request's ``job_id`` if any."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %.1f ms", request.method, request.path, response.status, time * 1000,
            extra={"job_id": request.query.get("job_id"), "method": request.method,
                   "path": request.path, "status": response.status,
                   "duration_ms": round(time * 1000, 2), "remote": request.remote})
