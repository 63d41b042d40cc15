"""The audit tools on a real job: state-as-of against what GET /jobs said, bundles.

A job runs through the whole stack (API, projector, the real runner with the SHIELD-HIT12A
stand-in). While it runs, GET /jobs is sampled at moments when the log is known to be
still: the projector has applied the log's end and the end does not move across the
request, so the answer is the fold of exactly the records the log held at that moment.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.api.jobs import status_body
from services.artifacts.store import ArtifactStore
from services.audit.asof import state_as_of
from services.audit.bundle import (
    BundleCorrupted,
    export_bundle,
    import_bundle,
    inspection_settings,
    read_bundle,
)
from services.audit.history import job_records
from services.contract.envelope import utc_now
from services.contract.jobs import JobState
from services.contract.log_reader import LogReader, end_offsets
from services.projector import readmodel as rm
from services.projector.readmodel import make_engine
from services.runner.service import Runner
from services.settings import KafkaSettings, RunnerSettings, Settings
from tests.api.conftest import Realm, Stack, api_settings, make_settings, running_stack
from tests.conftest import fresh_topics
from tests.runner.conftest import FAKE_SIMULATOR, beam
from tests.test_audit import wait_caught_up

pytestmark = pytest.mark.kafka

TERMINAL = {s.value for s in JobState if s.terminal}


def runner_settings(kafka: KafkaSettings, tmp: Path) -> RunnerSettings:
    return RunnerSettings(
        concurrency=2, wall_time_limit=60, grace_seconds=2.0, workdir_root=tmp / "work",
        executables={"shieldhit": str(FAKE_SIMULATOR)},
        coordinator_group=f"{kafka.topic_prefix}-coordinator",
        worker_group=f"{kafka.topic_prefix}-workers", worker_name="show")


@asynccontextmanager
async def deployment(kafka: KafkaSettings, realm: Realm, tmp: Path, *,
                     runner: bool = True) -> AsyncIterator[tuple[Stack, Settings]]:
    """API + projector (+ runner) of one deployment, sharing one artifact store."""
    settings = make_settings(kafka, f"sqlite+aiosqlite:///{tmp / 'rm.sqlite3'}", tmp)
    async with running_stack(settings, api_settings(realm)) as stack:
        run = (Runner(kafka, runner_settings(kafka, tmp), ArtifactStore(settings.artifacts.root))
               if runner else None)
        task = asyncio.create_task(run.run()) if run is not None else None
        try:
            yield stack, settings
        finally:
            if run is not None and task is not None:
                await run.shutdown()
                await task


async def submit(session: aiohttp.ClientSession, ntasks: int, primaries: int) -> str:
    body = {"sim_type": "shieldhit", "ntasks": ntasks, "input_type": "files",
            "title": "audit show", "input_files": beam(primaries)}
    async with session.post("/jobs/direct", json=body) as r:
        assert r.status == 202, await r.text()
        job_id: str = (await r.json())["job_id"]
        return job_id


async def still_sample(session: aiohttp.ClientSession, kafka: KafkaSettings, db: Any,
                       job_id: str) -> tuple[datetime, dict[str, Any]] | None:
    """GET /jobs at a moment the log is still (see the module docstring), else None."""
    before = await end_offsets(kafka, kafka.jobs_topic)
    await wait_caught_up(db, kafka)
    moment = utc_now()
    async with session.get("/jobs", params={"job_id": job_id}) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
    after = await end_offsets(kafka, kafka.jobs_topic)
    return (moment, body) if before == after else None


async def test_state_as_of_matches_get_jobs_and_a_bundle_replays_elsewhere(
        kafka_bootstrap: str, realm: Realm, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "0.15")
    kafka = await fresh_topics(kafka_bootstrap)
    samples: list[tuple[datetime, dict[str, Any]]] = []
    async with deployment(kafka, realm, tmp_path / "a") as (stack, settings):
        session = await stack.user()
        db = make_engine(settings.database.url)
        try:
            job_id = await submit(session, ntasks=3, primaries=3000)
            while not samples or samples[-1][1]["job_state"] not in TERMINAL:
                sample = await still_sample(session, kafka, db, job_id)
                if sample is not None and (not samples or sample[1] != samples[-1][1]):
                    samples.append(sample)
            async with db.connect() as conn:
                stored = (await rm.load_views(conn, [job_id]))[job_id]
            bundle = tmp_path / "job.bundle.jsonl"
            exported = await export_bundle(kafka, ArtifactStore(settings.artifacts.root),
                                           job_id, bundle, engine=db)
        finally:
            await db.dispose()

    # Three moments: the first still one, one while tasks were running, the end.
    running = [s for s in samples[1:-1] if s[1]["job_state"] == "RUNNING"
               and 0 < sum(t["simulated_primaries"] for t in s[1]["job_tasks_status"]) < 3000]
    assert running, [s[1]["job_state"] for s in samples]
    chosen = [samples[0], running[len(running) // 2], samples[-1]]
    assert samples[-1][1]["job_state"] == "COMPLETED"
    for moment, body in chosen:
        as_of = await state_as_of(kafka, job_id, at=moment)
        assert as_of.state is not None
        assert {"message": "Job status", **status_body(as_of.state)} == body, moment

    # The bundle: every record and every artifact they name, the stored state with them.
    assert exported.expected_source.startswith("read model")
    content = read_bundle(bundle)
    records = await job_records(kafka, job_id)
    assert [r.value for r in content.records] == [r.value for r in records]
    assert content.expected == stored
    submitted = ArtifactStore(settings.artifacts.root)
    assert all(submitted.get_bytes(ref) == data for ref, data in content.artifacts.items())
    assert stored.input_ref in content.artifacts and stored.result_ref in content.artifacts
    assert all(t.result_ref in content.artifacts and t.log_ref in content.artifacts
               for t in stored.tasks)

    # Import into another deployment (another prefix, its own artifact store): the
    # history replays with today's code to the same state, and its artifacts are there.
    other = await fresh_topics(kafka_bootstrap)
    other_store = ArtifactStore(tmp_path / "b-artifacts")
    imported = await import_bundle(bundle, other, other_store)
    assert imported.topic == f"{other.topic_prefix}.imported.jobs"
    assert imported.events_written == len(records)
    assert imported.replay.ok, imported.replay.failure
    assert imported.replay.state == stored
    assert all(other_store.get_bytes(ref) == data for ref, data in content.artifacts.items())
    # As-of on the imported log uses the times the records entered the source log.
    inspection = inspection_settings(other)
    moment, body = chosen[1]
    as_of = await state_as_of(inspection, job_id, at=moment)
    assert as_of.state is not None
    assert {"message": "Job status", **status_body(as_of.state)} == body
    again = await import_bundle(bundle, other, other_store)
    assert again.already_imported and again.events_written == 0 and again.replay.ok


async def test_an_imported_job_is_never_run_by_the_importing_deployment(
        kafka_bootstrap: str, realm: Realm, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A job exported while still pending, imported where a runner and projector run."""
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "0.02")
    source = await fresh_topics(kafka_bootstrap)
    async with deployment(source, realm, tmp_path / "a", runner=False) as (stack, settings):
        pending = await submit(await stack.user(), ntasks=2, primaries=200)
        bundle = tmp_path / "pending.bundle.jsonl"
        await export_bundle(source, ArtifactStore(settings.artifacts.root), pending, bundle)
    target = await fresh_topics(kafka_bootstrap)
    async with deployment(target, realm, tmp_path / "b") as (stack, settings):
        imported = await import_bundle(bundle, target, ArtifactStore(settings.artifacts.root))
        assert imported.replay.state is not None
        assert imported.replay.state.state is JobState.PENDING
        # A canary job submitted after the import runs to its end on the same runner.
        session = await stack.user()
        canary = await submit(session, ntasks=2, primaries=200)
        state = ""
        while state not in TERMINAL:
            async with session.get("/jobs", params={"job_id": canary}) as r:
                state = (await r.json())["job_state"]
            await asyncio.sleep(0.1)
        async with session.get("/jobs", params={"job_id": pending}) as r:
            assert r.status == 404  # not in this deployment's read model
    for topic in (target.jobs_topic, target.tasks_topic):
        keys: set[bytes | None] = set()
        async for batch in LogReader(target, topic).batches():
            keys.update(r.key for r in batch)
        assert pending.encode() not in keys and canary.encode() in keys, topic
    assert [r.offset for r in await job_records(target, pending,
                                                topic=inspection_settings(target).jobs_topic)]


def test_a_corrupted_bundle_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    store = ArtifactStore(tmp_path / "store")
    ref = store.put_bytes(b"result bytes")
    event = ('{"causation_id":null,"correlation_id":null,"event_id":"e1","job_id":"j1",'
             '"occurred_at":"2026-12-01T00:00:00.000000Z","payload":{"result_ref":"' + ref +
             '","task_index":0},"producer":"t","type":"X","version":1}')
    lines = [
        {"kind": "header", "format": "simjobs-bundle", "version": 1, "bundle_id": str(uuid.uuid4()),
         "job_id": "j1", "exported_at": "2026-12-01T00:00:00.000000Z", "source_topic": "s.jobs",
         "events": 1, "artifacts": 1, "expected": None, "expected_source": "none"},
        {"kind": "event", "partition": 0, "offset": 0, "timestamp_ms": 1, "value": event,
         "sha256": hashlib.sha256(event.encode()).hexdigest()},
        {"kind": "artifact", "ref": ref, "size": 12,
         "data": base64.b64encode(b"result bytes").decode()},
    ]
    raw = b"".join(json.dumps(x, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                   for x in lines)
    end = {"kind": "end", "lines": 3, "sha256": hashlib.sha256(raw).hexdigest()}
    good.write_bytes(raw + json.dumps(end).encode() + b"\n")
    assert read_bundle(good).artifacts == {ref: b"result bytes"}

    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(raw)
    with pytest.raises(BundleCorrupted, match="truncated"):
        read_bundle(truncated)
    edited = tmp_path / "edited.jsonl"
    original = good.read_bytes()
    assert original.count(b'task_index\\":0') == 1  # inside the record's JSON text
    edited.write_bytes(original.replace(b'task_index\\":0', b'task_index\\":1'))
    with pytest.raises(BundleCorrupted, match="sha256"):
        read_bundle(edited)
    swapped = tmp_path / "swapped.jsonl"
    forged = base64.b64encode(b"other bytes!").decode().encode()
    swapped.write_bytes(good.read_bytes().replace(base64.b64encode(b"result bytes"), forged))
    with pytest.raises(BundleCorrupted, match="address"):
        read_bundle(swapped)
