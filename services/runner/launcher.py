"""Runs one simulator and reports the CPU time it used: ``launcher.py REPORT_FD -- ARGV...``.

Why a launcher: a process's CPU time is known only to the process that reaps it
(``wait4`` returns its rusage), and the runner's event loop reaps its children itself,
discarding it. So the runner starts this small program (standard library only, run with
``python -I -S``) as the leader of the task's process group; it starts the simulator as
its child in the same group, reaps it with ``wait4`` and writes, on the file descriptor
``REPORT_FD`` the runner passed it, JSON lines:

* ``{"started": PID}`` once the simulator runs, or ``{"exec_error": "..."}`` if it
  cannot be started (then it exits 127);
* ``{"cpu_seconds": U+S, "user_seconds": U, "system_seconds": S, "wall_seconds": W,
  "max_rss_kb": R}`` after the simulator ended. The CPU time covers the simulator and
  every descendant it waited for (``RUSAGE`` of the child, which includes its reaped
  children); helpers it left running are not in it.

Then it ends the way the simulator ended: the same exit status, or the same signal, so
the runner sees the simulator's outcome. It imports as little as it can (no
``subprocess``, no ``json``: fork, exec and the report are written out here), since
it starts once per task. Signals to the group reach the simulator
directly; the launcher ignores SIGINT and SIGTERM (it exits when the simulator does).
It dies with the runner (``PR_SET_PDEATHSIG``, set by the runner) and the simulator
dies with it (set here), so a SIGKILLed runner still leaves no simulator behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1
_HANDLED = (signal.SIGINT, signal.SIGTERM)


def _json_text(text: str) -> str:
    """``text`` as a JSON string (the report's only non-number)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else " " for c in escaped) + '"'


def _report(fd: int, fields: dict[str, float | int | str]) -> None:
    items = ", ".join(f'"{k}": {_json_text(v) if isinstance(v, str) else v}'
                      for k, v in fields.items())
    os.write(fd, ("{" + items + "}\n").encode())


def _spawn(command: list[str], report_fd: int) -> int:
    """Fork and exec the simulator; its pid.

    Raises:
        OSError: exec failed (the message comes back from the child on a CLOEXEC pipe).
    """
    errors_r, errors_w = os.pipe()  # not inherited across exec (PEP 446)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe-ish work until exec
        try:
            os.close(errors_r)
            os.close(report_fd)  # the simulator must not hold the report pipe open
            for sig in _HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL,
                                                     0, 0, 0)
            if os.getppid() != parent:  # the launcher died before prctl took effect
                os._exit(137)
            os.execvp(command[0], command)
        except BaseException as exc:
            message = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            os.write(errors_w, f"{message}: {command[0]}".encode(errors="replace"))
        finally:
            os._exit(127)
    os.close(errors_w)
    error = b""
    while chunk := os.read(errors_r, 4096):
        error += chunk
    os.close(errors_r)
    if error:
        os.waitpid(pid, 0)
        raise OSError(error.decode(errors="replace"))
    return pid


def main(argv: list[str]) -> int:
    """Run ``argv`` after ``--``; returns only if the simulator exited (not if killed)."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: launcher.py REPORT_FD -- ARGV...", file=sys.stderr)
        return 2
    fd, command = int(argv[0]), argv[2:]
    for sig in _HANDLED:  # before the child exists: a group signal then only reaches it
        signal.signal(sig, signal.SIG_IGN)
    started = time.monotonic()
    try:
        child = _spawn(command, fd)
    except OSError as exc:
        _report(fd, {"exec_error": str(exc)})
        return 127
    _report(fd, {"started": child})
    _, status, usage = os.wait4(child, 0)  # retried on EINTR by Python (PEP 475)
    wall = time.monotonic() - started
    _report(fd, {
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 6),
        "user_seconds": round(usage.ru_utime, 6), "system_seconds": round(usage.ru_stime, 6),
        "wall_seconds": round(wall, 6), "max_rss_kb": usage.ru_maxrss,
    })
    os.close(fd)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        return 128 + number  # the signal does not end a process by default
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
