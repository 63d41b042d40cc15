"""Usage end to end: real jobs through the runner, the faust worker as a process, the API.

The CPU seconds the launcher measured travel in the task end events to the worker's
counters and out of ``GET /user/usage``; the totals equal the sum over the user's jobs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.contract.envelope import Event, decode
from services.contract.log_reader import LogReader
from services.projector.readmodel import make_engine
from tests.api.conftest import Realm, call
from tests.api.test_audit_show import TERMINAL, deployment, submit
from tests.conftest import fresh_topics
from tests.runner.conftest import of_type
from tests.test_audit import end_offsets
from tests.test_usage import counted, spawn, usage_env

pytestmark = pytest.mark.kafka


async def test_user_usage_totals_equal_the_sum_over_the_users_jobs(
        kafka_bootstrap: str, realm: Realm, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "0.05")
    kafka = await fresh_topics(kafka_bootstrap)
    state = tmp_path / "a"
    async with deployment(kafka, realm, state) as (stack, settings):
        db_file = state / "rm.sqlite3"
        worker = spawn(usage_env(kafka, db_file, batch=50), tmp_path / "usage.log")
        engine = make_engine(settings.database.url)
        try:
            session = await stack.user()
            jobs = [await submit(session, ntasks=n, primaries=1000 * n) for n in (1, 3)]
            for job_id in jobs:
                job_state = ""
                while job_state not in TERMINAL:
                    async with session.get("/jobs", params={"job_id": job_id}) as r:
                        job_state = (await r.json())["job_state"]
                    await asyncio.sleep(0.1)
                assert job_state == "COMPLETED"
            total = sum((await end_offsets(kafka)).values())
            deadline = time.monotonic() + 60
            while await counted(engine, kafka) < total:
                assert worker.poll() is None
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            status, body = await call(session, "GET", "/user/usage")
        finally:
            worker.terminate()
            assert worker.wait(30) == 0
            await engine.dispose()
    assert status == 200
    events: list[Event] = []
    async for batch in LogReader(kafka, kafka.jobs_topic).batches():
        events.extend(decode(r.value) for r in batch)
    ended = [e for e in of_type(events, "TaskCompleted") if e.job_id in jobs]
    assert len(ended) == 4
    totals = body["totals"]
    assert (totals["jobs"], totals["tasks"], totals["primaries"]) == (2, 4, 4000)
    assert totals["cpu_seconds"] == pytest.approx(sum(e.payload["cpu_seconds"] for e in ended))
    assert totals["wall_seconds"] == pytest.approx(
        sum(e.payload["wall_seconds"] for e in ended))
    assert 0 < totals["cpu_seconds"] < totals["wall_seconds"]
    (row,) = body["usage"]
    assert (row["sim_type"], row["platform"]) == ("shieldhit", "direct")
