"""Reading a task's state off SLURM's records and its log: pure functions of what was seen.

The bridge reports batch tasks with the events of the direct platform; SLURM's
own view (its state word, exit code and signal) rides along in every terminal
event's ``platform_state``, so ``TIMEOUT`` or ``OUT_OF_MEMORY`` is never lost in
a plain FAILED.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.platform.outcome import CompletedProcess, failure_reason
from services.simulators.base import Progress, Simulator
from services.slurm_bridge.commands import LOG_TAIL_BYTES, Phase, SlurmRecord

#: What a SLURM end state means, in the words of a task's failure reason.
_STATE_REASONS = {
    "TIMEOUT": "time limit reached",
    "OUT_OF_MEMORY": "out of memory",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node failed to boot",
    "DEADLINE": "deadline reached",
    "PREEMPTED": "preempted",
    "REVOKED": "revoked",
}


def tasks_seen(records: Iterable[SlurmRecord]) -> dict[int, SlurmRecord]:
    """Array index -> its record (a pending, unsplit array stands for all its indices)."""
    seen: dict[int, SlurmRecord] = {}
    for record in records:
        for index in record.task_indices:
            seen[index] = record
    return seen


def state_word(record: SlurmRecord) -> str:
    """The state without decorations (``CANCELLED by 1001`` -> ``CANCELLED``)."""
    return record.state.split()[0] if record.state.split() else record.state


def platform_state(record: SlurmRecord) -> dict[str, Any]:
    """The ``platform_state`` of a task event: SLURM's state, exit code and signal."""
    return {"state": state_word(record), "exit_code": record.exit_code,
            "signal": record.signal}


def failure(record: SlurmRecord, log: bytes) -> tuple[str, int | None]:
    """Why a task that SLURM ended without success failed, and its exit status if it exited.

    A non-zero exit reads as on the direct platform (``simulator exited with status 2:
    <its last line>``); the other end states say what SLURM did.
    """
    word = state_word(record)
    if word == "FAILED":
        if record.signal:
            returncode = -record.signal
        else:
            returncode = record.exit_code if record.exit_code is not None else 1
        done = CompletedProcess(argv=(), returncode=returncode, output=log, wall_seconds=0.0)
        reason = failure_reason(done)
        if record.reason not in ("None", "", "NonZeroExitCode"):
            reason += f" (SLURM reason {record.reason})"
        return reason, done.exit_code
    if record.phase is Phase.CANCELLED:
        return f"cancelled on the cluster, not by its owner (SLURM state {record.state})", None
    what = _STATE_REASONS.get(word, "ended without success")
    return f"{what} (SLURM state {word})", None


def progress(simulator: Simulator, tail: bytes) -> Progress | None:
    """The furthest progress a log tail shows (its first line dropped if the tail was cut)."""
    lines = tail.decode(errors="replace").splitlines()
    if len(tail) >= LOG_TAIL_BYTES and lines:
        lines = lines[1:]
    best: Progress | None = None
    for line in lines:
        found = simulator.parse_progress(line)
        if found is not None and (best is None or found.simulated >= best.simulated):
            best = found
    return best
