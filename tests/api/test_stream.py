"""Live streams: exactly once and in order across reconnects, ownership, keep-alives, the end.

The judge is the log itself: what a stream delivered is compared with the job's events
as :class:`~services.contract.log_reader.LogReader` reads them from Kafka.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.api import progress
from services.api.stream import FEED
from services.projector.state import fold
from services.settings import KafkaSettings
from tests.api.conftest import Realm, call
from tests.api.streams import (
    FAST,
    Logged,
    Script,
    live_stack,
    logged_events,
    login,
    opened,
    partition_of,
    read_through,
    runner_for,
    status,
    submit_files,
)
from tests.conftest import fresh_topics
from tests.runner.conftest import fake_simulator_exe
from tests.support.sse_client import SseEvent

pytestmark = pytest.mark.kafka


def simulated(body: dict[str, Any]) -> int:
    return sum(t["simulated_primaries"] for t in body["job_tasks_status"])


def delivered(events: list[SseEvent]) -> list[tuple[int, int, str]]:
    """(partition, offset, event id) of every update, in the order received."""
    out = []
    for event in events:
        if event.kind == "update":
            data = event.json()["event"]
            out.append((data["partition"], data["offset"], data["event_id"]))
    return out


def after(log: list[Logged], position: int) -> list[tuple[int, int, str]]:
    return [(e.partition, e.offset, e.event.event_id) for e in log if e.offset > position]


def tasks_after(snapshot: dict[str, Any], updates: list[SseEvent]) -> list[dict[str, Any]]:
    """The task list a browser holds after a snapshot and these updates."""
    tasks = {t["task_id"]: t for t in snapshot["job_tasks_status"]}
    for event in updates:
        if event.kind == "update":
            tasks.update({t["task_id"]: t for t in event.json()["job_tasks_status"]})
    return [tasks[k] for k in sorted(tasks)]


async def wait_logged(kafka: KafkaSettings, job_id: str,
                      predicate: Callable[[list[Logged]], bool]) -> list[Logged]:
    while True:
        log = await logged_events(kafka, job_id)
        if predicate(log):
            return log
        await asyncio.sleep(0.1)


async def test_job_stream_of_a_real_run_resumes_exactly_once(
        kafka_bootstrap: str, realm: Realm, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Connect mid-job, drop the connection, resume with Last-Event-ID: every event once."""
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "0.25")
    kafka = await fresh_topics(kafka_bootstrap)
    async with live_stack(kafka, tmp_path / "state", realm) as stack, \
            runner_for(stack, fake_simulator_exe(tmp_path), tmp_path / "work"):
        alice = await stack.user()
        job_id = await submit_files(alice, ntasks=3, nstat=3000)
        await status(alice, job_id, lambda body: simulated(body) > 0)  # mid-job
        async with opened(alice, f"/jobs/stream?job_id={job_id}") as first:
            snapshot = await first.expect()
            assert snapshot.kind == "snapshot"
            before_drop = [await first.expect() for _ in range(3)]
            assert first.retry_ms == FAST.retry_ms
            dropped_at = first.last_id
        assert dropped_at is not None
        # While the browser is away, the job moves on.
        await wait_logged(kafka, job_id,
                          lambda log: sum(e.offset > int(dropped_at) for e in log) >= 3)
        async with opened(alice, f"/jobs/stream?job_id={job_id}", dropped_at) as second:
            rest = await second.until("end")
            assert await second.next() is None  # the server closed the stream after "end"
        final = await status(alice, job_id, lambda body: body["job_state"] == "COMPLETED")

    updates = [e for e in before_drop + rest if e.kind == "update"]
    log = await logged_events(kafka, job_id)
    start = int(str(snapshot.id))
    assert delivered(updates) == after(log, start)
    assert [e.id for e in updates] == [str(o) for _, o, _ in after(log, start)]
    # The snapshot is the fold of the log up to its position, rendered for the browser.
    view = fold(e.event for e in log if e.offset <= start)[job_id]
    assert snapshot.json() == progress.snapshot(view, final=False)
    assert 0 < snapshot.json()["simulated_primaries"] < 3000
    # What the browser ends up with is what GET /jobs/direct says.
    last = updates[-1].json()
    assert last["final"] and last["job_state"] == "COMPLETED" == final["job_state"]
    assert last["event"]["type"] == "JobCompleted"
    assert tasks_after(snapshot.json(), updates) == final["job_tasks_status"]
    assert rest[-1].kind == "end" and rest[-1].json() == {"job_id": job_id,
                                                          "job_state": "COMPLETED"}


async def test_job_stream_resumes_from_the_log_and_on_another_process(
        kafka_bootstrap: str, realm: Realm, tmp_path: Path) -> None:
    """Resume from further back than memory keeps, then on a second API process."""
    kafka = await fresh_topics(kafka_bootstrap)
    tiny = replace(FAST, history_per_job=2)
    async with live_stack(kafka, tmp_path / "state", realm, tiny) as stack:
        name = f"u{uuid.uuid4().hex[:8]}"
        alice = await stack.user(name)
        job_id = await submit_files(alice, ntasks=2, nstat=1000)
        script = Script(stack, job_id, ntasks=2, primaries=1000, steps=5)
        await script.publish(3)
        await status(alice, job_id, lambda body: body["job_state"] == "RUNNING")
        got: list[SseEvent] = []
        async with opened(alice, f"/jobs/stream?job_id={job_id}") as first:
            snapshot = await first.expect()
            assert snapshot.kind == "snapshot"
            got += await read_through(first, {e.event_id for e in await script.publish(2)})
            dropped_at = str(first.last_id)
        await script.publish(6)
        followed = stack.app[FEED].jobs[job_id]
        assert not followed.covers(int(dropped_at))  # so the resume reads the log
        async with opened(alice, f"/jobs/stream?job_id={job_id}", dropped_at) as second:
            got += await read_through(second, {e.event_id for e in await script.publish(1)})
            dropped_again = str(second.last_id)
        await script.publish(1)
        # Another API process (its tail started after all of this) resumes it too.
        async with live_stack(kafka, tmp_path / "state", realm, tiny,
                              with_projector=False) as other:
            assert job_id not in other.app[FEED].jobs
            alice_there = await login(other, name)
            async with opened(alice_there, f"/jobs/stream?job_id={job_id}",
                              dropped_again) as third:
                await script.publish(script.left)
                got += await third.until("end")
            async with alice_there.get(f"/jobs/stream?job_id={job_id}",
                                       headers={"Last-Event-ID": got[-2].id or ""}) as done:
                assert done.status == 204  # an EventSource stops reconnecting

    log = await logged_events(kafka, job_id)
    assert delivered(got) == after(log, int(str(snapshot.id)))
    assert got[-1].kind == "end" and got[-2].json()["job_state"] == "COMPLETED"


async def test_user_stream_exactly_once_across_reconnects(
        kafka_bootstrap: str, realm: Realm, tmp_path: Path) -> None:
    """All of a user's jobs, over partitions, through a reconnect here and one elsewhere."""
    kafka = await fresh_topics(kafka_bootstrap)
    async with live_stack(kafka, tmp_path / "state", realm) as stack:
        name = f"u{uuid.uuid4().hex[:8]}"
        alice = await stack.user(name)
        bob = await stack.user()
        jobs: list[str] = []
        while len({partition_of(j, kafka.jobs_partitions) for j in jobs}) < 2 or len(jobs) < 2:
            jobs.append(await submit_files(alice, ntasks=2, nstat=400))
            assert len(jobs) < 30
        others = await submit_files(bob, ntasks=1, nstat=10)
        scripts = {j: Script(stack, j, ntasks=2, primaries=400) for j in jobs}
        bobs = Script(stack, others, ntasks=1, primaries=10)
        for j in jobs:
            await status(alice, j, lambda body: body["job_state"] == "PENDING")

        def lasts() -> set[str]:
            """The last published event of each job, unless it was delivered already."""
            sent = {d[2] for d in delivered(got)}
            return {s.last.event_id for s in scripts.values() if s.last is not None} - sent

        got: list[SseEvent] = []
        async with opened(alice, "/user/stream") as first:
            snapshots = [await first.expect() for _ in jobs]
            assert {s.json()["job_id"] for s in snapshots} == set(jobs)
            assert all(s.kind == "snapshot" for s in snapshots)
            start = str(snapshots[0].id)
            for script in scripts.values():
                await script.publish(2)
            await bobs.publish(2)
            got += await read_through(first, lasts())
            dropped_at = str(first.last_id)
        # Away: the jobs move, one finishes, a new one is submitted.
        finished = jobs[0]
        await scripts[finished].publish(scripts[finished].left)
        for script in list(scripts.values())[1:]:
            await script.publish(3)
        new_job = await submit_files(alice, ntasks=1, nstat=50)
        jobs.append(new_job)
        scripts[new_job] = Script(stack, new_job, ntasks=1, primaries=50)
        await scripts[new_job].publish(2)
        await bobs.publish(2)
        async with opened(alice, "/user/stream", dropped_at) as second:
            await scripts[jobs[1]].publish(1)
            got += await read_through(second, lasts())
            dropped_again = str(second.last_id)
        # Away again: a job ends (so only the log can tell this stream about it); then back
        # on another API process whose tail starts after all of this.
        await scripts[jobs[1]].publish(scripts[jobs[1]].left)
        await bobs.publish(1)
        await status(alice, jobs[1], lambda body: body["job_state"] == "COMPLETED")
        async with live_stack(kafka, tmp_path / "state", realm, with_projector=False) as other:
            feed = other.app[FEED]
            assert any(feed.recent_from[p] > int(v) + 1
                       for p, v in enumerate(dropped_again.split(",")))  # so: from the log
            alice_there = await login(other, name)
            async with opened(alice_there, "/user/stream", dropped_again) as third:
                for j in jobs[2:]:
                    await scripts[j].publish(scripts[j].left)
                await bobs.publish(bobs.left)
                got += await read_through(third, lasts())

    for partition in {d[0] for d in delivered(got)}:
        offsets = [d[1] for d in delivered(got) if d[0] == partition]
        assert offsets == sorted(offsets)  # in log order within each partition
    assert sorted(delivered(got)) == await expected_user_events(kafka, jobs, start)
    assert len(delivered(got)) == len(set(delivered(got)))  # nothing twice
    assert all(e.json()["job_id"] != others for e in got)
    ids = [e.id for e in got if e.kind == "update"]
    assert all(i is not None and len(i.split(",")) == kafka.jobs_partitions for i in ids)


async def expected_user_events(kafka: KafkaSettings, jobs: list[str],
                               start: str) -> list[tuple[int, int, str]]:
    """The events of these jobs after a user stream's position ``start``."""
    vector = [int(v) for v in start.split(",")]
    found: list[tuple[int, int, str]] = []
    for job_id in jobs:
        found += [(e.partition, e.offset, e.event.event_id)
                  for e in await logged_events(kafka, job_id) if e.offset > vector[e.partition]]
    return sorted(found)


async def test_ownership_errors_keepalives_and_limits(
        kafka_bootstrap: str, realm: Realm, tmp_path: Path) -> None:
    kafka = await fresh_topics(kafka_bootstrap)
    limits = replace(FAST, max_streams_per_user=1)
    async with live_stack(kafka, tmp_path / "state", realm, limits) as stack:
        alice, mallory = await stack.user(), await stack.user()
        job_id = await submit_files(alice, ntasks=1, nstat=10)
        await status(alice, job_id, lambda body: body["job_state"] == "PENDING")
        path = f"/jobs/stream?job_id={job_id}"
        # Another user's job is as absent as a job that does not exist.
        assert (await call(mallory, "GET", path))[0] == 404
        missing = "20000101-000000-00000000-0000-4000-8000-000000000000DIRECT"
        code, body = await call(alice, "GET", f"/jobs/stream?job_id={missing}")
        assert (code, body["message"]) == (404, "Job with provided ID does not exist")
        assert (await call(stack.client(), "GET", path))[0] == 401
        assert (await call(stack.client(), "GET", "/user/stream"))[0] == 401
        assert (await call(alice, "GET", "/jobs/stream"))[0] == 400
        assert (await call(alice, "GET", "/user/stream?job_id=x"))[0] == 400
        code, body = await call(alice, "GET", path, headers={"Last-Event-ID": "1,2"})
        assert code == 400 and "Last-Event-ID" in body["message"]
        code, body = await call(alice, "GET", "/user/stream", headers={"Last-Event-ID": "7"})
        assert code == 400 and "3 comma-separated offsets" in body["message"]
        # Another user's stream sees nothing of this job.
        async with opened(mallory, "/user/stream") as theirs, opened(alice, path) as mine:
            snapshot = await mine.expect()
            assert snapshot.json()["job_state"] == "PENDING"
            # One stream per user here: a second one is refused while the first is open.
            code, body = await call(alice, "GET", "/user/stream")
            assert code == 429 and "open streams" in body["message"]
            # Idle: keep-alive comments, nothing else.
            await mine.comment()
            await mine.comment()
            script = Script(stack, job_id, ntasks=1, primaries=10, steps=2)
            await script.publish(script.left)
            rest = await mine.until("end")
            assert [e.json()["event"]["type"] for e in rest if e.kind == "update"] == [
                "TaskStarted", "TaskProgress", "TaskCompleted", "MergeStarted", "JobCompleted"]
            await theirs.comment()  # the other user's stream stays silent but alive
        # The UI's origin may read the stream (CORS headers go out before the first event).
        origin = stack.api.cors_origins[0]
        async with alice.get(path, headers={"Origin": origin}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == origin
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        # A fresh stream of an ended job: its state, then the end.
        async with opened(alice, path) as again:
            events = await again.until("end")
            assert [e.kind for e in events] == ["snapshot", "end"]
            assert events[0].json()["job_state"] == "COMPLETED" and events[0].json()["final"]
