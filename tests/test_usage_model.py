"""The usage transaction (``apply_usage``) on SQLite and PostgreSQL, without Kafka.

Batches of any size, redelivered batches and re-emitted events must give the totals the
rules give when the log is read one event at a time (``expected_usage``, written
independently in :mod:`tests.test_usage`).
"""

from __future__ import annotations

import random
from dataclasses import replace

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.envelope import Event
from services.projector.readmodel import create_schema
from services.projector.usage_model import (
    apply_usage,
    load_usage_offsets,
    usage_jobs,
    usage_metadata,
    usage_tasks,
)
from tests.support.histories import synthetic_log
from tests.test_usage import Key, expected_usage, rounded, stored_usage

TOPIC = "t.jobs"


def nonzero(usage: dict[Key, dict[str, float]]) -> dict[Key, dict[str, float]]:
    """Without zero counters (``stored_usage`` leaves them out)."""
    return {k: {name: v for name, v in row.items() if v} for k, row in usage.items()}


async def apply_in_batches(engine: AsyncEngine, log: list[Event], rng: random.Random,
                           *, redeliver: float) -> tuple[int, int]:
    """Apply ``log`` in random batches, some delivered twice; (counted, duplicates)."""
    counted = duplicates = 0
    start = 0
    while start < len(log):
        size = rng.choice([1, 2, 7, 50, 400])
        positioned: list[tuple[int, int, Event | None]] = [
            (0, start + i, e) for i, e in enumerate(log[start:start + size])]
        for _ in range(2 if rng.random() < redeliver else 1):
            async with engine.begin() as conn:
                batch = await apply_usage(conn, TOPIC, positioned)
            counted += batch.counted
            duplicates += batch.duplicates
        start += size
    return counted, duplicates


async def test_batches_and_redeliveries_count_each_job_and_task_once(
        engine: AsyncEngine) -> None:
    await create_schema(engine, usage_metadata)
    log = synthetic_log(11, 120, duplicate_every=9)
    counted, duplicates = await apply_in_batches(engine, log, random.Random(3), redeliver=0.3)

    expected = expected_usage(log)
    assert rounded(await stored_usage(engine)) == rounded(nonzero(expected))
    jobs = sum(int(v.get("jobs", 0)) for v in expected.values())
    tasks = sum(int(v.get("tasks", 0)) for v in expected.values())
    assert counted == jobs + tasks
    assert duplicates > 0  # the re-emitted events and redelivered batches were seen
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(usage_jobs)) == jobs
        assert await conn.scalar(select(func.count()).select_from(usage_tasks)) == tasks
        assert await load_usage_offsets(conn, TOPIC) == {0: len(log) - 1}


async def test_a_task_end_before_its_submission_in_one_batch_is_an_orphan(
        engine: AsyncEngine) -> None:
    await create_schema(engine, usage_metadata)
    log = synthetic_log(5, 1, max_tasks=2)
    submitted = next(e for e in log if e.type == "JobSubmitted")
    end = next(e for e in log if e.type in ("TaskCompleted", "TaskFailed", "TaskCanceled"))
    early = replace(end, event_id="early-" + end.event_id)  # the end, seen before the job
    batch_log = [early, submitted, end]
    async with engine.begin() as conn:
        batch = await apply_usage(conn, TOPIC, [(0, i, e) for i, e in enumerate(batch_log)])
    assert (batch.orphans, batch.counted, batch.duplicates) == (1, 2, 0)
    assert rounded(await stored_usage(engine)) == rounded(nonzero(expected_usage(batch_log)))
