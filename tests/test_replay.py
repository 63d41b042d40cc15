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
from services.contract.jobs import JobState
from services.projector.state import fold
from services.settings import KafkaSettings
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
