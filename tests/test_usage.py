"""Usage accounting (the faust worker) against the real broker, with a SIGKILL mid-stream.

The expected totals are derived here from the log itself, by the rules stated in
:mod:`services.projector.usage_model` (a job on its submission day, a task once, by its
first end event, on the day it ended), independently of the worker's code.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import pick_free_ports
from services.contract.envelope import Event
from services.projector.readmodel import make_engine
from services.projector.usage import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES, UsageCounter, make_app
from services.projector.usage_model import load_usage_offsets, usage_daily
from services.settings import KafkaSettings, UsageSettings
from tests.api.test_ops import samples
from tests.support.histories import synthetic_log
from tests.test_audit import end_offsets, projector_env, publish
from tests.test_ops import get

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent
Key = tuple[str, str, str, str]


def expected_usage(log: list[Event]) -> dict[Key, dict[str, float]]:
    jobs: dict[str, tuple[str, str, str]] = {}
    ended: set[tuple[str, int]] = set()
    out: dict[Key, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in log:
        p = e.payload
        day = e.occurred_at.date().isoformat()
        if e.type == "JobSubmitted" and e.job_id not in jobs:
            jobs[e.job_id] = (p["owner"], p["sim_type"], p["platform"])
            out[(p["owner"], day, p["sim_type"], p["platform"])]["jobs"] += 1
        elif e.type in ("TaskCompleted", "TaskFailed", "TaskCanceled") and e.job_id in jobs \
                and (e.job_id, p["task_index"]) not in ended:
            ended.add((e.job_id, p["task_index"]))
            owner, sim, platform = jobs[e.job_id]
            row = out[(owner, day, sim, platform)]
            row["tasks"] += 1
            row["primaries"] += p.get("simulated_primaries", 0)
            row["cpu_seconds"] += p.get("cpu_seconds", 0.0)
            row["wall_seconds"] += p.get("wall_seconds", 0.0)
    return {k: dict(v) for k, v in out.items()}


async def stored_usage(engine: AsyncEngine) -> dict[Key, dict[str, float]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(usage_daily))).mappings().all()
    return {(r["owner"], r["day"], r["sim_type"], r["platform"]):
            {k: r[k] for k in ("jobs", "tasks", "primaries", "cpu_seconds", "wall_seconds")
             if r[k]} for r in rows}


def rounded(usage: dict[Key, dict[str, float]]) -> dict[Key, dict[str, float]]:
    return {k: {name: round(value, 6) for name, value in v.items()} for k, v in usage.items()}


def usage_env(kafka: KafkaSettings, db_file: Path, batch: int) -> dict[str, str]:
    env = projector_env(kafka, db_file, max_batch=batch)
    env.update({"SIMJOBS_USAGE_GROUP": f"{kafka.topic_prefix}-usage",
                "SIMJOBS_USAGE_BATCH": str(batch), "SIMJOBS_USAGE_METRICS_PORT": "-1",
                "SIMJOBS_USAGE_DATA_DIR": str(db_file.parent / "faust")})
    return env


def spawn(env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "services.projector.usage"], cwd=ROOT,
                                env=env, stdout=sink, stderr=subprocess.STDOUT)


async def counted(engine: AsyncEngine, kafka: KafkaSettings) -> int:
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda c: inspect(c).has_table("usage_offsets")):
            return 0
        return sum(o + 1 for o in (await load_usage_offsets(conn, kafka.jobs_topic)).values())


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


async def wait_counted(engine: AsyncEngine, kafka: KafkaSettings, at_least: int,
                       proc: subprocess.Popen[bytes], log_file: Path,
                       within: float = 120.0) -> int:
    deadline = time.monotonic() + within
    while (done := await counted(engine, kafka)) < at_least:
        assert proc.poll() is None, text_of(log_file)
        assert time.monotonic() < deadline, f"counted {done}/{at_least}: {text_of(log_file)}"
        await asyncio.sleep(0.02)
    return done


async def test_usage_totals_survive_a_sigkill_of_the_faust_worker(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    log = synthetic_log(seed=31, jobs=240, duplicate_every=23)
    first_half, second_half = log[: len(log) // 2], log[len(log) // 2:]
    await publish(kafka_settings, first_half)
    db_file = tmp_path / "readmodel.sqlite3"
    env = usage_env(kafka_settings, db_file, batch=20)
    engine = make_engine(f"sqlite+aiosqlite:///{db_file}")
    log_file = tmp_path / "usage.log"
    first = spawn(env, log_file)
    second: subprocess.Popen[bytes] | None = None
    try:
        half = sum((await end_offsets(kafka_settings)).values())
        await wait_counted(engine, kafka_settings, half // 8, first, log_file)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = await counted(engine, kafka_settings)
        assert 0 < at_kill < half, f"kill came too late ({at_kill}/{half}): lower the batch"

        (port,) = pick_free_ports(1)
        second = spawn({**env, "SIMJOBS_USAGE_METRICS_PORT": str(port),
                        "SIMJOBS_LAG_INTERVAL": "0.2"}, log_file)
        await publish(kafka_settings, second_half)  # more events while it catches up
        total = sum((await end_offsets(kafka_settings)).values())
        await wait_counted(engine, kafka_settings, total, second, log_file)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # its own view: ready, and no lag left (sampled every 0.2 s)
            _, text = await asyncio.to_thread(get, f"{base}/metrics")
            lags = samples(text, "simjobs_consumer_lag")
            if lags and not any(lags.values()) and (await asyncio.to_thread(
                    get, f"{base}/readyz"))[0] == 200:
                break
            assert time.monotonic() < deadline, lags
            await asyncio.sleep(0.1)
        assert samples(text, "simjobs_usage_events_applied_total")[()] > 0
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log_file.read_text()

        # Sums of floats depend on the order of additions: compare to a microsecond.
        assert rounded(await stored_usage(engine)) == rounded(expected_usage(log))
        assert "Traceback" not in log_file.read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        await engine.dispose()


def test_usage_worker_exits_non_zero_when_kafka_is_unreachable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMJOBS_")}
    env.update({"SIMJOBS_KAFKA_BOOTSTRAP": "127.0.0.1:1", "SIMJOBS_STATE_DIR": str(tmp_path),
                "SIMJOBS_USAGE_METRICS_PORT": "-1"})
    done = subprocess.run([sys.executable, "-m", "services.projector.usage"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1, done.stderr
    assert "fatal: Kafka at 127.0.0.1:1" in done.stderr


async def test_the_usage_workers_fetches_wait_for_a_batch_of_records(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """faust builds its aiokafka consumer with fetch_min_bytes=1; the worker's asks for more.

    Built through faust's own path (transport, consumer, consumer thread), which is what a
    faust upgrade could silently bypass.
    """
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'usage.sqlite3'}")
    usage_settings = UsageSettings(group_id=f"{kafka_settings.topic_prefix}-usage",
                                   data_dir=tmp_path / "faust")
    app = make_app(kafka_settings, usage_settings, UsageCounter(engine, kafka_settings.jobs_topic))
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    try:
        await consumer.start()
        assert consumer._fetcher._fetch_min_bytes == FETCH_MIN_BYTES > 1
        assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # made for the thread, which never ran
        await engine.dispose()
