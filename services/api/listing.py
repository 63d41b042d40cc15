"""The caller's jobs: paginated listing and deletion.

Deletion (of terminal or merging jobs, as the original allows) is a
``JobDeleted`` event: the fold marks the job deleted, reads and listings no
longer show it, and a rebuild from the log keeps it deleted.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web
from sqlalchemy import asc, desc, func, select

from services.api.auth import require_user
from services.api.common import ENGINE, PRODUCER_NAME, http_date, int_param, query
from services.api.errors import BadRequest, Forbidden, NotFound, WrongParameters, reply
from services.api.jobs import publish
from services.api.readwait import WAITER, find_job
from services.contract.envelope import Event
from services.contract.jobs import DELETABLE, JobState
from services.projector.readmodel import jobs

routes = web.RouteTableDef()

DEFAULT_PAGE_SIZE = 6
MAX_PAGE_SIZE = 100
ORDER_COLUMNS = {"start_time": jobs.c.submitted_at, "end_time": jobs.c.end_time}


def simulation_entry(row: Any) -> dict[str, Any]:
    """One item of the ``simulations`` list."""
    return {
        "title": row.title,
        "job_id": row.job_id,
        "start_time": http_date(row.submitted_at),
        "end_time": http_date(row.end_time),
        "metadata": {
            "platform": row.platform.upper(),
            "server": row.cluster_name if row.platform == "batch" and row.cluster_name
            else "Yaptide",
            "input_type": row.input_type.upper(),
            "sim_type": row.sim_type,
        },
    }


@routes.get("/user/simulations")
async def list_simulations(request: web.Request) -> web.Response:
    """GET /user/simulations."""
    user = await require_user(request)
    params = query(request, ("page_size", "page_idx", "order_by", "order_type", "job_state"))
    page_size = int_param(params, "page_size", DEFAULT_PAGE_SIZE)
    page_size = 20 if page_size < 1 else min(page_size, MAX_PAGE_SIZE)
    page_idx = max(int_param(params, "page_idx", 1), 1)
    order_by = params.get("order_by", "start_time")
    if order_by not in ORDER_COLUMNS:
        raise WrongParameters({"order_by": ["Must be one of: start_time, end_time."]})
    direction = desc if params.get("order_type", "descend") == "descend" else asc
    where = [jobs.c.owner == user.owner, jobs.c.deleted.is_(False)]
    if "job_state" in params:
        states = [s.strip() for s in params["job_state"].split(",")]
        if not all(s in JobState.__members__ for s in states):
            raise WrongParameters({"job_state": ["Must be a comma-separated list of states."]})
        where.append(jobs.c.state.in_(states))
    async with request.app[ENGINE].connect() as conn:
        total = (await conn.execute(select(func.count()).select_from(jobs).where(*where))
                 ).scalar_one()
        rows = (await conn.execute(
            select(jobs).where(*where)
            .order_by(direction(ORDER_COLUMNS[order_by]), direction(jobs.c.job_id))
            .limit(page_size).offset((page_idx - 1) * page_size))).all()
    return reply("User Simulations", page_count=math.ceil(total / page_size),
                 simulations_count=total, simulations=[simulation_entry(r) for r in rows])


@routes.delete("/user/simulations")
async def delete_simulation(request: web.Request) -> web.Response:
    """DELETE /user/simulations."""
    user = await require_user(request)
    params = query(request, ("job_id",))
    job_id = params.get("job_id")
    if not job_id:
        raise BadRequest("Wrong data provided", job_id=["Missing data for required field."])
    job = await find_job(request.app[WAITER], job_id)
    if job is None or job.owner != user.owner:
        raise NotFound(f"Simulation with job_id={job_id} do not exist")
    if job.state not in DELETABLE:
        raise Forbidden(f"Simulation with job_id={job_id} is in {job.state.value} state and "
                        "cannot be deleted; cancel it or wait until it ends")
    await publish(request, [Event(type="JobDeleted", job_id=job_id, producer=PRODUCER_NAME,
                                  payload={"requested_by": user.owner})])
    await request.app[WAITER].wait(job_id, deleted=True)  # read your writes (bounded)
    return reply(f"Simulation with job_id={job_id} successfully deleted from database")
