"""Which misses the API waits for: job ids it accepted within the last minute."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.api.readwait import RECENT_SECONDS, JobWaiter
from services.projector.readmodel import make_engine


async def test_accepted_ids_expire_after_the_window_oldest_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'rm.sqlite3'}")
    waiter = JobWaiter(engine, bound_seconds=1.0)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # readwait's clock
    try:
        for n in range(30_000):  # 500 ids per second for a minute
            clock[0] = 1000.0 + n / 500
            waiter.published(f"old-{n}")
        assert waiter.worth_waiting("old-29999")
        clock[0] += RECENT_SECONDS / 2
        waiter.published("new-0")
        # Only the ids of the last minute are kept, and those still count.
        in_window = [n for n in range(30_000) if 1000.0 + n / 500 >= clock[0] - RECENT_SECONDS]
        assert list(waiter._published) == [f"old-{n}" for n in in_window] + ["new-0"]
        assert len(in_window) == 15_001
        assert not waiter.worth_waiting("old-0")
        assert waiter.worth_waiting("old-29999") and waiter.worth_waiting("new-0")
        clock[0] += RECENT_SECONDS + 1
        waiter.published("new-1")
        assert list(waiter._published) == ["new-1"]
    finally:
        await engine.dispose()
