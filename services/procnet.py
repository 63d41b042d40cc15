"""Which process holds which TCP socket, read from Linux's ``/proc`` (no tools needed).

Why: several processes may serve one port (``SO_REUSEPORT``), and a service without an
HTTP endpoint is "connected" exactly when it holds an established connection to its
broker or database. Both facts are in the kernel's socket table (``/proc/<pid>/net/tcp``
and ``tcp6``) and in each process's open descriptors (``/proc/<pid>/fd``, links named
``socket:[<inode>]``), so the stack launcher, the container health check and the tests
can observe them without ``ss``/``lsof`` (absent from slim images) and without any
change to the services themselves.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

#: State codes of ``/proc/net/tcp`` (``include/net/tcp_states.h``) that we look for.
ESTABLISHED = "01"
LISTEN = "0A"

Address = tuple[str, int]


@dataclass(frozen=True)
class TcpSocket:
    """One row of the kernel's TCP table."""

    local: Address
    remote: Address
    state: str
    inode: int


def available() -> bool:
    """Whether this system exposes the socket table (Linux with /proc mounted)."""
    return (PROC / "net" / "tcp").exists()


def _address(field: str) -> Address:
    """``0100007F:1F90`` -> ``("127.0.0.1", 8080)``; each 32-bit word is in host order."""
    hex_ip, hex_port = field.split(":")
    raw = bytes.fromhex(hex_ip)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(hex_port, 16)


def tcp_table(pid: int | None = None) -> list[TcpSocket]:
    """Every TCP socket of a network namespace: ours, or that of ``pid``.

    Rows that vanish while being read are simply absent (the table is a snapshot).
    """
    base = PROC / str(pid) / "net" if pid is not None else PROC / "net"
    sockets = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (base / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            sockets.append(TcpSocket(_address(fields[1]), _address(fields[2]), fields[3],
                                     int(fields[9])))
    return sockets


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open (empty if it is gone or not ours)."""
    inodes = set()
    fd_dir = PROC / str(pid) / "fd"
    try:
        entries = os.listdir(fd_dir)
    except OSError:
        return set()
    for entry in entries:
        try:
            target = os.readlink(fd_dir / entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def sockets_of(pid: int) -> list[TcpSocket]:
    """The TCP sockets process ``pid`` holds."""
    inodes = socket_inodes(pid)
    return [s for s in tcp_table(pid) if s.inode in inodes]


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a listening socket on ``port`` (any address)."""
    return any(s.state == LISTEN and s.local[1] == port for s in sockets_of(pid))


def connected_to(remotes: Iterable[Address], pid: int | None = None) -> list[TcpSocket]:
    """Established connections to any of ``remotes``: of ``pid``, or of our whole namespace.

    Inside a container the namespace holds only the service's own sockets, so no pid is
    needed there (and the check needs no access to another process's descriptors).
    """
    wanted = {(_normal(host), port) for host, port in remotes}
    table = sockets_of(pid) if pid is not None else tcp_table()
    return [s for s in table if s.state == ESTABLISHED and s.remote in wanted]


def server_of(client: Address, server_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the accepted end of the connection from ``client``.

    ``client`` is the client socket's own address (``sock.getsockname()``); the server
    side is the established socket on ``server_port`` whose remote end it is.
    """
    key = (_normal(client[0]), client[1])
    for pid in pids:
        for s in sockets_of(pid):
            if s.state == ESTABLISHED and s.local[1] == server_port and s.remote == key:
                return pid
    return None


def _normal(host: str) -> str:
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)
