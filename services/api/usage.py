"""``GET /user/usage``: the caller's usage, as the usage worker counted it.

The rows come from the usage tables (:mod:`services.projector.usage_model`), which the
faust worker keeps; this route only reads them, so it shows what has been counted so far
(the worker's lag is on its ``/metrics``).
"""

from __future__ import annotations

from datetime import date

from aiohttp import web

from services.api.auth import require_user
from services.api.common import ENGINE, query
from services.api.errors import WrongParameters, reply
from services.projector.usage_model import load_usage, totals

routes = web.RouteTableDef()


def _day(params: dict[str, str], name: str) -> date | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise WrongParameters({name: ["Not a valid date (YYYY-MM-DD)."]}) from None


@routes.get("/user/usage")
async def user_usage(request: web.Request) -> web.Response:
    """GET /user/usage."""
    user = await require_user(request)
    params = query(request, ("from", "to"))
    since, until = _day(params, "from"), _day(params, "to")
    if since is not None and until is not None and since > until:
        raise WrongParameters({"from": ["Must not be after 'to'."]})
    rows = await load_usage(request.app[ENGINE], user.owner, since=since, until=until)
    summed = totals(rows)
    return reply("User usage", usage=[
        {"day": r.day, "sim_type": r.sim_type, "platform": r.platform, "jobs": r.jobs,
         "tasks": r.tasks, "primaries": r.primaries, "cpu_seconds": r.cpu_seconds,
         "wall_seconds": r.wall_seconds} for r in rows],
        totals={"jobs": int(summed["jobs"]), "tasks": int(summed["tasks"]),
                "primaries": int(summed["primaries"]), "cpu_seconds": summed["cpu_seconds"],
                "wall_seconds": summed["wall_seconds"]})
