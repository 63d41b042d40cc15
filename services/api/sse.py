"""Server-Sent Events on the wire: framing, stream ids, the response and its writer loop.

Stream ids are log positions. A job's stream uses the Kafka offset of the job's last
event sent (one job's events are in one partition, in order); a user's stream uses one
offset per partition, ``"o0,o1,...,oN"``, each the last position of that partition the
stream has sent everything up to (-1: nothing yet). Any API process can resume any
stream from such an id, since it names a place in the log, not in a process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from aiohttp import web

from services.api.cors import cors_headers
from services.api.errors import BadRequest
from services.api.livefeed import Message, Subscriber

KEEPALIVE = b": keep-alive\n\n"


def frame(kind: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE event (``data`` is one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


def end_frame(job_id: str, job_state: str) -> bytes:
    """The event after a job's final message (no id: it does not move the position)."""
    return frame("end", json.dumps({"job_id": job_id, "job_state": job_state}))


def job_position(raw: str | None) -> int | None:
    """A job stream's ``Last-Event-ID`` (None: start afresh).

    Raises:
        BadRequest: not a position of a job stream.
    """
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = -2
    if value < -1:
        raise BadRequest(f"Last-Event-ID {raw[:80]!r} is not a position of a job stream "
                         "(an offset, as sent in the stream's ids)")
    return value


def user_position(raw: str | None, partitions: list[int]) -> dict[int, int] | None:
    """A user stream's ``Last-Event-ID``: one offset per partition (None: start afresh).

    Raises:
        BadRequest: not a position of a user stream of this deployment.
    """
    if raw is None or raw.strip() == "":
        return None
    parts = raw.strip().split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != len(partitions) or any(v < -1 for v in values):
        raise BadRequest(f"Last-Event-ID {raw[:80]!r} is not a position of a user stream "
                         f"({len(partitions)} comma-separated offsets, as sent in its ids)")
    return dict(zip(partitions, values, strict=True))


def vector_id(vector: dict[int, int]) -> str:
    """The id of a user stream at a position (one offset per partition)."""
    return ",".join(str(vector[p]) for p in sorted(vector))


async def open_response(request: web.Request, retry_ms: int) -> web.StreamResponse:
    """Send the headers of an event stream (and the browser's reconnection delay)."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache, no-store",
        "X-Accel-Buffering": "no",  # a proxy must not hold events back
        "Vary": "Origin",
        **cors_headers(request),
    })
    await response.prepare(request)
    await response.write(f"retry: {retry_ms}\n\n".encode())
    return response


async def pump(response: web.StreamResponse, subscriber: Subscriber, *,
               render: Callable[[Message], bytes | None], keepalive_seconds: float,
               max_seconds: float, done: Callable[[Message], bool]) -> None:
    """Write the subscriber's messages until a final one, overflow, the time limit or a hang-up.

    ``render`` turns a message into bytes (None: skip it, e.g. already sent); ``done``
    says whether the stream ends after a message. Messages that are already waiting
    are written together.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds if max_seconds > 0 else None
    queue = subscriber.queue
    with contextlib.suppress(ConnectionError):
        while True:
            timeout = keepalive_seconds
            if deadline is not None:
                timeout = min(timeout, deadline - loop.time())
                if timeout <= 0:
                    return
            try:
                async with asyncio.timeout(timeout):
                    first = await queue.get()
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    return
                await response.write(KEEPALIVE)
                continue
            batch: list[Message | None] = [first]
            while not queue.empty():
                batch.append(queue.get_nowait())
            chunks: list[bytes] = []
            finished = False
            for message in batch:
                if message is None:  # overflowed: the browser resumes from its last id
                    finished = True
                    break
                rendered = render(message)
                if rendered is not None:
                    chunks.append(rendered)
                    if done(message):
                        finished = True
                        break
            if chunks:
                await response.write(b"".join(chunks))
            if finished:
                return
