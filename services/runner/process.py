"""Simulator processes: each in its own session, stopped as a whole group.

A simulator is started with ``start_new_session=True``: it leads its own
process group, so signals sent to the runner (Ctrl-C in a terminal, SIGTERM
from a supervisor) do not reach it by accident, and the runner can stop it
with everything it spawned by signalling the group: SIGINT first (the
simulator may write what it has), SIGKILL after a grace period. After the
leader exits the group is SIGKILLed once more, so no helper outlives its task.

Output (stdout and stderr merged) is read as it comes, line by line, for
progress, and kept (its last :data:`MAX_OUTPUT` bytes) for the task's log.

The group's leader is the small launcher :mod:`services.runner.launcher`, which
runs the simulator as its child and reports the CPU time the simulator used (only
the process that reaps a child learns it) on a pipe; it ends as the simulator
ended, so exit status and signal are the simulator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from services.platform.outcome import CompletedProcess, ProcessTimeout

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).resolve().with_name("launcher.py")
#: How long the launcher may take to say whether the simulator started.
LAUNCH_TIMEOUT = 30.0

MAX_OUTPUT = 8 * 1024 * 1024
"""How much of a task's output is kept for its log artifact (the end is kept)."""
READ_CHUNK = 64 * 1024


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: have Linux SIGKILL it when the runner dies.

    A runner killed with SIGKILL cannot stop its simulators; without this they
    would run on, orphaned, while another runner re-runs their tasks. Only
    async-signal-safe work happens here (one prctl call through ctypes).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


LineHandler = Callable[[str], Awaitable[None]]


class SimProcess:
    """One simulator process of one task."""

    def __init__(self, job_id: str, task_index: int, argv: Sequence[str], cwd: Path,
                 env: dict[str, str] | None = None) -> None:
        self.job_id = job_id
        self.task_index = task_index
        self.argv = tuple(argv)
        self.cwd = cwd
        self.env = env
        self._proc: asyncio.subprocess.Process | None = None
        self._output = bytearray()
        self._truncated = False
        self._started = 0.0
        self._report: asyncio.StreamReader | None = None
        self._report_transport: asyncio.ReadTransport | None = None
        self.usage: dict[str, float] = {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the simulator (under its launcher) in a new session.

        Raises:
            OSError: the executable cannot be started.
        """
        self._started = time.monotonic()
        read_fd, write_fd = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(LAUNCHER), str(write_fd), "--", *self.argv,
                cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent, pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        report = self._report = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(report), os.fdopen(read_fd, "rb", 0))
        self._report_transport = transport
        first = await self._report_line(LAUNCH_TIMEOUT)
        if "started" not in first:
            await self._proc.wait()
            self._close_report()
            raise OSError(str(first.get("exec_error", "the launcher ended without a report")))

    async def _report_line(self, within: float) -> dict[str, object]:
        """The launcher's next report line ({} at its end or after ``within`` seconds)."""
        if self._report is None:
            return {}
        try:
            line = await asyncio.wait_for(self._report.readline(), within)
            data = json.loads(line) if line.strip() else {}
        except (TimeoutError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _close_report(self) -> None:
        if self._report_transport is not None:
            self._report_transport.close()
            self._report_transport = None
        self._report = None

    async def _final_usage(self) -> None:
        """Read the launcher's usage line once it has exited (nothing if it was killed)."""
        report = await self._report_line(5.0)
        self._close_report()
        self.usage = {k: float(v) for k, v in report.items() if isinstance(v, int | float)}

    def signal_group(self, sig: int) -> bool:
        """Send a signal to the process group; False if the group is gone."""
        if self._proc is None:
            return False
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    async def stop(self, grace: float) -> None:
        """SIGINT to the group, SIGKILL after ``grace`` seconds if the leader still runs."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self.signal_group(signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), grace)
            except TimeoutError:
                log.warning("task %s/%d: no exit %.1fs after SIGINT, sending SIGKILL",
                            self.job_id, self.task_index, grace)
        self.signal_group(signal.SIGKILL)

    async def _read(self, on_line: LineHandler) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        pending = b""
        while True:
            chunk = await self._proc.stdout.read(READ_CHUNK)
            if not chunk:
                break
            self._keep(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > READ_CHUNK:  # an endless line: not progress, keep going
                pending = b""
            for line in lines:
                await on_line(line.decode(errors="replace"))
        if pending:
            await on_line(pending.decode(errors="replace"))

    def _keep(self, chunk: bytes) -> None:
        self._output += chunk
        if len(self._output) > MAX_OUTPUT:
            del self._output[: len(self._output) - MAX_OUTPUT]
            self._truncated = True

    def output(self) -> bytes:
        """The output kept so far (marked when its beginning was dropped)."""
        head = b"[... earlier output dropped ...]\n" if self._truncated else b""
        return head + bytes(self._output)

    async def wait(self, on_line: LineHandler, *, time_limit: float, grace: float
                   ) -> CompletedProcess:
        """Stream the output to ``on_line`` until the process ends.

        Raises:
            ProcessTimeout: the process ran past ``time_limit`` seconds (0: no limit);
                it was stopped, and the error holds its output.
        """
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit if time_limit > 0 else None
        reader = asyncio.create_task(self._read(on_line))
        waiter = asyncio.ensure_future(self._proc.wait())
        timed_out = False
        try:
            while not waiter.done():
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                watched = {waiter} if reader.done() else {waiter, reader}
                done, _ = await asyncio.wait(watched, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if reader.done() and reader.exception() is not None:
                    await self.stop(grace)
                    reader.result()  # the handler's error is the one to report
                if not done:
                    timed_out = True
                    await self.stop(grace)
                    break
            await waiter
            self.signal_group(signal.SIGKILL)  # helpers that outlived the leader
            try:
                await asyncio.wait_for(asyncio.shield(reader), 5.0)
            except TimeoutError:
                log.warning("task %s/%d: output still open after exit (a process escaped "
                            "its group?)", self.job_id, self.task_index)
        finally:
            for pending in (reader, waiter):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending
            if self._proc.returncode is None:
                await self.stop(grace)
            await self._final_usage()
        wall = self.usage.get("wall_seconds", time.monotonic() - self._started)
        cpu = self.usage.get("cpu_seconds")
        if timed_out:
            raise ProcessTimeout(f"wall-time limit of {time_limit:g} s reached",
                                 self.output(), wall_seconds=wall, cpu_seconds=cpu)
        return CompletedProcess(
            job_id=self.job_id, task_index=self.task_index, argv=self.argv,
            returncode=self._proc.returncode if self._proc.returncode is not None else -9,
            output=self.output(), wall_seconds=wall, cpu_seconds=cpu,
        )
