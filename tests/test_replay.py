"""Replay: today's code against committed histories and against a live deployment.

The fixtures in ``tests/fixtures/replay`` (how each was made is in its ``generated_by``):

* ``runner_first_cut_v1.json``: a 3-task job with a failing task, captured from the real
  runner at commit 449256a, before task end events carried ``cpu_seconds`` (the older
  format: the stream an earlier release wrote);
* ``runner_with_cpu_seconds_v1.json``: a 3-task job captured from the current runner;
* ``broken_completed_without_result.json``: the first one with a TaskCompleted's
  ``result_ref`` removed by hand, which must fail with a typed error.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.artifacts.store import ArtifactStore
from services.audit import cli
from services.audit.replay import (
    MissingHistory,
    ReplayFailure,
    StateDiverged,
    UnreadableEvent,
    load_fixture,
    replay_fixture,
    replay_history,
    replay_read_model,
)
from services.contract.envelope import Event
from services.contract.jobs import JobState
from services.projector.state import fold
from services.settings import KafkaSettings
from tests.api.conftest import make_settings
from tests.conftest import fresh_topics
from tests.support.histories import synthetic_log
from tests.test_audit import UNKNOWN_TYPE, project_all, publish, unknown_event

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "replay"
OLDER = FIXTURES / "runner_first_cut_v1.json"
NORMAL = FIXTURES / "runner_with_cpu_seconds_v1.json"
BROKEN = FIXTURES / "broken_completed_without_result.json"


@pytest.mark.parametrize("path", [NORMAL, OLDER], ids=["normal", "older-format"])
def test_committed_histories_replay_to_their_stored_state(path: Path) -> None:
    fixture = load_fixture(path)
    result = replay_fixture(fixture)
    assert result.ok, result.failure
    assert result.state == fixture.expected
    assert result.records == len(fixture.records)


def test_the_older_fixture_is_really_the_older_format() -> None:
    events = [json.loads(r) for r in load_fixture(OLDER).records]
    ends = [e for e in events if e["type"] in ("TaskCompleted", "TaskFailed")]
    assert ends and not any("cpu_seconds" in e["payload"] for e in ends)
    now = [json.loads(r) for r in load_fixture(NORMAL).records]
    assert all("cpu_seconds" in e["payload"] for e in now if e["type"] == "TaskCompleted")


def test_the_broken_history_fails_with_a_typed_error() -> None:
    fixture = load_fixture(BROKEN)
    result = replay_fixture(fixture)
    assert isinstance(result.failure, UnreadableEvent)
    assert result.failure.reason == "invalid:TaskCompleted"
    assert "result_ref" in str(result.failure)
    assert result.failure.job_id == fixture.job_id


def test_a_stored_state_the_code_does_not_reach_is_a_divergence() -> None:
    fixture = load_fixture(NORMAL)
    tasks = (replace(fixture.expected.tasks[0], state=JobState.FAILED),
             *fixture.expected.tasks[1:])
    stored = replace(fixture.expected, state=JobState.FAILED, tasks=tasks)
    result = replay_history(fixture.job_id, fixture.records, stored)
    assert isinstance(result.failure, StateDiverged)
    named = {d.field: (d.stored, d.replayed) for d in result.failure.diffs}
    assert named == {"state": (JobState.FAILED, JobState.COMPLETED),
                     "tasks[0].state": ("FAILED", "COMPLETED")}


def test_a_stored_state_without_history_is_missing() -> None:
    fixture = load_fixture(NORMAL)
    result = replay_history(fixture.job_id, [], fixture.expected)
    assert isinstance(result.failure, MissingHistory)


async def test_cli_replays_fixtures_and_maps_failures_by_job(tmp_path: Path) -> None:
    out = io.StringIO()
    code = await cli.run(["replay", "--fixture", str(NORMAL), "--fixture", str(OLDER),
                          "--fixture", str(BROKEN)], out=out)
    text_out = out.getvalue()
    assert code == 1, text_out
    broken = load_fixture(BROKEN).job_id
    assert f"{broken}: FAILED UnreadableEvent" in text_out
    assert f"{load_fixture(NORMAL).job_id}: ok" in text_out
    assert "replayed 3 jobs: 1 failed" in text_out


# --- a live deployment ---------------------------------------------------------------------


@pytest.mark.kafka
async def test_replay_of_the_log_equals_the_read_model(
        kafka_settings: KafkaSettings, engine: AsyncEngine, db_url: str) -> None:
    log = synthetic_log(seed=3, jobs=30, duplicate_every=13)
    await publish(kafka_settings, log)
    await project_all(kafka_settings, engine)
    results = await replay_read_model(kafka_settings, engine)
    assert results.ok, results.failures
    assert {j: r.state for j, r in results.results.items()} == fold(log)

    victim = next(v for v in fold(log).values() if v.state is JobState.COMPLETED)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE tasks SET simulated_primaries = 1 "
                                "WHERE job_id = :j AND task_index = 0"), {"j": victim.job_id})
    results = await replay_read_model(kafka_settings, engine)
    assert set(results.failures) == {victim.job_id}
    failure: ReplayFailure = results.failures[victim.job_id]
    assert isinstance(failure, StateDiverged)
    assert [d.field for d in failure.diffs] == ["tasks[0].simulated_primaries"]

    out = io.StringIO()
    code = await cli.run(["replay", "--database", db_url], kafka=kafka_settings, out=out)
    assert code == 1 and f"{victim.job_id}: FAILED StateDiverged" in out.getvalue()
    assert "replayed 30 jobs: 1 failed" in out.getvalue()


@pytest.mark.kafka
async def test_replay_reports_records_todays_code_cannot_read(
        kafka_settings: KafkaSettings, engine: AsyncEngine) -> None:
    log = synthetic_log(seed=4, jobs=3)
    victim = log[0].job_id
    await publish(kafka_settings, [*log, unknown_event(victim)])
    await project_all(kafka_settings, engine)
    results = await replay_read_model(kafka_settings, engine)
    assert set(results.failures) == {victim}
    failure = results.failures[victim]
    assert isinstance(failure, UnreadableEvent) and failure.reason == f"unknown:{UNKNOWN_TYPE}"


# --- the command line: as-of, export, import -----------------------------------------------


@pytest.mark.kafka
async def test_cli_as_of_export_and_import(
        kafka_settings: KafkaSettings, engine: AsyncEngine, db_url: str, tmp_path: Path,
        kafka_bootstrap: str) -> None:
    store = ArtifactStore(tmp_path / "artifacts")  # the store make_settings(tmp_path) names
    input_ref = store.put_json({"input_type": "FILES", "input_files": {"beam.dat": "NSTAT 9"}})
    job_id = "20261201-000000-00000000-0000-4000-8000-00000000c11aDIRECT"
    submitted = Event(type="JobSubmitted", job_id=job_id, producer="test", payload={
        "owner": "u:cli", "title": "cli", "sim_type": "shieldhit", "platform": "direct",
        "input_type": "files", "ntasks": 2, "number_of_all_primaries": 9, "base_seed": 1,
        "input_ref": input_ref})
    canceled = submitted.caused("CancelRequested", {"requested_by": "u:cli"}, "test")
    await publish(kafka_settings, [submitted, canceled])
    await project_all(kafka_settings, engine)

    async def run(*argv: str, kafka: KafkaSettings = kafka_settings) -> tuple[int, str]:
        out = io.StringIO()
        code = await cli.run(argv, kafka=kafka, out=out,
                             settings=make_settings(kafka, db_url, tmp_path))
        return code, out.getvalue()

    code, out = await run("as-of", job_id, "--events", "1")
    assert code == 0, out
    assert json.loads(out)["state"]["state"] == "PENDING" and json.loads(out)["records"] == 1
    code, out = await run("as-of", job_id, "2999-01-01T00:00:00Z")
    assert code == 0 and json.loads(out)["state"]["state"] == "CANCELED"
    code, out = await run("as-of", job_id, "2000-01-01T00:00:00Z")
    assert code == 1 and "no records" in out

    bundle = tmp_path / "job.jsonl"
    code, out = await run("export", job_id, "--out", str(bundle))
    assert code == 0, out
    assert "2 records, 1 artifacts" in out and "state from read model" in out
    other = await fresh_topics(kafka_bootstrap)
    code, out = await run("import", str(bundle), kafka=other)
    assert code == 0, out
    assert f"into {other.topic_prefix}.imported.jobs: 2 records and 0 new artifacts" in out
    assert "replay ok: the imported history equals the exported state (CANCELED)" in out
    code, out = await run("import", str(bundle), kafka=other)
    assert code == 0 and "already imported, nothing written" in out
