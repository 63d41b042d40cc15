"""How a process ended, local or remote: the one result shape of every platform.

The runner's simulator processes, the SLURM bridge's remote commands and its
array tasks on a cluster all end in a :class:`CompletedProcess`; a run past
its time limit raises :class:`ProcessTimeout`, which is an
``asyncio.TimeoutError`` and keeps the output so far. The failure reason that
users read is phrased here once (:func:`failure_reason`), so the same failure
reads the same on either platform.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True)
class CompletedProcess:
    """One ended process: how it ended and what it printed.

    ``returncode`` follows ``subprocess``: the exit status, or minus the signal
    that killed it. ``output`` is stdout (with stderr merged where the platform
    merges them, as the runner and SLURM's ``--output`` do); ``stderr`` is kept
    apart where it comes apart (remote commands).
    """

    argv: tuple[str, ...]
    returncode: int
    output: bytes
    wall_seconds: float
    job_id: str | None = None
    task_index: int | None = None
    stderr: bytes = b""
    #: User + system CPU seconds of the process and the children it reaped (None: not
    #: measured, e.g. the runner's launcher was SIGKILLed with the group, or remote).
    cpu_seconds: float | None = None

    @property
    def signal(self) -> int | None:
        """The signal that ended the process, if one did."""
        return -self.returncode if self.returncode < 0 else None

    @property
    def exit_code(self) -> int | None:
        """The exit status, if the process exited (rather than being killed)."""
        return self.returncode if self.returncode >= 0 else None

    @property
    def stdout_text(self) -> str:
        return self.output.decode(errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode(errors="replace")


class ProcessTimeout(asyncio.TimeoutError):
    """A process ran past its time limit and was stopped; the output so far is kept."""

    retriable = False

    def __init__(self, message: str, output: bytes, *, wall_seconds: float | None = None,
                 cpu_seconds: float | None = None) -> None:
        super().__init__(message)
        self.output = output
        self.wall_seconds = wall_seconds
        self.cpu_seconds = cpu_seconds


def last_line(output: bytes, limit: int = 300) -> str:
    """The last non-blank line of an output (what a failed simulator said last)."""
    for line in reversed(output.decode(errors="replace").splitlines()):
        if line.strip():
            return line.strip()[:limit]
    return ""


def failure_reason(done: CompletedProcess, what: str = "simulator") -> str:
    """``simulator exited with status 2: <its last line>`` (or ``was killed by signal 9``)."""
    how = (f"exited with status {done.exit_code}" if done.exit_code is not None
           else f"was killed by signal {done.signal}")
    last = last_line(done.output)
    return f"{what} {how}" + (f": {last}" if last else "")
