"""Domain vocabulary shared by every service: states, the primaries split, task seeds."""

from __future__ import annotations

import hashlib
from enum import StrEnum


class JobState(StrEnum):
    """Job and task states, spelled as the YAPTIDE API spells them."""

    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    MERGING_QUEUED = "MERGING_QUEUED"
    MERGING_RUNNING = "MERGING_RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        """Terminal states never change once reached."""
        return self in TERMINAL


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELED})
CANCELABLE = frozenset(
    {JobState.PENDING, JobState.RUNNING, JobState.MERGING_QUEUED, JobState.MERGING_RUNNING}
)
DELETABLE = frozenset(
    {JobState.MERGING_QUEUED, JobState.MERGING_RUNNING, *TERMINAL}
)


def split_primaries(total: int, ntasks: int) -> list[int]:
    """Share ``total`` primaries over ``ntasks`` tasks with no remainder lost.

    The first ``total % ntasks`` tasks take one more, so the shares differ by
    at most one and always add up to ``total`` (the original dropped the rest).
    """
    if ntasks < 1:
        raise ValueError("ntasks must be at least 1")
    if total < 0:
        raise ValueError("total must not be negative")
    base, extra = divmod(total, ntasks)
    return [base + 1 if i < extra else base for i in range(ntasks)]


def task_seed(base_seed: int, task_index: int) -> int:
    """The seed of one task, derived from the job's base seed.

    A hash rather than ``base + index`` so that two jobs whose base seeds are
    close never share task seeds; stable across processes and releases, so a
    re-run of a task reproduces it exactly. Fits a signed 31-bit integer,
    which every simulator accepts.
    """
    digest = hashlib.sha256(f"{base_seed}:{task_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
