"""The live page: a job's progress from its event stream, then its results as plots.

``GET /live?job_id=…`` serves a static page; its script (``/live/live.js``) logs in if
needed, follows ``GET /jobs/stream`` with an EventSource (same origin, so the session
cookie goes along) and, once the job has ended, fetches ``GET /results`` and plots each
page with Plotly: a line with error bars for 1-D pages (a depth-dose curve), a heatmap
for 2-D pages. Plotly comes from npm (``web/package.json``, pinned in its lock file,
installed by ``devstack/bootstrap.sh``) and is served from ``web/node_modules``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.api.errors import NotFound, ServiceUnavailable

routes = web.RouteTableDef()

ROOT = Path(__file__).resolve().parents[2]
STATIC = Path(__file__).resolve().parent / "static"
PLOTLY = ROOT / "web" / "node_modules" / "plotly.js-cartesian-dist-min" / "plotly-cartesian.min.js"

#: Scripts only from this origin; Plotly adds style elements, hence inline styles.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
ASSETS = {"live.js": "text/javascript", "live.css": "text/css"}


@routes.get("/live")
async def live_page(request: web.Request) -> web.FileResponse:
    """GET /live."""
    return web.FileResponse(STATIC / "live.html", headers={
        "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CSP,
        "Cache-Control": "no-cache"})


@routes.get("/live/plotly.min.js")
async def plotly(request: web.Request) -> web.FileResponse:
    """GET /live/plotly.min.js.

    Raises:
        ServiceUnavailable: the npm packages are not installed.
    """
    if not PLOTLY.is_file():
        raise ServiceUnavailable("The plotting library is not installed: run make bootstrap "
                                 "(npm ci in web/)")
    return web.FileResponse(PLOTLY, headers={"Content-Type": "text/javascript; charset=utf-8",
                                             "Cache-Control": "public, max-age=86400"})


@routes.get("/live/{name}")
async def asset(request: web.Request) -> web.FileResponse:
    """GET /live/live.js, /live/live.css.

    Raises:
        NotFound: any other name.
    """
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound("Not found")
    return web.FileResponse(STATIC / name, headers={
        "Content-Type": f"{ASSETS[name]}; charset=utf-8", "Cache-Control": "no-cache"})
