"""SLURM commands: pure builders of command lines and pure parsers of what they print.

SSH I/O happens elsewhere (:mod:`services.slurm_bridge.cluster`), between a
builder and its parser, so every parser is tested offline against outputs
captured from a real SLURM (``tests/slurm/test_commands.py``). Formats are
pinned: ``--noheader``, explicit ``--Format`` fields ending in ``|``,
``SLURM_TIME_FORMAT=%s`` (epoch seconds, so no time zone is guessed).

Verified on SLURM 22.05.8 (Debian 12), the version ``devstack/slurm.py`` installs.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.platform.outcome import CompletedProcess
from services.slurm_bridge.errors import (
    CommandFailed,
    CommandKilled,
    OutputError,
    SlurmRefused,
)

log = logging.getLogger(__name__)

_JOB_NUMBER = re.compile(r"[0-9]{1,12}")


def _check_ids(job_ids: Sequence[str]) -> list[str]:
    ids = sorted(set(job_ids), key=int) if all(_JOB_NUMBER.fullmatch(i) for i in job_ids) \
        else None
    if not ids:
        raise ValueError(f"SLURM job ids must be numbers, got {list(job_ids)[:5]}")
    return ids


# --- job states -------------------------------------------------------------------------------


class Phase(StrEnum):
    """What a SLURM state means for a task of ours."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNDETERMINED = "undetermined"

    @property
    def ended(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)


# squeue(1), JOB STATE CODES (SLURM 22.05):
#   BF BOOT_FAIL      terminated due to launch failure (typically hardware)
#   CA CANCELLED      explicitly cancelled by the user or administrator
#   CD COMPLETED      all processes terminated with an exit code of zero
#   CF CONFIGURING    allocated resources, waiting for them to become ready
#   CG COMPLETING     in the process of completing; some processes may still be active
#   DL DEADLINE       terminated on deadline
#   F  FAILED         terminated with a non-zero exit code or other failure condition
#   NF NODE_FAIL      terminated due to failure of one or more allocated nodes
#   OOM OUT_OF_MEMORY experienced an out of memory error
#   PD PENDING        awaiting resource allocation
#   PR PREEMPTED      terminated due to preemption
#   R  RUNNING        currently has an allocation
#   RD RESV_DEL_HOLD  being held after requested reservation was deleted
#   RF REQUEUE_FED    being requeued by a federation
#   RH REQUEUE_HOLD   held job is being requeued
#   RQ REQUEUED       completing job is being requeued
#   RS RESIZING       about to change size
#   RV REVOKED        sibling was removed from cluster due to other cluster starting the job
#   SI SIGNALING      being signaled
#   SE SPECIAL_EXIT   requeued in a special state
#   SO STAGE_OUT      staging out files
#   ST STOPPED        has an allocation, but execution has been stopped with SIGSTOP
#   S  SUSPENDED      has an allocation, but execution has been suspended
#   TO TIMEOUT        terminated upon reaching its time limit
STATE_PHASES: dict[str, Phase] = {
    "PENDING": Phase.PENDING,
    "CONFIGURING": Phase.PENDING,
    "REQUEUED": Phase.PENDING,
    "REQUEUE_HOLD": Phase.PENDING,
    "REQUEUE_FED": Phase.PENDING,
    "RESV_DEL_HOLD": Phase.PENDING,
    "SPECIAL_EXIT": Phase.PENDING,
    "RUNNING": Phase.RUNNING,
    "COMPLETING": Phase.RUNNING,
    "RESIZING": Phase.RUNNING,
    "SIGNALING": Phase.RUNNING,
    "STAGE_OUT": Phase.RUNNING,
    "STOPPED": Phase.RUNNING,
    "SUSPENDED": Phase.RUNNING,
    "COMPLETED": Phase.COMPLETED,
    "FAILED": Phase.FAILED,
    "TIMEOUT": Phase.FAILED,
    "OUT_OF_MEMORY": Phase.FAILED,
    "NODE_FAIL": Phase.FAILED,
    "BOOT_FAIL": Phase.FAILED,
    "DEADLINE": Phase.FAILED,
    "PREEMPTED": Phase.FAILED,
    "REVOKED": Phase.FAILED,
    "CANCELLED": Phase.CANCELLED,
}


def phase(state: str) -> Phase:
    """The phase of a SLURM state (``CANCELLED by 1001`` reads as ``CANCELLED``)."""
    word = state.split()[0] if state.split() else ""
    found = STATE_PHASES.get(word)
    if found is None:
        log.warning("unknown SLURM state %r: treated as undetermined", state)
        return Phase.UNDETERMINED
    return found


# --- status: squeue plus the tails of the running tasks' logs, in one round trip ----------

#: squeue --Format fields, in this order, each followed by "|". ``exit_code`` is the raw
#: wait status (exit 7 -> 1792, killed by signal 9 -> 9), as verified on 22.05.8.
SQUEUE_FIELDS = ("JobArrayID", "JobID", "ArrayJobID", "ArrayTaskID", "State", "Reason",
                 "exit_code", "StartTime", "EndTime")
SQUEUE_FORMAT = ",".join(f"{field}:|" for field in SQUEUE_FIELDS)
LOG_TAIL_BYTES = 2048
_SQUEUE_MARK = "@@squeue "
_LOG_MARK = "@@log "


@dataclass(frozen=True)
class SlurmRecord:
    """One line of squeue: a job, an array task, or a pending part of an array."""

    job_array_id: str
    job_id: str
    array_job_id: str
    #: The array indices the line stands for (several for a pending, unsplit array);
    #: empty for a job that is not an array.
    task_indices: tuple[int, ...]
    state: str
    reason: str
    exit_code: int | None
    signal: int | None
    start: int | None
    end: int | None

    @property
    def phase(self) -> Phase:
        return phase(self.state)


@dataclass(frozen=True)
class StatusSnapshot:
    """What one status round trip saw: squeue's records and the tails of task logs."""

    records: tuple[SlurmRecord, ...]
    logs: Mapping[str, bytes]

    def of_job(self, job_id: str) -> list[SlurmRecord]:
        """The records of one SLURM job (an array's records come under the array id)."""
        return [r for r in self.records if r.array_job_id == job_id]


def build_status_command(job_ids: Sequence[str]) -> str:
    """One command: squeue for every given job, then the tails of the logs named on stdin.

    One command for all the active jobs of a cluster, so a poll costs one round trip
    whatever their number. squeue's exit status is printed after its records (its
    failure must not pass for "no jobs"). With one id, the id is given twice: squeue
    fails on a single unknown id (rc 1, "Invalid job id specified") but omits unknown
    ones from a list (rc 0) -- verified on 22.05.8; aiida-core's SLURM plugin relies on
    the same behaviour. Each log tail comes base64-encoded on one line, so nothing a
    simulator prints can be mistaken for the markers.

    Raises:
        ValueError: an id that is not a SLURM job number.
    """
    ids = _check_ids(job_ids)
    if len(ids) == 1:
        ids = ids * 2
    return ("export SLURM_TIME_FORMAT=%s; "
            f"squeue --noheader --states=all --jobs={','.join(ids)} "
            f"--Format={shlex.quote(SQUEUE_FORMAT)}; "
            f"echo \"{_SQUEUE_MARK}$?\"; "
            "while IFS= read -r f; do "
            f"printf '{_LOG_MARK}%s ' \"$(tail -c {LOG_TAIL_BYTES} -- \"$f\" 2>/dev/null "
            "| base64 -w0)\"; printf '%s\\n' \"$f\"; done")


def status_input(log_paths: Sequence[str]) -> bytes:
    """The stdin of the status command: one log path per line.

    Raises:
        ValueError: a path with a line break (it would split into two).
    """
    if any("\n" in p or "\r" in p for p in log_paths):
        raise ValueError("log paths must not contain line breaks")
    return "".join(f"{p}\n" for p in log_paths).encode()


def _indices(text: str) -> tuple[int, ...]:
    """Array indices of squeue's ArrayTaskID: ``3``, ``0-3``, ``0-5%2``, ``1,3,5-7``."""
    if text in ("N/A", ""):
        return ()
    found: list[int] = []
    for part in text.split("%", 1)[0].strip("[]").split(","):
        bounds, _, step = part.partition(":")
        low, _, high = bounds.partition("-")
        first, last = int(low), int(high or low)
        found.extend(range(first, last + 1, int(step or 1)))
    return tuple(found)


def _epoch(text: str) -> int | None:
    return int(text) if text.isdigit() and text != "0" else None


def parse_squeue_line(line: str) -> SlurmRecord:
    """One squeue line in :data:`SQUEUE_FORMAT`.

    Raises:
        OutputError: the line has another number of fields, or numbers that are not.
    """
    fields = line.split("|")
    if len(fields) != len(SQUEUE_FIELDS) + 1 or fields[-1].strip():
        raise OutputError(f"squeue line has {len(fields) - 1} fields, expected "
                          f"{len(SQUEUE_FIELDS)}: {line[:200]!r}")
    job_array_id, job_id, array_job_id, tasks, state, reason, status, start, end = (
        f.strip() for f in fields[:-1])
    try:
        indices = _indices(tasks)
        wait = int(status) if status not in ("", "N/A") else None
    except ValueError as exc:
        raise OutputError(f"squeue line has a bad number: {line[:200]!r}") from exc
    exit_code = None if wait is None else (wait >> 8) & 0xFF
    signal = None if wait is None else (wait & 0x7F) or None
    return SlurmRecord(job_array_id, job_id, array_job_id, indices, state, reason,
                       exit_code, signal, _epoch(start), _epoch(end))


def parse_status(result: CompletedProcess) -> StatusSnapshot:
    """The output of :func:`build_status_command`.

    Raises:
        CommandFailed: squeue failed (controller down, ...): stderr says why.
        OutputError: the output is not in the expected format.
    """
    text = result.stdout_text
    head, mark, rest = text.partition(_SQUEUE_MARK)
    if not mark:
        raise CommandFailed(f"status query printed no squeue result (exit "
                            f"{result.returncode}): {result.stderr_text.strip()[:500]}", result)
    code_text, _, tails = rest.partition("\n")
    if code_text.strip() != "0":
        raise CommandFailed(f"squeue failed (exit {code_text.strip()}): "
                            f"{result.stderr_text.strip()[:500]}", result)
    records = tuple(parse_squeue_line(line) for line in head.splitlines() if line.strip())
    logs: dict[str, bytes] = {}
    for line in tails.splitlines():
        if not line.startswith(_LOG_MARK):
            raise OutputError(f"unexpected line in a status answer: {line[:200]!r}")
        encoded, _, path = line[len(_LOG_MARK):].partition(" ")
        try:
            logs[path] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise OutputError(f"log tail of {path!r} is not base64") from exc
    return StatusSnapshot(records, logs)


# --- submission and cancel -----------------------------------------------------------------


@dataclass(frozen=True)
class SubmittedIds:
    """The SLURM job ids of one submission."""

    array_job_id: str
    collect_job_id: str


_IDS = re.compile(r"array=([0-9]+) collect=([0-9]+)")
_SUBMIT_STEPS = {90: "entering the job directory", 91: "unpacking the bundle",
                 92: "sbatch of the array job", 93: "sbatch of the collect job"}


def build_submit_command(submit_script: str) -> str:
    """Run the job's uploaded ``submit.sh`` (see :func:`scripts.submit_script`)."""
    return f"bash {shlex.quote(submit_script)}"


def parse_submit(result: CompletedProcess) -> SubmittedIds:
    """What ``submit.sh`` printed.

    Raises:
        SlurmRefused: a step failed; the message names it and quotes sbatch's error.
        CommandKilled: it was killed (retriable: submit.sh never submits twice).
        OutputError: it succeeded but printed no ids.
    """
    if result.signal is not None:
        raise CommandKilled(f"submit.sh was killed by signal {result.signal}", result)
    if result.returncode != 0:
        step = _SUBMIT_STEPS.get(result.returncode, f"submit.sh (exit {result.returncode})")
        detail = result.stderr_text.strip() or result.stdout_text.strip()
        raise SlurmRefused(f"{step} failed: {detail[:1000] or 'no message'}", result)
    match = _IDS.search(result.stdout_text)
    if match is None:
        raise OutputError(f"submit.sh printed no job ids: {result.stdout_text[:300]!r}")
    return SubmittedIds(match.group(1), match.group(2))


def parse_ids_file(text: str) -> SubmittedIds | None:
    """The ``ids`` file of a job directory (None if it holds no ids)."""
    match = _IDS.search(text)
    return SubmittedIds(match.group(1), match.group(2)) if match else None


def build_scancel_command(job_ids: Sequence[str]) -> str:
    """The scancel command for the given jobs (an array id cancels all its tasks).

    Raises:
        ValueError: an id that is not a SLURM job number.
    """
    return "scancel " + " ".join(_check_ids(job_ids))


def parse_scancel(result: CompletedProcess) -> None:
    """Check scancel's result: silent (rc 0) on success, also for unknown or finished jobs.

    Raises:
        CommandFailed: it failed (e.g. rc 210 "Access/permission denied", another user's job).
    """
    if result.returncode != 0:
        raise CommandFailed(f"scancel failed (exit {result.returncode}): "
                            f"{result.stderr_text.strip()[:500]}", result)
