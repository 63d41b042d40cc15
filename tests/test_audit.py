"""The projector and the audit tool, against a real broker and real databases.

Waiting is event-driven: a helper polls the projector's stored offsets against the
topic's end offsets until they meet or a deadline passes (the poll interval is only a
pause between checks, never what a test asserts on).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.audit import cli
from services.contract.envelope import Event, derived_event_id
from services.contract.kafka_io import EventProducer
from services.contract.log_reader import end_offsets as log_end_offsets
from services.contract.registry import EventRegistry
from services.projector import readmodel as rm
from services.projector.projector import PROJECTION, Projector
from services.projector.readmodel import load_all_views, make_engine
from services.projector.state import fold
from services.settings import KafkaSettings
from tests.support.histories import HASH_B, synthetic_log

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent
UNKNOWN_TYPE = "QuotaAdjusted"  # a type only a newer producer knows


def unknown_event(job_id: str) -> Event:
    return Event(type=UNKNOWN_TYPE, job_id=job_id, payload={"cpu_hours": 3}, producer="future")


async def publish(kafka: KafkaSettings, events: Sequence[Event], *, chunk: int = 500) -> None:
    """Publish through the production producer; an unknown type through a newer registry."""
    registry = EventRegistry.from_directory()  # not default_registry(): that one is shared
    registry.add_schema(UNKNOWN_TYPE, 1, {"type": "object"})
    async with EventProducer(kafka, registry=registry) as producer:
        for start in range(0, len(events), chunk):
            await producer.publish_many(events[start:start + chunk])


async def end_offsets(kafka: KafkaSettings) -> dict[int, int]:
    return await log_end_offsets(kafka, kafka.jobs_topic)


async def stored_offsets(engine: AsyncEngine, kafka: KafkaSettings) -> dict[int, int]:
    async with engine.connect() as conn:
        present = await conn.run_sync(lambda c: inspect(c).has_table("projector_offsets"))
        if not present:
            return {}
        return await rm.load_offsets(conn, PROJECTION, kafka.jobs_topic)


async def applied_records(engine: AsyncEngine, kafka: KafkaSettings) -> int:
    """How many records (of any kind) the stored offsets cover."""
    return sum(o + 1 for o in (await stored_offsets(engine, kafka)).values())


async def wait_caught_up(engine: AsyncEngine, kafka: KafkaSettings,
                         within: float = 90.0) -> None:
    """Until every partition's stored offset is its end offset - 1."""
    ends = await end_offsets(kafka)
    wanted = {p: e - 1 for p, e in ends.items() if e > 0}
    deadline = time.monotonic() + within
    while True:
        stored = await stored_offsets(engine, kafka)
        if all(stored.get(p, -1) >= o for p, o in wanted.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"projector not caught up after {within} s: "
                                 f"stored {stored}, wanted {wanted}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_projector(kafka: KafkaSettings, engine: AsyncEngine,
                            max_batch: int = 500) -> AsyncIterator[Projector]:
    projector = Projector(kafka, engine, group_id=f"{kafka.topic_prefix}-projector",
                          max_batch=max_batch)
    task = asyncio.create_task(projector.run())
    try:
        yield projector
    finally:
        await projector.shutdown()
        await asyncio.wait_for(task, 30)


async def project_all(kafka: KafkaSettings, engine: AsyncEngine) -> None:
    async with running_projector(kafka, engine):
        await wait_caught_up(engine, kafka)


async def audit(*argv: str, kafka: KafkaSettings) -> tuple[int, str]:
    out = io.StringIO()
    code = await cli.run(argv, kafka=kafka, out=out)
    return code, out.getvalue()


# --- the projector -------------------------------------------------------------------------


async def test_read_model_equals_the_fold_of_the_log(
    kafka_settings: KafkaSettings, engine: AsyncEngine
) -> None:
    log = synthetic_log(seed=11, jobs=300, duplicate_every=29)
    await publish(kafka_settings, log)
    await project_all(kafka_settings, engine)
    async with engine.connect() as conn:
        stored = await load_all_views(conn)
    expected = fold(log)
    assert len(expected) == 300
    assert stored == expected


async def test_unknown_event_type_is_skipped_and_counted(
    kafka_settings: KafkaSettings, engine: AsyncEngine
) -> None:
    log = synthetic_log(seed=5, jobs=4)
    await publish(kafka_settings, [*log[:10], unknown_event(log[0].job_id), *log[10:]])
    await project_all(kafka_settings, engine)
    async with engine.connect() as conn:
        skips = await rm.load_skips(conn, PROJECTION)
        assert await load_all_views(conn) == fold(log)
    # Exactly once: a record re-read after a rebalance is dropped by its stored offset
    # before it is counted again.
    assert skips[f"unknown:{UNKNOWN_TYPE}"] == 1
    assert set(skips) <= {f"unknown:{UNKNOWN_TYPE}", "already applied"}


def retried_task_end(job_id: str) -> Event:
    """A worker's TaskCompleted, with the id a retry of the same step derives again."""
    return Event(type="TaskCompleted", job_id=job_id, producer="runner",
                 event_id=derived_event_id(job_id, "TaskCompleted", 0),
                 payload={"task_index": 0, "simulated_primaries": 5, "requested_primaries": 5,
                          "result_ref": HASH_B})


async def test_a_re_emitted_derived_event_is_skipped_in_any_later_batch(
    kafka_settings: KafkaSettings, engine: AsyncEngine
) -> None:
    log = synthetic_log(seed=13, jobs=20)
    job_id = log[0].job_id
    ended = retried_task_end(job_id)
    await publish(kafka_settings, [*log, ended])
    async with running_projector(kafka_settings, engine) as projector:
        await wait_caught_up(engine, kafka_settings)
        async with engine.connect() as conn:
            once = await load_all_views(conn)
        assert once == fold([*log, ended])
        # The retried step emits it again while the projector runs (its cache is warm)...
        await publish(kafka_settings, [ended])
        await wait_caught_up(engine, kafka_settings)
        assert projector.applied_total == len(log) + 1
    # ... and again to a projector started afresh (the stored ids alone must tell).
    await publish(kafka_settings, [ended, *synthetic_log(seed=14, jobs=2)])
    await project_all(kafka_settings, engine)
    async with engine.connect() as conn:
        views = await load_all_views(conn)
        skips = await rm.load_skips(conn, PROJECTION)
    assert views[job_id] == once[job_id]
    assert views[job_id].event_count == sum(e.job_id == job_id for e in log) + 1
    assert skips["duplicate"] == 2
    assert len(views) == len(once) + 2


def projector_env(kafka: KafkaSettings, db_file: Path, max_batch: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMJOBS_")}
    env.update({
        "SIMJOBS_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "SIMJOBS_TOPIC_PREFIX": kafka.topic_prefix,
        "SIMJOBS_JOBS_PARTITIONS": str(kafka.jobs_partitions),
        "SIMJOBS_TASKS_PARTITIONS": str(kafka.tasks_partitions),
        "SIMJOBS_DATABASE_URL": f"sqlite+aiosqlite:///{db_file}",
        "SIMJOBS_STATE_DIR": str(db_file.parent),
        "SIMJOBS_PROJECTOR_MAX_BATCH": str(max_batch),
        "SIMJOBS_PROJECTOR_GROUP": f"{kafka.topic_prefix}-projector",
    })
    return env


def spawn_projector(env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "services.projector"], cwd=ROOT,
                                env=env, stdout=sink, stderr=subprocess.STDOUT)


async def test_projector_process_survives_sigkill_mid_stream(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    log = synthetic_log(seed=23, jobs=300, duplicate_every=31)
    await publish(kafka_settings, log)
    total = sum((await end_offsets(kafka_settings)).values())
    db_file = tmp_path / "readmodel.sqlite3"
    env = projector_env(kafka_settings, db_file, max_batch=7)
    engine = make_engine(f"sqlite+aiosqlite:///{db_file}")
    log_file = tmp_path / "projector.log"
    first = spawn_projector(env, log_file)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done < total // 10:
            assert first.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, "the projector applied nothing in 60 s"
            await asyncio.sleep(0.01)
            done = await applied_records(engine, kafka_settings)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = await applied_records(engine, kafka_settings)
        assert 0 < at_kill < total, f"kill came too late ({at_kill}/{total}): lower the batch"

        second = spawn_projector(env, log_file)
        try:
            await wait_caught_up(engine, kafka_settings, within=120)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log_file.read_text()

        async with engine.connect() as conn:
            assert await load_all_views(conn) == fold(log)
            ids = [r[0] for r in await conn.execute(select(rm.applied_events.c.event_id))]
        assert len(ids) == len(set(ids))
        assert set(ids) == {e.event_id for e in log}
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        await engine.dispose()


def test_projector_exits_non_zero_when_kafka_is_unreachable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMJOBS_")}
    env.update({"SIMJOBS_KAFKA_BOOTSTRAP": "127.0.0.1:1", "SIMJOBS_STATE_DIR": str(tmp_path)})
    done = subprocess.run([sys.executable, "-m", "services.projector"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "fatal: Kafka at 127.0.0.1:1" in done.stderr


# --- the audit tool ------------------------------------------------------------------------


@pytest.fixture
async def projected(kafka_settings: KafkaSettings, engine: AsyncEngine) -> list[Event]:
    """A log with duplicates and one unknown event, fully projected into ``engine``."""
    log = synthetic_log(seed=7, jobs=40, duplicate_every=17)
    await publish(kafka_settings, [*log[:50], unknown_event(log[0].job_id), *log[50:]])
    await project_all(kafka_settings, engine)
    return log


async def test_rebuild_equals_live_and_verify_agrees(
    kafka_settings: KafkaSettings, engine: AsyncEngine, db_url: str, projected: list[Event],
    tmp_path: Path,
) -> None:
    target = f"sqlite+aiosqlite:///{tmp_path / 'rebuilt.sqlite3'}"
    code, out = await audit("rebuild", "--database", target, kafka=kafka_settings)
    assert code == 0, out
    assert "rebuilt 40 jobs" in out and f"unknown:{UNKNOWN_TYPE}=1" in out

    rebuilt = make_engine(target)
    try:
        async with rebuilt.connect() as a, engine.connect() as b:
            assert await load_all_views(a) == await load_all_views(b) == fold(projected)
    finally:
        await rebuilt.dispose()

    code, out = await audit("rebuild", "--database", target, kafka=kafka_settings)
    assert code == 1 and "refused" in out
    code, out = await audit("rebuild", "--database", target, "--force", kafka=kafka_settings)
    assert code == 0 and "rebuilt 40 jobs" in out

    code, out = await audit("verify", "--database", db_url, kafka=kafka_settings)
    n_tasks = sum(len(v.tasks) for v in fold(projected).values())
    assert code == 0, out
    assert f"read model equals rebuild (40 jobs, {n_tasks} tasks)" in out


async def test_verify_names_a_tampered_row(
    kafka_settings: KafkaSettings, engine: AsyncEngine, db_url: str, projected: list[Event],
) -> None:
    views = fold(projected)
    victim = next(v for v in views.values() if v.state.value == "COMPLETED")
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE jobs SET state = 'FAILED' WHERE job_id = :j"),
                           {"j": victim.job_id})
    code, out = await audit("verify", "--database", db_url, kafka=kafka_settings)
    assert code == 1
    assert f"jobs[{victim.job_id}].state: live='FAILED' rebuild='COMPLETED'" in out
    assert "1 differences in 1 jobs" in out


async def test_verify_compares_a_lagging_model_up_to_its_own_offsets(
    kafka_settings: KafkaSettings, engine: AsyncEngine, db_url: str, projected: list[Event],
) -> None:
    more = synthetic_log(seed=8, jobs=5)
    await publish(kafka_settings, more)  # the projector is stopped: the model lags
    code, out = await audit("verify", "--database", db_url, kafka=kafka_settings)
    assert code == 0, out
    assert "read model equals rebuild (40 jobs," in out


async def test_timeline_prints_a_jobs_events_in_order(
    kafka_settings: KafkaSettings, engine: AsyncEngine, projected: list[Event],
) -> None:
    job_id = projected[0].job_id
    history = [e for e in projected if e.job_id == job_id]
    code, out = await audit("timeline", job_id, kafka=kafka_settings)
    assert code == 0, out
    lines = out.splitlines()
    event_lines = [ln for ln in lines if ln.startswith("p")]
    assert [ln.split()[2] for ln in event_lines] == [e.type for e in history]
    offsets = [int(ln.split()[0].split("@")[1]) for ln in event_lines]
    assert offsets == sorted(offsets)
    duplicate_marks = ["duplicate id" in ln for ln in event_lines]
    ids = [e.event_id for e in history]
    assert duplicate_marks == [e.event_id in ids[:i] for i, e in enumerate(history)]
    final = fold(projected)[job_id]
    assert f"-> {final.state.value} " in [ln for ln in lines if "->" in ln][-1]
    assert f"unknown:{UNKNOWN_TYPE}" in out


async def test_applied_events_match_distinct_ids(
    kafka_settings: KafkaSettings, engine: AsyncEngine, projected: list[Event],
) -> None:
    async with engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(rm.applied_events))).scalar()
    assert n == len({e.event_id for e in projected})
