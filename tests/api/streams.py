"""What the live-stream tests share: opening streams, the log as the judge, a runner stack."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka.partitioner import DefaultPartitioner

from services.api.common import ARTIFACTS, PRODUCER
from services.artifacts.store import ArtifactStore
from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder
from services.contract.log_reader import LogReader
from services.runner.service import Runner
from services.settings import KafkaSettings, RunnerSettings, StreamSettings
from tests.api.conftest import (
    Realm,
    Stack,
    api_settings,
    call,
    make_settings,
    response_schema,
    running_stack,
)
from tests.support.sse_client import SseEvent, SseReader

FAST = StreamSettings(keepalive_seconds=0.3, retry_ms=100, linger_seconds=60.0)


@dataclass(frozen=True)
class Logged:
    """One event of a job as the log holds it."""

    partition: int
    offset: int
    event: Event


async def logged_events(kafka: KafkaSettings, job_id: str) -> list[Logged]:
    """A job's events in log order, each event id once (as the fold counts them)."""
    decoder = EventDecoder(validate=True)
    found: list[Logged] = []
    seen: set[str] = set()
    async for records in LogReader(kafka, kafka.jobs_topic).batches():
        for record in records:
            event = decoder.decode(record.value)
            if event is not None and event.job_id == job_id and event.event_id not in seen:
                seen.add(event.event_id)
                found.append(Logged(record.partition, record.offset, event))
    assert not decoder.skipped, decoder.skipped
    found.sort(key=lambda e: (e.partition, e.offset))
    return found


def partition_of(job_id: str, partitions: int) -> int:
    every = list(range(partitions))
    return int(DefaultPartitioner()(job_id.encode(), every, every))


@contextlib.asynccontextmanager
async def opened(session: aiohttp.ClientSession, path: str,
                 last_id: str | None = None) -> AsyncIterator[SseReader]:
    """An open event stream (checked: 200, text/event-stream, documented in openapi.yaml)."""
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    async with session.get(path, headers=headers,
                           timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"].startswith("no-cache")
        route = path.split("?")[0]
        assert response_schema(route, "GET", 200) is None  # documented, and not as JSON
        yield SseReader(resp)


#: A depth-dose profile (1-D, 40 bins) and a Y-Z dose map (2-D, 16 x 40): the stand-in
#: writes one .bdo per Output block, as SHIELD-HIT12A does.
DETECT = """Geometry Cyl
    Name CylZ
    R 0 5 1
    Z 0 20 40
Geometry Mesh
    Name MeshYZ
    X -5 5 1
    Y -5 5 16
    Z 0 20 40
Output
    Filename z_profile.bdo
    Geo CylZ
    Quantity Dose
Output
    Filename zy_map.bdo
    Geo MeshYZ
    Quantity Dose
"""


def beam_files(nstat: int) -> dict[str, str]:
    return {"beam.dat": f"JPART0 2\nTMAX0 150.0 0.0\nNSTAT {nstat} 0\n", "geo.dat": "g\n",
            "mat.dat": "m\n", "detect.dat": DETECT}


async def submit_files(session: aiohttp.ClientSession, ntasks: int, nstat: int) -> str:
    body: dict[str, Any] = {"sim_type": "shieldhit", "ntasks": ntasks, "input_type": "files",
                            "title": "live", "input_files": beam_files(nstat)}
    async with session.post("/jobs/direct", json=body) as resp:
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["job_id"])


@contextlib.asynccontextmanager
async def runner_for(stack: Stack, fake_exe: str, work: Path,
                     concurrency: int = 4) -> AsyncIterator[Runner]:
    """The direct platform's runner (fake SHIELD-HIT12A), sharing the API's artifact store."""
    prefix = stack.settings.kafka.topic_prefix
    settings = RunnerSettings(
        concurrency=concurrency, wall_time_limit=120, grace_seconds=2.0, workdir_root=work,
        executables={"shieldhit": fake_exe}, coordinator_group=f"{prefix}-coordinator",
        worker_group=f"{prefix}-workers", worker_name=f"live-{uuid.uuid4().hex[:6]}")
    runner = Runner(stack.settings.kafka, settings, ArtifactStore(stack.settings.artifacts.root))
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        await runner.shutdown()
        await task


async def login(stack: Stack, name: str) -> aiohttp.ClientSession:
    """A session of an existing password user on this stack's API."""
    session = stack.client()
    async with session.post("/auth/login", json={"username": name, "password": "pw-" + name}) as r:
        assert r.status == 202, await r.text()
    return session


class Script:
    """The events a platform writes for a job, published in pieces as a test needs them."""

    def __init__(self, stack: Stack, job_id: str, ntasks: int, primaries: int,
                 steps: int = 4) -> None:
        self.stack = stack
        self.job_id = job_id
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.last: Event | None = None
        share = primaries // ntasks
        ref = stack.app[ARTIFACTS].put_json({"estimators": []})
        for task in range(ntasks):
            self.events.append(("TaskStarted", {"task_index": task, "requested_primaries": share,
                                                "worker": "script"}))
            for step in range(1, steps):
                self.events.append(("TaskProgress", {
                    "task_index": task, "requested_primaries": share,
                    "simulated_primaries": share * step // steps, "estimated_time": steps - step}))
            self.events.append(("TaskCompleted", {
                "task_index": task, "requested_primaries": share, "simulated_primaries": share,
                "result_ref": ref}))
        self.events.append(("MergeStarted", {"completed_tasks": list(range(ntasks))}))
        self.events.append(("JobCompleted", {"result_ref": ref, "simulated_primaries": primaries,
                                             "tasks_merged": ntasks}))

    @property
    def left(self) -> int:
        return len(self.events)

    async def publish(self, count: int) -> list[Event]:
        """Publish the next ``count`` events (all of them if fewer are left); in the log
        when this returns."""
        batch, self.events = self.events[:count], self.events[count:]
        producer = self.stack.app[PRODUCER]
        published = []
        for type_, payload in batch:
            event = Event(type=type_, job_id=self.job_id, payload=payload,
                          producer="test-platform")
            await producer.publish(event)
            published.append(event)
        self.last = published[-1] if published else self.last
        return published


async def read_through(reader: SseReader, event_ids: set[str]) -> list[SseEvent]:
    """Read until updates for all of ``event_ids`` have come (events of one partition come
    in log order, so everything logged before them on their partitions has come too)."""
    waiting = set(event_ids)
    got: list[SseEvent] = []
    while waiting:
        event = await reader.expect()
        got.append(event)
        if event.kind == "update":
            waiting.discard(event.json()["event"]["event_id"])
    return got


@contextlib.asynccontextmanager
async def live_stack(kafka: KafkaSettings, state: Path, realm: Realm,
                     streams: StreamSettings = FAST,
                     with_projector: bool = True) -> AsyncIterator[Stack]:
    settings = make_settings(kafka, f"sqlite+aiosqlite:///{state / 'readmodel.sqlite3'}", state)
    async with running_stack(settings, api_settings(realm), with_projector, streams) as stack:
        yield stack


async def status(session: aiohttp.ClientSession, job_id: str,
                 predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GET /jobs/direct, until the body satisfies ``predicate``."""
    while True:
        code, body = await call(session, "GET", f"/jobs/direct?job_id={job_id}")
        assert code == 200, body
        if predicate(body):
            return dict(body)
        await asyncio.sleep(0.05)
