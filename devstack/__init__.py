"""Local service stack for development and tests: a Kafka broker and a PostgreSQL server.

The helpers below are shared by `devstack.kafka_broker` and `devstack.postgres`. Both run real
server processes detached from the caller and keep their state (ports, pid files, data) in a
"home" directory, so the helpers deal with locks, ports, small JSON state files and processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
"""Every service binds and is addressed by this literal, never "localhost": a client that
resolves "localhost" to ::1 first would miss a server that listens on IPv4 only."""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` for the duration of the block.

    Why: two processes (or threads) may start the same service at once, e.g. two pytest
    sessions; the lock serialises them so that the second one finds the first one's server
    instead of starting a competing one. `flock` locks belong to the open file description,
    so separate `open` calls exclude each other even inside one process, and the kernel drops
    the lock when its holder dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def port_is_free(port: int) -> bool:
    """Tell whether a TCP port on `HOST` can be bound right now.

    SO_REUSEADDR mirrors what Java and PostgreSQL set on their listening sockets, so a port
    that only has TIME_WAIT leftovers from our previous server counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_free_ports(count: int) -> list[int]:
    """Let the kernel choose `count` distinct free ports on `HOST`.

    All sockets stay bound until every port is chosen, so the ports differ. Another process
    could still grab one before our server binds it; the window is short and a failed start
    says so in its log.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(int(sock.getsockname()[1]))
    return ports


def load_state(path: Path) -> dict[str, Any]:
    """Read a JSON state file; a missing or damaged file means "no state yet"."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a JSON state file atomically, so a crash never leaves half a file behind."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_pid(path: Path) -> int | None:
    """Return the pid in the first line of a pid file, or None if there is none."""
    try:
        first = path.read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Tell whether `pid` is a live process; a zombie counts as dead.

    A zombie is a process that has exited but whose parent has not collected it yet. Treating
    it as alive would make a stop() wait for a server that is already gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def process_cmdline(pid: int) -> list[str]:
    """Return the argument vector of `pid` (empty if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def tail(path: Path | None, lines: int = 40) -> str:
    """Return the last `lines` lines of a log file, for error messages that explain a failure."""
    if path is None:
        return "(no log file)"
    try:
        with path.open(errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
