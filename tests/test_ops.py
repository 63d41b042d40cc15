"""Operations of the services that are not HTTP servers, run as real processes:
/metrics, /healthz, /readyz on their ops ports, and structured JSON logs with job ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Counter

from devstack import pick_free_ports
from services.contract.jobs import JobState
from services.ops.health import kafka_check
from services.ops.logs import JsonFormatter, job_context, setup_logging
from services.ops.metrics import labelled
from services.projector.readmodel import make_engine
from services.settings import KafkaSettings, LogSettings, RunnerSettings
from tests.api.test_ops import samples
from tests.runner.conftest import FAKE_SIMULATOR, beam, stack
from tests.runner.test_processes import runner_env
from tests.support.histories import synthetic_log
from tests.test_audit import end_offsets, projector_env, publish, wait_caught_up

ROOT = Path(__file__).resolve().parent.parent


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=sink)


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


async def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path,
                     within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while (status := (await asyncio.to_thread(get, f"{base}/readyz"))[0]) != 200:
        assert proc.poll() is None, text_of(log)
        assert time.monotonic() < deadline, f"/readyz still {status}"
        await asyncio.sleep(0.1)


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]  # every line is one JSON object


def test_log_lines_are_json_and_name_their_job() -> None:
    out = io.StringIO()
    setup_logging("svc", LogSettings(format="json", level=logging.INFO), stream=out)
    try:
        log = logging.getLogger("services.test")
        with job_context("job-1"):
            log.info("inside %s", "context")
        log.info("explicit", extra={"job_id": "job-2", "task_index": 3})
        log.info("about no job")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        lines = out.getvalue().splitlines()
        first, second, third, fourth = (json.loads(ln) for ln in lines)
        assert all(json.loads(ln).keys() <= {"time", "level", "logger", "message", "service",
                                             "job_id", "task_index", "exception"}
                   for ln in lines)
        seen: list[logging.LogRecord] = []

        class Capture(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        capture = Capture()
        log.addHandler(capture)
        log.info("what a record holds")
        log.removeHandler(capture)
        (record,) = seen  # no stack walk, thread or process lookup for any line
        assert (record.funcName, record.lineno, record.thread, record.process) == (
            "(unknown function)", 0, None, None)
        assert first["message"] == "inside context" and first["job_id"] == "job-1"
        assert first["service"] == "svc" and first["level"] == "INFO"
        assert second["job_id"] == "job-2" and second["task_index"] == 3
        assert "job_id" not in third
        assert "ValueError: boom" in fourth["exception"]
        text = io.StringIO()
        setup_logging("svc", LogSettings(format="text", level=logging.INFO), stream=text)
        with job_context("job-3"):
            log.info("readable")
        assert text.getvalue().rstrip().endswith("services.test [job-3]: readable")
    finally:
        setup_logging("tests", LogSettings(format="text", level=logging.WARNING))


@pytest.mark.kafka
async def test_projector_process_serves_metrics_and_readiness(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    log = synthetic_log(seed=41, jobs=30, duplicate_every=7)
    await publish(kafka_settings, log)
    (port,) = pick_free_ports(1)
    db_file = tmp_path / "readmodel.sqlite3"
    env = projector_env(kafka_settings, db_file, max_batch=100)
    env.update({"SIMJOBS_PROJECTOR_METRICS_PORT": str(port), "SIMJOBS_LAG_INTERVAL": "0.2",
                "SIMJOBS_LOG_FORMAT": "json"})
    log_file = tmp_path / "projector.log"
    base = f"http://127.0.0.1:{port}"
    proc = spawn("services.projector", env, log_file)
    engine = make_engine(f"sqlite+aiosqlite:///{db_file}")
    try:
        await wait_ready(base, proc, log_file)
        await wait_caught_up(engine, kafka_settings)
        total = sum((await end_offsets(kafka_settings)).values())
        deadline = time.monotonic() + 30
        while True:  # the lag gauge is sampled every 0.2 s
            status, text = await asyncio.to_thread(get, f"{base}/metrics")
            lags = samples(text, "simjobs_consumer_lag")
            if lags and not any(lags.values()):
                break
            assert time.monotonic() < deadline, lags
            await asyncio.sleep(0.1)
        assert status == 200
        applied = samples(text, "simjobs_projector_events_applied_total")[()]
        skipped = samples(text, "simjobs_projector_events_skipped_total")
        assert applied == len({e.event_id for e in log})
        assert applied + sum(skipped.values()) >= total
        assert skipped[(("reason", "duplicate"),)] >= 1
        consumed = samples(text, "simjobs_events_consumed_total")
        assert consumed[(("consumer", "projector"), ("type", "JobSubmitted"))] >= 30
        assert len(lags) == kafka_settings.jobs_partitions
        assert (await asyncio.to_thread(get, f"{base}/healthz"))[0] == 200
        _, body = await asyncio.to_thread(get, f"{base}/readyz")
        assert json.loads(body)["checks"]["database"]["ok"] is True
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, text_of(log_file)
        await engine.dispose()
    lines = json_lines(log_file)
    assert {line["service"] for line in lines} == {"projector"}
    assert any("stopped after applying" in line["message"] for line in lines)


@pytest.mark.kafka
async def test_runner_process_reports_tasks_and_simulator_time(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    prefix = kafka_settings.topic_prefix
    runner_settings = RunnerSettings(
        concurrency=2, wall_time_limit=60, grace_seconds=2, workdir_root=tmp_path / "work",
        executables={"shieldhit": str(FAKE_SIMULATOR)},
        coordinator_group=f"{prefix}-coordinator", worker_group=f"{prefix}-workers")
    (port,) = pick_free_ports(1)
    env = runner_env(kafka_settings, runner_settings, tmp_path, "r1", 0.05)
    env.update({"SIMJOBS_RUNNER_METRICS_PORT": str(port), "SIMJOBS_LOG_FORMAT": "json",
                "SIMJOBS_LAG_INTERVAL": "0.2"})
    log_file = tmp_path / "runner.log"
    base = f"http://127.0.0.1:{port}"
    proc = spawn("services.runner", env, log_file)
    try:
        await wait_ready(base, proc, log_file)
        async with stack(kafka_settings, None, tmp_path,
                         artifacts_dir=tmp_path / "artifacts") as st:
            job_id = await st.submit(beam(400), ntasks=4, primaries=400)
            view = await st.wait_state(job_id, JobState.COMPLETED, JobState.FAILED)
            assert view.state is JobState.COMPLETED, view.failure_reason
            events = await st.events(job_id)
        deadline = time.monotonic() + 30
        while True:  # lag is sampled every 0.2 s, once each consumer has fetched
            _, text = await asyncio.to_thread(get, f"{base}/metrics")
            lag = samples(text, "simjobs_consumer_lag")
            if {dict(k)["consumer"] for k in lag} == {"coordinator", "worker"}:
                break
            assert time.monotonic() < deadline, lag
            await asyncio.sleep(0.1)
        ended = samples(text, "simjobs_runner_tasks_ended_total")
        assert ended[(("outcome", "completed"),)] == 4
        assert samples(text, "simjobs_runner_tasks_running")[()] == 0
        completed = [e for e in events if e.type == "TaskCompleted"]
        wall = samples(text, "simjobs_runner_simulator_seconds_total")[()]
        cpu = samples(text, "simjobs_runner_simulator_cpu_seconds_total")[()]
        assert wall == pytest.approx(sum(e.payload["wall_seconds"] for e in completed),
                                     abs=0.01)
        assert cpu == pytest.approx(sum(e.payload["cpu_seconds"] for e in completed), abs=0.01)
        assert 0 < cpu < wall  # the stand-in sleeps most of the time
        produced = samples(text, "simjobs_events_produced_total")
        assert produced[(("type", "TaskCompleted"),)] == 4
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, text_of(log_file)
    lines = json_lines(log_file)
    about_job = [ln for ln in lines if job_id in ln["message"]]
    assert about_job and all(ln.get("job_id") == job_id for ln in about_job)


@pytest.mark.kafka
async def test_the_kafka_check_asks_for_its_own_topic_and_fails_without_it(
        kafka_settings: KafkaSettings) -> None:
    await kafka_check(kafka_settings).probe()  # the jobs topic exists
    await kafka_check(kafka_settings, kafka_settings.tasks_topic).probe()
    missing = replace(kafka_settings, topic_prefix=f"{kafka_settings.topic_prefix}-gone")
    with pytest.raises(LookupError, match=f"topic {missing.jobs_topic} does not exist"):
        await kafka_check(missing).probe()


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_log_times_are_what_datetime_writes(created: float) -> None:
    """The formatter's cached-second clock writes what ``datetime`` would, to the ms."""
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert JsonFormatter("api")._time(created) == expected.replace("+00:00", "Z")


def test_a_remembered_labels_child_is_the_metrics_own() -> None:
    """Caching ``labels()`` must not split a series: samples land where /metrics reads."""
    counter = Counter("simjobs_test_labelled", "test", ["kind"], registry=None)
    child = labelled(counter)
    child("a").inc()
    child("a").inc()
    assert child("a") is counter.labels("a")
    assert counter.labels("a")._value.get() == 2
