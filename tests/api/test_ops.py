"""The API's operations surface: /metrics, /healthz, /readyz with real dependencies down,
and GET /user/usage.

Dependencies are made unavailable without touching the shared test servers: an API
pointed at a broker port where nothing listens, and a PostgreSQL database of its own
whose connections are refused (``ALLOW_CONNECTIONS false``) and then allowed again.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import pick_free_ports, postgres
from services.api.common import ENGINE
from services.audit.replay import load_fixture
from services.contract.envelope import decode
from services.projector.usage_model import apply_usage
from services.settings import KafkaSettings
from tests.api.conftest import Realm, Stack, api_settings, call, make_settings, running_stack

pytestmark = pytest.mark.kafka

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "replay" / \
    "runner_with_cpu_seconds_v1.json"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric, by their labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def metrics_text(session: aiohttp.ClientSession) -> str:
    async with session.get("/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


async def readiness(session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
    async with session.get("/readyz") as r:
        return r.status, await r.json()


async def wait_readiness(session: aiohttp.ClientSession, status: int,
                         within: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        got, body = await readiness(session)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/readyz never {status}: {body}"
        await asyncio.sleep(0.1)


async def test_metrics_count_requests_by_route_and_events_by_type(stack: Stack) -> None:
    session = await stack.user()
    before = await metrics_text(session)
    missing = "20000101-000000-00000000-0000-4000-8000-000000000000DIRECT"
    for _ in range(3):
        async with session.get("/jobs", params={"job_id": missing}) as r:
            assert r.status == 404
    body = {"sim_type": "shieldhit", "ntasks": 1, "input_type": "files",
            "input_files": {"beam.dat": "NSTAT 10\n"}}
    async with session.post("/jobs/direct", json=body) as r:
        assert r.status == 202
    after = await metrics_text(session)
    key = (("method", "GET"), ("route", "/jobs"), ("status", "404"))
    assert samples(after, "simjobs_http_requests_total")[key] - \
        samples(before, "simjobs_http_requests_total").get(key, 0) == 3
    submitted = (("type", "JobSubmitted"),)
    assert samples(after, "simjobs_events_produced_total")[submitted] - \
        samples(before, "simjobs_events_produced_total").get(submitted, 0) == 1
    count = samples(after, "simjobs_http_request_duration_seconds_count")
    assert count[(("method", "POST"), ("route", "/jobs/direct"))] >= 1
    async with session.get("/healthz") as r:
        assert r.status == 200 and await r.json() == {"status": "alive"}
    ready = await wait_readiness(session, 200)
    assert ready["checks"] == {"kafka": {"ok": True, "detail": "ok"},
                               "database": {"ok": True, "detail": "ok"}}
    status, _ = await call(session, "GET", "/readyz")
    assert status == 200


async def test_an_api_whose_broker_is_unreachable_is_alive_but_not_ready(
        module_kafka: KafkaSettings, realm: Realm, tmp_path: Path) -> None:
    (port,) = pick_free_ports(1)  # nothing listens there
    kafka = module_kafka.with_prefix(module_kafka.topic_prefix)
    dead = KafkaSettings(f"127.0.0.1:{port}", kafka.topic_prefix, kafka.jobs_partitions,
                         kafka.tasks_partitions, kafka.client_id)
    settings = make_settings(dead, f"sqlite+aiosqlite:///{tmp_path / 'rm.sqlite3'}", tmp_path)
    async with running_stack(settings, api_settings(realm), with_projector=False) as api:
        session = await api.user()
        async with session.get("/healthz") as r:
            assert r.status == 200
        body = await wait_readiness(session, 503)
        assert body["started"] is False and body["status"] == "not ready"
        _, body = await call(session, "GET", "/readyz")
        assert body["checks"]["database"]["ok"] is True
        submission = {"sim_type": "shieldhit", "ntasks": 1, "input_type": "files",
                      "input_files": {"beam.dat": "NSTAT 10\n"}}
        status, body = await call(session, "POST", "/jobs/direct", json=submission)
        assert status == 503 and "unavailable" in body["message"]


@pytest.fixture
def own_database(postgres_server: postgres.PostgresHandle) -> tuple[str, str]:
    """A database of this test's own on the shared server: (name, URL)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    return name, postgres.create_database(postgres_server, name)


@pytest.mark.postgres
async def test_readiness_follows_the_database_going_away_and_coming_back(
        module_kafka: KafkaSettings, realm: Realm, tmp_path: Path,
        postgres_server: postgres.PostgresHandle, own_database: tuple[str, str]) -> None:
    name, url = own_database
    admin = await asyncpg.connect(postgres.dsn(postgres_server.url))
    try:
        settings = make_settings(module_kafka, url, tmp_path)
        async with running_stack(settings, api_settings(realm), with_projector=False) as api:
            session = api.client()
            await wait_readiness(session, 200)
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1", name)
            body = await wait_readiness(session, 503)
            assert body["checks"]["database"]["ok"] is False
            assert body["checks"]["kafka"]["ok"] is True
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            body = await wait_readiness(session, 200)
            assert body["checks"]["database"] == {"ok": True, "detail": "ok"}
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()


async def test_user_usage_serves_what_the_usage_worker_counted(stack: Stack) -> None:
    name = f"usage-{uuid.uuid4().hex[:8]}"
    session = await stack.user(name)
    fixture = load_fixture(FIXTURE)
    job_id = fixture.job_id.replace(fixture.job_id[16:24], uuid.uuid4().hex[:8])
    events = []
    for n, raw in enumerate(fixture.records):  # a real job's events, owned by this user
        data = json.loads(raw)
        data["job_id"] = job_id
        if data["type"] == "JobSubmitted":
            data["payload"]["owner"] = f"u:{name}"
        events.append((0, n, decode(json.dumps(data).encode())))
    async with stack.app[ENGINE].begin() as conn:
        await apply_usage(conn, "fixture.jobs", events)
        await apply_usage(conn, "fixture.jobs", events)  # redelivered: counts once
    status, body = await call(session, "GET", "/user/usage")
    assert status == 200
    completed = [e for _, _, e in events if e.type == "TaskCompleted"]
    day = completed[0].occurred_at.date().isoformat()
    (row,) = body["usage"]
    assert row["day"] == day and row["sim_type"] == "shieldhit" and row["platform"] == "direct"
    assert (row["jobs"], row["tasks"], row["primaries"]) == (1, 3, 3000)
    assert row["cpu_seconds"] == pytest.approx(sum(e.payload["cpu_seconds"] for e in completed))
    assert row["wall_seconds"] == pytest.approx(
        sum(e.payload["wall_seconds"] for e in completed))
    assert body["totals"] == {k: row[k] for k in body["totals"]}
    status, body = await call(session, "GET", "/user/usage", params={"from": "2999-01-01"})
    assert status == 200 and body["usage"] == [] and body["totals"]["jobs"] == 0
    status, body = await call(session, "GET", "/user/usage", params={"from": "yesterday"})
    assert status == 400 and "from" in body
    other = await stack.user()
    status, body = await call(other, "GET", "/user/usage")
    assert status == 200 and body["usage"] == []
