"""Live progress as Server-Sent Events: ``GET /jobs/stream`` and ``GET /user/stream``.

A job stream starts with a ``snapshot`` of the job (every task, as ``GET /jobs/direct``
shows them), then sends one ``update`` per event of the job: the job's state after it,
the tasks it changed and the event itself. After the job's final message (a terminal
state, or deletion) it sends ``end`` and closes; a browser that reconnects anyway with
the final id gets 204, which tells an EventSource to stop.

A user stream does the same for every active job of the caller at once (one snapshot
each), and follows the jobs the caller submits while it is open.

With ``Last-Event-ID`` (which a browser sends by itself when it reconnects) neither
stream sends snapshots: it sends every message after that position, from memory or from
the log, then goes on live, so nothing is missed and nothing comes twice. Another
user's job is as absent as a job that does not exist (404). Idle streams get a
keep-alive comment; every connection ends after ``max_connection_seconds`` (the browser
resumes it at once), so a revoked session stops streaming.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiokafka.partitioner import DefaultPartitioner

from services.api.auth import require_user
from services.api.common import API_SETTINGS, query, required_job_id
from services.api.errors import JobNotFound, ServiceUnavailable
from services.api.livefeed import JobStart, LiveFeed, Message, Recent, Subscriber
from services.api.readwait import WAITER, owned_job
from services.api.sse import (
    end_frame,
    frame,
    job_position,
    open_response,
    pump,
    user_position,
    vector_id,
)
from services.settings import StreamSettings

routes = web.RouteTableDef()

FEED = web.AppKey("live_feed", LiveFeed)
STREAM_SETTINGS = web.AppKey("stream_settings", StreamSettings)

#: How often a stream's set-up may find the log moved under it before it gives up (503).
SETUP_ATTEMPTS = 20


def _partition_of(feed: LiveFeed, job_id: str) -> int:
    """The partition the producer's default partitioner puts a job's events in."""
    partitions = feed.partitions
    return int(DefaultPartitioner()(job_id.encode(), partitions, partitions))


async def _start_of(feed: LiveFeed, job_id: str) -> JobStart:
    """Where a job the read model knows begins in the log (from offset 0 if it cannot say)."""
    starts = await feed.job_starts([job_id])
    return starts.get(job_id) or JobStart(_partition_of(feed, job_id), 0)


def _update_frame(message: Message, event_id: str) -> bytes:
    return frame("update", message.data, event_id)


# --- one job -------------------------------------------------------------------------------


async def _open_job(feed: LiveFeed, subscriber: Subscriber, job_id: str,
                    after: int | None) -> tuple[list[bytes], int, bool] | None:
    """Follow the job; the first frames, the position they reach and whether that is all.

    None: the client has everything already (its position is the job's final message).
    """
    start = await _start_of(feed, job_id)
    private: list[Message] = []
    private_upto: int | None = None  # the replay from the log holds everything up to here
    for _ in range(SETUP_ATTEMPTS):
        job = await feed.follow_job(job_id, start)
        sent = after if private_upto is None else private_upto
        if sent is not None and not job.covers(sent):
            assert after is not None
            private, private_upto = await feed.replay(job_id, start, after)
            continue
        if feed.jobs.get(job_id) is not job:
            continue  # forgotten between the read and now (nobody followed it): again
        # From here to the end: synchronous, so nothing is dispatched in between.
        if job.view is None or job.owner != subscriber.owner:
            raise JobNotFound()
        if after is None:
            frames = [frame("snapshot", job.snapshot(), str(job.position))]
            if job.final_offset is not None:
                frames.append(end_frame(job_id, job.view.state.value))
                return frames, job.position, True
            feed.follow(subscriber, job)
            return frames, job.position, False
        if job.final_offset is not None and after >= job.final_offset:
            return None
        assert sent is not None
        messages = [m for m in private if m.offset > after] + job.messages_after(sent)
        frames = []
        position = after
        for message in messages:
            frames.append(_update_frame(message, str(message.offset)))
            position = message.offset
            if message.final:
                frames.append(end_frame(job_id, message.state))
                return frames, position, True
        feed.follow(subscriber, job)
        return frames, position, False
    raise ServiceUnavailable("The job log moves too fast to start the stream, try again")


@routes.get("/jobs/stream")
async def job_stream(request: web.Request) -> web.StreamResponse:
    """GET /jobs/stream."""
    user = await require_user(request)
    job_id = required_job_id(query(request, ("job_id",)))
    after = job_position(request.headers.get("Last-Event-ID"))
    await owned_job(request, user.owner, job_id)
    feed = request.app[FEED]
    settings = request.app[STREAM_SETTINGS]
    with feed.admitted(user.owner):
        subscriber = feed.subscriber(user.owner)
        try:
            opened = await _open_job(feed, subscriber, job_id, after)
            if opened is None:
                return web.Response(status=204)
            frames, position, finished = opened
            response = await open_response(request, settings.retry_ms)
            try:
                await response.write(b"".join(frames))
                if not finished:
                    await _pump_job(response, subscriber, position, settings)
            except ConnectionError:
                pass
            return response
        finally:
            feed.close(subscriber)


async def _pump_job(response: web.StreamResponse, subscriber: Subscriber, position: int,
                    settings: StreamSettings) -> None:
    sent = position

    def render(message: Message) -> bytes | None:
        nonlocal sent
        if message.offset <= sent:
            return None
        sent = message.offset
        out = _update_frame(message, str(message.offset))
        if message.final:
            out += end_frame(message.job_id, message.state)
        return out

    await pump(response, subscriber, render=render, keepalive_seconds=settings.keepalive_seconds,
               max_seconds=settings.max_connection_seconds, done=lambda m: m.final)


# --- all of a user's jobs ----------------------------------------------------------------


class _UserSetup:
    """What a user stream learns while it gets every job it needs followed."""

    def __init__(self, feed: LiveFeed, owner: str, after: dict[int, int] | None) -> None:
        self.feed = feed
        self.owner = owner
        self.after = after
        self.starts: dict[str, JobStart] = {}
        #: The jobs the stream follows: the owner's active jobs, and (resuming) its jobs
        #: that moved since the client's position.
        self.wanted: set[str] = set()
        self.moved: set[str] = set()
        self.owners: dict[str, str] = {}
        #: (partition, after) -> (upto, records in (after, upto) read from the log).
        self.scanned: dict[tuple[int, int], tuple[int, list[Recent]]] = {}
        self.private: dict[str, tuple[list[Message], int]] = {}

    async def records(self, partition: int, after: int, before: int) -> list[Recent]:
        """Records in ``(after, before)``: from memory, from the log what memory lacks."""
        feed = self.feed
        while True:
            found = feed.recent_between(partition, after, before)
            if found is not None:
                return found
            cached = self.scanned.get((partition, after))
            if cached is not None:
                newer = feed.recent_between(partition, cached[0] - 1, before)
                if newer is not None:
                    return [r for r in cached[1] if r.offset < before] + newer
            upto = feed.recent_from[partition]
            self.scanned[(partition, after)] = (upto, await feed.scan(partition, after, upto))

    def note(self, partition: int, records: list[Recent]) -> None:
        """Remember the owners (and first offsets) that JobSubmitted records tell."""
        for record in records:
            if record.owner is not None:
                self.owners[record.job_id] = record.owner
                self.starts.setdefault(record.job_id, JobStart(partition, record.offset))

    def owner_of(self, job_id: str) -> str | None:
        job = self.feed.jobs.get(job_id)
        if job is not None and job.owner is not None:
            return job.owner
        return self.owners.get(job_id)


async def _open_user(feed: LiveFeed, subscriber: Subscriber, request: web.Request,
                     after: dict[int, int] | None) -> tuple[list[bytes], dict[int, int]]:
    """Follow every job the stream needs; the first frames and the position they reach.

    The owner's active jobs are those the read model shows active plus those submitted
    after the read model's position (from the tail's memory or the log); new ones are
    followed by the feed from their JobSubmitted (``watching``). Resuming, the jobs
    that moved since the client's position are found the same way, and the tail must
    first pass the read model's position, so a job the read model shows ended has its
    end within the window.
    """
    owner = subscriber.owner
    setup = _UserSetup(feed, owner, after)
    projected_before = await feed.projected_positions()
    setup.wanted.update(await feed.active_jobs(owner))
    if after is not None:
        await feed.reach(await feed.projected_positions(),
                         request.app[API_SETTINGS].read_wait_seconds)
    for _ in range(SETUP_ATTEMPTS):
        positions = dict(feed.positions)
        for p in feed.partitions:
            submitted = await setup.records(p, projected_before[p], positions[p])
            setup.note(p, submitted)
            setup.wanted.update(r.job_id for r in submitted if r.owner == owner)
            if after is not None:
                window = await setup.records(p, after[p], positions[p])
                setup.note(p, window)
                setup.moved.update(r.job_id for r in window)
        unknown = [j for j in setup.moved if setup.owner_of(j) is None]
        if unknown:
            await _learn_owners(request, unknown, setup)
        setup.wanted.update(j for j in setup.moved if setup.owner_of(j) == owner)
        lacking = [j for j in setup.wanted if j not in feed.jobs]
        if lacking:
            no_start = [j for j in lacking if j not in setup.starts]
            if no_start:
                setup.starts.update(await feed.job_starts(no_start))
            await asyncio.gather(*(
                feed.follow_job(j, setup.starts.get(j) or JobStart(_partition_of(feed, j), 0))
                for j in lacking))
            continue
        if after is not None and await _replay_short(feed, setup, after):
            continue
        # Synchronous from here: the windows up to now held nothing new to wait for.
        if not _settled(feed, setup, positions):
            continue
        return _user_frames(feed, subscriber, setup)
    raise ServiceUnavailable("The job log moves too fast to start the stream, try again")


async def _replay_short(feed: LiveFeed, setup: _UserSetup, after: dict[int, int]) -> bool:
    """Fold afresh from the log the moved jobs memory no longer covers; whether any was."""
    short = []
    for job_id in setup.wanted & setup.moved:
        job = feed.jobs[job_id]
        got = setup.private.get(job_id)
        if job.owner == setup.owner and not job.covers(
                after[job.partition] if got is None else got[1]):
            short.append(job)
    for job in short:
        start = setup.starts.get(job.job_id) or await _start_of(feed, job.job_id)
        setup.private[job.job_id] = await feed.replay(job.job_id, start, after[job.partition])
    return bool(short)


def _settled(feed: LiveFeed, setup: _UserSetup, positions: dict[int, int]) -> bool:
    """Whether nothing dispatched since ``positions`` asks for more work (synchronous).

    A new job of the owner is followed by the feed (``watching``); every other job of the
    owner that can still move is wanted already.
    """
    for p in feed.partitions:
        if feed.recent_between(p, positions[p] - 1, feed.positions[p]) is None:
            return False
    return all(j in feed.jobs for j in setup.wanted)


def _user_frames(feed: LiveFeed, subscriber: Subscriber,
                 setup: _UserSetup) -> tuple[list[bytes], dict[int, int]]:
    """Snapshots (fresh) or the missed messages (resume); follow the active jobs."""
    owner = subscriber.owner
    now = {p: feed.positions[p] - 1 for p in feed.partitions}
    jobs = {j: feed.jobs[j] for j in setup.wanted}
    jobs.update({job.job_id: job for job in feed.owner_jobs(owner)})
    jobs = {j: job for j, job in jobs.items() if job.owner == owner}
    frames: list[bytes] = []
    after = setup.after
    if after is None:
        vector = dict(now)
        ident = vector_id(vector)
        for job in sorted(jobs.values(), key=lambda j: j.job_id):
            if job.active:
                frames.append(frame("snapshot", job.snapshot(), ident))
    else:
        vector = dict(after)
        missed: list[Message] = []
        for job in jobs.values():
            sent = after[job.partition]
            got = setup.private.get(job.job_id)
            if got is not None:
                missed += [m for m in got[0] if m.offset > sent]
                sent = max(sent, got[1])
            missed += job.messages_after(sent)
        missed.sort(key=lambda m: (m.partition, m.offset))
        for message in missed:
            vector[message.partition] = message.offset
            frames.append(_update_frame(message, vector_id(vector)))
        vector = {p: max(vector[p], now[p]) for p in vector}
    for job in jobs.values():
        if job.active:
            feed.follow(subscriber, job)
    feed.subscribe_owner(subscriber)
    return frames, vector


async def _learn_owners(request: web.Request, job_ids: list[str], setup: _UserSetup) -> None:
    """The owners of jobs the log names, from the read model (waiting, bounded, for it).

    Raises:
        ServiceUnavailable: the read model still does not know a job after the bound.
    """
    feed = setup.feed
    setup.owners.update(await feed.owners(job_ids))
    missing = [j for j in job_ids if setup.owner_of(j) is None]
    if not missing:
        return
    waiter = request.app[WAITER]
    await asyncio.gather(*(waiter.wait(j) for j in missing))
    setup.owners.update(await feed.owners(missing))
    if any(setup.owner_of(j) is None for j in missing):
        raise ServiceUnavailable("The read model is behind the job log, try again later")


@routes.get("/user/stream")
async def user_stream(request: web.Request) -> web.StreamResponse:
    """GET /user/stream."""
    user = await require_user(request)
    query(request, ())
    feed = request.app[FEED]
    settings = request.app[STREAM_SETTINGS]
    after = user_position(request.headers.get("Last-Event-ID"), feed.partitions)
    with feed.admitted(user.owner), feed.watching(user.owner):
        subscriber = feed.subscriber(user.owner)
        try:
            frames, vector = await _open_user(feed, subscriber, request, after)
            response = await open_response(request, settings.retry_ms)
            try:
                await response.write(b"".join(frames))
                await _pump_user(response, feed, subscriber, vector, settings)
            except ConnectionError:
                pass
            return response
        finally:
            feed.close(subscriber)


async def _pump_user(response: web.StreamResponse, feed: LiveFeed, subscriber: Subscriber,
                     vector: dict[int, int], settings: StreamSettings) -> None:
    def render(message: Message) -> bytes | None:
        if message.offset <= vector[message.partition]:
            return None
        vector[message.partition] = message.offset
        if message.final:
            feed.unfollow(subscriber, message.job_id)
        return _update_frame(message, vector_id(vector))

    await pump(response, subscriber, render=render, keepalive_seconds=settings.keepalive_seconds,
               max_seconds=settings.max_connection_seconds, done=lambda m: False)
