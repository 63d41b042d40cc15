"""Read your writes: wait (bounded) for the projector to show what this API just wrote.

The API answers 202 once an event is in the log, but reads come from the read
model, which the projector fills a little later. A handler that does not find
a job it may have just accepted waits for it here instead of answering 404.

One background task polls the ``jobs`` table for the jobs somebody is waiting
for (a single query per tick for all waiters) and wakes them; it sleeps while
nobody waits.

Which misses are worth waiting for: job ids this process published recently,
and, so that a second API process behind the same load balancer also reads its
peer's writes, any id whose embedded submission time (``YYYYMMDD-HHMMSS-...``,
UTC) is within the last minute. Older or malformed ids miss at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.errors import JobNotFound
from services.contract.envelope import utc_now
from services.contract.jobs import JobState
from services.projector.reader import ViewReader
from services.projector.readmodel import jobs
from services.projector.state import JobView

log = logging.getLogger(__name__)

RECENT_SECONDS = 60.0


@dataclass
class _Wait:
    states: Collection[str] | None
    deleted: bool = False
    #: Wait for the SLURM bridge's answer: the job submitted (ids known) or ended.
    submitted: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def met(self, state: str, deleted: bool, array_job_id: str | None) -> bool:
        if self.deleted:
            return deleted
        if self.submitted:
            return array_job_id is not None or JobState(state).terminal
        return self.states is None or state in self.states


def submitted_at(job_id: str) -> datetime | None:
    """The submission time embedded in a job id, if it has one."""
    try:
        return datetime.strptime(job_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


class JobWaiter:
    """Bounded waits for jobs (or job states) to appear in the read model."""

    def __init__(self, engine: AsyncEngine, bound_seconds: float,
                 poll_seconds: float = 0.05) -> None:
        self.engine = engine
        #: How handlers read views (one thread call a read on SQLite).
        self.reader = ViewReader(engine)
        self.bound_seconds = bound_seconds
        self.poll_seconds = poll_seconds
        #: Oldest first (times only grow), so expiry pops from the front.
        self._published: OrderedDict[str, float] = OrderedDict()
        self._waits: dict[str, list[_Wait]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def published(self, job_id: str) -> None:
        """Remember that this process accepted ``job_id`` (so a miss is worth a wait)."""
        now = time.monotonic()
        self._published[job_id] = now
        self._published.move_to_end(job_id)
        self._expire(now)

    def _expire(self, now: float) -> None:
        """Forget ids older than the window, oldest first.

        O(1) per id: rebuilding the whole map on every submit (as before) cost O(jobs
        accepted in the last minute) each time, ~60,000 at 1,000 jobs/s.
        """
        cutoff = now - RECENT_SECONDS
        published = self._published
        while published:
            oldest = next(iter(published.values()))
            if oldest >= cutoff:
                break
            published.popitem(last=False)

    def worth_waiting(self, job_id: str) -> bool:
        """Whether a miss on ``job_id`` may just be projector lag."""
        at = self._published.get(job_id)
        if at is not None and time.monotonic() - at < RECENT_SECONDS:
            return True
        when = submitted_at(job_id)
        return when is not None and abs(utc_now() - when) < timedelta(seconds=RECENT_SECONDS)

    async def wait(self, job_id: str, states: Collection[str] | None = None,
                   *, deleted: bool = False, submitted: bool = False,
                   bound_seconds: float | None = None) -> bool:
        """Wait until the job exists, and is as asked (in ``states``, deleted, submitted).

        ``submitted``: the SLURM bridge has answered (the job has its SLURM ids, or it
        ended, e.g. because the submission failed). Returns False once the bound
        (``bound_seconds``, else the waiter's) is reached.
        """
        entry = _Wait(states, deleted, submitted)
        self._waits.setdefault(job_id, []).append(entry)
        self._wakeup.set()
        try:
            async with asyncio.timeout(bound_seconds if bound_seconds is not None
                                       else self.bound_seconds):
                await entry.done.wait()
            return True
        except TimeoutError:
            return False
        finally:
            waits = self._waits.get(job_id, [])
            if entry in waits:
                waits.remove(entry)
            if not waits:
                self._waits.pop(job_id, None)

    async def _tick(self) -> None:
        ids = list(self._waits)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(jobs.c.job_id, jobs.c.state, jobs.c.deleted, jobs.c.array_job_id)
                .where(jobs.c.job_id.in_(ids)))).all()
        for row in rows:
            for entry in self._waits.get(row.job_id, []):
                if entry.met(row.state, row.deleted, row.array_job_id):
                    entry.done.set()

    async def run(self) -> None:
        """The polling loop (one per application)."""
        while True:
            if not self._waits:
                self._wakeup.clear()
                await self._wakeup.wait()
            try:
                await self._tick()
            except Exception:  # a transient database error must not end the loop
                log.exception("read-model poll failed")
            await asyncio.sleep(self.poll_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="job-waiter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.reader.close)


WAITER = web.AppKey("job_waiter", JobWaiter)


async def find_job(waiter: JobWaiter, job_id: str) -> JobView | None:
    """The job's view, waiting (bounded) for the projector if the job may be just accepted."""
    view = (await waiter.reader.views([job_id])).get(job_id)
    if view is None and waiter.worth_waiting(job_id) and await waiter.wait(job_id):
        view = (await waiter.reader.views([job_id])).get(job_id)
    return None if view is None or view.deleted else view


async def owned_job(request: web.Request, owner: str, job_id: str,
                    platform: str | None = None) -> JobView:
    """The caller's job; another user's job (or another platform's) is as absent as none.

    Raises:
        JobNotFound: no such job for this caller.
    """
    view = await find_job(request.app[WAITER], job_id)
    if view is None or view.owner != owner or (platform and view.platform != platform):
        raise JobNotFound()
    return view
