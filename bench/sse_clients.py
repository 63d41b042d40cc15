"""Browser stand-ins for the SSE benchmark, run in their own process.

``python -m bench.sse_clients`` reads one JSON config object on stdin:

* ``base_url``: ``http://127.0.0.1:PORT`` (anything else is refused);
* ``cookie``: the ``Cookie`` header of a logged-in user;
* ``streams``: job ids, one entry per stream to open (a job may appear many times);
* ``deadline_s``: wall-time bound of the whole run.

It opens every stream (``GET /jobs/stream``, at most 50 connecting at once), writes
``{"ready": N}`` on stdout once every stream has its snapshot, then reads until every
stream has ended, and writes one JSON result object on stdout. Latency of a message:
the client's wall clock when the message is parsed minus the event's ``occurred_at``
(set by the publisher just before it sends the event; one machine, one clock), for
TaskProgress updates only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime
from typing import Any

import aiohttp

from bench.loadgen import percentile
from tests.support.sse_client import SseReader

CONNECTING_AT_ONCE = 50


async def follow(session: aiohttp.ClientSession, url: str, gate: asyncio.Semaphore,
                 ready: list[int], total: int, samples: list[float],
                 errors: list[str]) -> int:
    """One stream until it ends; the number of updates it received."""
    updates = 0
    try:
        async with gate:
            response = await session.get(url, timeout=aiohttp.ClientTimeout(total=None,
                                                                            sock_read=600))
            reader = SseReader(response)
            first = await reader.expect()
            assert first.kind == "snapshot", first
        ready[0] += 1
        if ready[0] == total:
            print(json.dumps({"ready": total}), flush=True)
        async with response:
            while (event := await reader.next()) is not None:
                if event.kind != "update":
                    continue
                received = time.time()
                updates += 1
                data = json.loads(event.data)["event"]
                if data["type"] == "TaskProgress":
                    sent = datetime.fromisoformat(data["occurred_at"].replace("Z", "+00:00"))
                    samples.append(received - sent.timestamp())
    except (aiohttp.ClientError, AssertionError, TimeoutError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}"[:300])
    return updates


async def run(config: dict[str, Any]) -> dict[str, Any]:
    base = str(config["base_url"])
    if not base.startswith("http://127.0.0.1:"):
        raise SystemExit("sse_clients: only http://127.0.0.1:PORT is allowed")
    streams = list(config["streams"])
    samples: list[float] = []
    errors: list[str] = []
    ready = [0]
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    connector = aiohttp.TCPConnector(limit=0)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Cookie": str(config["cookie"])}) as session:
        tasks = [asyncio.create_task(follow(session, f"{base}/jobs/stream?job_id={job_id}",
                                            gate, ready, len(streams), samples, errors))
                 for job_id in streams]
        done, pending = await asyncio.wait(tasks, timeout=float(config["deadline_s"]))
        for task in pending:
            task.cancel()
        counts = [t.result() for t in done]
    ms = sorted(1000 * s for s in samples)
    return {
        "streams": len(streams), "ready": ready[0], "ended": len(done),
        "unfinished": len(pending), "updates": sum(counts), "samples": len(ms),
        "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99), "max_ms": ms[-1] if ms else None,
        "wall_s": time.monotonic() - started, "errors": len(errors),
        "error_samples": errors[:5],
    }


def main() -> None:
    config = json.loads(sys.stdin.readline())
    print(json.dumps(asyncio.run(run(config))), flush=True)


if __name__ == "__main__":
    main()
