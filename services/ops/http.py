"""``/metrics``, ``/healthz`` and ``/readyz``: routes for the API, a small server for the rest.

The API adds :data:`routes` to its own application; the projector, the runner and the
usage worker, which are not HTTP servers, run :class:`OpsServer` on the port their
settings name (``SIMJOBS_<SERVICE>_METRICS_PORT``).
"""

from __future__ import annotations

import logging

from aiohttp import web

from services.ops.health import Health
from services.ops.metrics import CONTENT_TYPE_LATEST, exposition
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
