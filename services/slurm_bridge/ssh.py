"""The SSH layer: a small backend interface, and its asyncssh implementation.

Everything the bridge does on a cluster goes through :class:`RemoteBackend`:
run a command, create a directory, write, read or download files. The SLURM
builders and parsers never see asyncssh; another transport (an OpenSSH
command-line one, say) would fit behind the same interface.

:class:`AsyncSSHBackend` keeps one long-lived connection per cluster with one
SFTP session on it, opened on first use and again after it was lost. The
host key is always checked against the cluster's known_hosts file (there is
no way to switch that off), the login is by private key only (no agent, no
password, no ~/.ssh/config). A semaphore bounds the operations in flight on the
connection (sshd allows 10 sessions per connection by default, and the SFTP
session is one of them; a session the server has not finished closing still
counts, so the default leaves headroom). asyncssh's
errors come out as :class:`~services.slurm_bridge.errors.RemoteError` (an
OSError) with ``retriable`` saying whether another try can help; a lost
connection is dropped, so the next operation reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import asyncssh

from services.ops.metrics import SLURM_CONNECTS, SLURM_ROUND_TRIPS
from services.platform.outcome import CompletedProcess
from services.settings import ClusterConfig
from services.slurm_bridge.errors import (
    HostKeyRejected,
    LoginRejected,
    RemoteError,
    RemoteFileError,
    RemoteTimeout,
)

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 5.0
KEEPALIVE_MISSES = 3
#: Tries to open a session the server refuses for now, the first wait between them.
SESSION_ATTEMPTS = 8
SESSION_RETRY_SECONDS = 0.05

_T = TypeVar("_T")


class _NoSession(RemoteError):
    """The server had no session free (its MaxSessions), several times over."""


class RemoteBackend(Protocol):
    """What the bridge needs from a transport to one cluster."""

    #: Round trips by kind ("exec", "sftp") since the backend was made.
    round_trips: Counter[str]
    #: Connections opened so far (more than one: it reconnected).
    connects: int

    async def connect(self) -> None:
        """Open the connection unless it is open.

        Raises:
            RemoteError: it cannot be opened (HostKeyRejected / LoginRejected: never will).
        """

    async def close(self) -> None:
        """Close the connection (idempotent)."""

    async def run(self, command: str, *, input: bytes | None = None,
                  time_limit: float | None = None) -> CompletedProcess:
        """Run a shell command; its exit status is in the result, never raised.

        Raises:
            RemoteTimeout: it ran past ``time_limit`` seconds (it is stopped; the output
                so far is kept).
            RemoteError: the connection failed.
        """

    async def makedirs(self, path: str) -> None:
        """Create a directory and its parents (no error if it exists)."""

    async def write_file(self, path: str, data: bytes) -> None:
        """Create or replace a file with ``data``."""

    async def read_file(self, path: str, *, last_bytes: int | None = None) -> bytes | None:
        """A file's content (its last ``last_bytes`` if given), or None if there is none."""

    async def download_dir(self, remote: str, local: Path) -> None:
        """Copy a remote directory's files (recursively) into the local directory."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class AsyncSSHBackend:
    """One cluster over asyncssh (see the module docstring)."""

    def __init__(self, cluster: ClusterConfig, *, connect_timeout: float = 15.0) -> None:
        self.cluster = cluster
        self.connect_timeout = connect_timeout
        self.round_trips: Counter[str] = Counter()
        self.connects = 0
        self._slots = asyncio.Semaphore(cluster.max_sessions)
        self._lock = asyncio.Lock()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = asyncio.Lock()
        #: Sessions the server refused for a moment and that were opened on a later try.
        self.session_retries = 0

    @property
    def where(self) -> str:
        return f"{self.cluster.user}@{self.cluster.host}:{self.cluster.port}"

    def _open(self) -> asyncssh.SSHClientConnection | None:
        conn = self._conn
        return conn if conn is not None and not conn.is_closed() else None

    async def _connection(self) -> asyncssh.SSHClientConnection:
        conn = self._open()
        if conn is not None:
            return conn
        async with self._lock:
            conn = self._open()
            if conn is None:
                self._drop()
                conn = self._conn = await self._dial()
            return conn

    async def _dial(self) -> asyncssh.SSHClientConnection:
        cluster = self.cluster
        key, known = cluster.private_key, cluster.known_hosts
        if known is None or not known.is_file():
            raise HostKeyRejected(f"cluster {cluster.name}: known_hosts file {known} does not "
                                  "exist; host keys are always verified")
        if key is None or not os.access(key, os.R_OK):
            raise LoginRejected(f"cluster {cluster.name}: private key {key} cannot be read")
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                cluster.host, port=cluster.port, username=cluster.user,
                client_keys=[str(key)], known_hosts=str(known), agent_path=None,
                password=None, kbdint_auth=False, config=None,
                keepalive_interval=KEEPALIVE_SECONDS, keepalive_count_max=KEEPALIVE_MISSES,
            ), self.connect_timeout)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyRejected(f"cluster {cluster.name}: the host key of {self.where} is "
                                  f"not the one in {known}: {exc}") from exc
        except asyncssh.PermissionDenied as exc:
            raise LoginRejected(f"cluster {cluster.name}: {self.where} refused the key "
                                f"{key}: {exc}") from exc
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            raise LoginRejected(f"cluster {cluster.name}: private key {key} is not "
                                f"usable: {exc}") from exc
        except TimeoutError as exc:
            raise RemoteError(f"cluster {cluster.name}: no SSH connection to {self.where} "
                              f"within {self.connect_timeout:g} s") from exc
        except (asyncssh.Error, OSError) as exc:
            raise RemoteError(f"cluster {cluster.name}: cannot connect to {self.where}: "
                              f"{_describe(exc)}") from exc
        self.connects += 1
        SLURM_CONNECTS.labels(cluster.name).inc()
        log.info("cluster %s: connected to %s (connection %d)", cluster.name, self.where,
                 self.connects)
        return conn

    def _count(self, kind: str) -> None:
        self.round_trips[kind] += 1
        SLURM_ROUND_TRIPS.labels(self.cluster.name, kind).inc()

    def _drop(self) -> None:
        """Forget a connection that failed (the next operation opens a new one)."""
        self._drop_sftp()
        if self._conn is not None:
            self._conn.abort()
            self._conn = None

    def _failed(self, conn: asyncssh.SSHClientConnection, exc: BaseException,
                what: str) -> RemoteError:
        if self._conn is conn:
            self._drop()
        log.warning("cluster %s: %s failed: %s", self.cluster.name, what, _describe(exc))
        return RemoteError(f"cluster {self.cluster.name}: {what} on {self.where} failed: "
                           f"{_describe(exc)}")

    async def connect(self) -> None:
        async with self._slots:
            await self._connection()

    async def close(self) -> None:
        async with self._lock:
            conn = self._conn
            self._drop_sftp()
            self._conn = None
            if conn is not None:
                conn.close()
                await conn.wait_closed()

    def _drop_sftp(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None

    async def run(self, command: str, *, input: bytes | None = None,
                  time_limit: float | None = None) -> CompletedProcess:
        async with self._slots:
            conn = await self._connection()
            self._count("exec")
            started = time.monotonic()
            try:
                process = await self._session(
                    lambda: conn.create_process(command, encoding=None), command[:60])
                async with process:
                    if input is not None:
                        process.stdin.write(input)
                    process.stdin.write_eof()
                    try:
                        done = await process.wait(check=False, timeout=time_limit)
                    except asyncssh.TimeoutError as exc:
                        output = _bytes(exc.stdout) + _bytes(exc.stderr)
                        raise RemoteTimeout(f"cluster {self.cluster.name}: {command[:80]!r} "
                                            f"ran past {time_limit} s", output) from exc
            except (RemoteTimeout, _NoSession):
                raise
            except (asyncssh.Error, OSError) as exc:
                raise self._failed(conn, exc, f"command {command[:60]!r}") from exc
        code = done.exit_status
        if (code is None or code < 0) and not done.exit_signal:
            # The channel closed without an exit status: the link broke, not the command.
            raise self._failed(conn, ConnectionError("no exit status"),
                               f"command {command[:60]!r}")
        returncode = code if code is not None and code >= 0 else -_signal_number(done)
        return CompletedProcess(argv=(command,), returncode=returncode,
                                output=_bytes(done.stdout), stderr=_bytes(done.stderr),
                                wall_seconds=time.monotonic() - started)

    async def _session(self, open_session: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Open a session, waiting out a server that has none free yet.

        sshd counts a session until it has processed our close of it, so sessions that
        just ended may still fill its MaxSessions for a moment ("no more sessions" in
        its log, ChannelOpenError here): that is worth a short wait, not a reconnect.

        Raises:
            RemoteError: still refused after :data:`SESSION_ATTEMPTS` tries.
        """
        delay = SESSION_RETRY_SECONDS
        for attempt in range(1, SESSION_ATTEMPTS + 1):
            try:
                return await open_session()
            except asyncssh.ChannelOpenError as exc:
                if attempt == SESSION_ATTEMPTS:
                    raise _NoSession(f"cluster {self.cluster.name}: {self.where} refused a "
                                     f"session for {what!r} {attempt} times: "
                                     f"{_describe(exc)}") from exc
                self.session_retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    async def _sftp_client(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        async with self._sftp_lock:
            if self._sftp is None:
                self._count("sftp")
                self._sftp = await self._session(conn.start_sftp_client, "sftp")
            return self._sftp

    async def _sftp_call(self, what: str, operation: _SftpOperation) -> object:
        async with self._slots:
            conn = await self._connection()
            self._count("sftp")
            try:
                sftp = await self._sftp_client(conn)
                return await operation(sftp)
            except (asyncssh.SFTPError, _NoSession):
                raise
            except (asyncssh.Error, OSError) as exc:
                raise self._failed(conn, exc, what) from exc

    async def makedirs(self, path: str) -> None:
        async def op(sftp: asyncssh.SFTPClient) -> None:
            await sftp.makedirs(path, exist_ok=True)
        await self._checked(f"mkdir {path}", op)

    async def write_file(self, path: str, data: bytes) -> None:
        async def op(sftp: asyncssh.SFTPClient) -> None:
            async with sftp.open(path, "wb") as handle:
                await handle.write(data)
        await self._checked(f"write {path}", op)

    async def read_file(self, path: str, *, last_bytes: int | None = None) -> bytes | None:
        async def op(sftp: asyncssh.SFTPClient) -> bytes | None:
            try:
                async with sftp.open(path, "rb") as handle:
                    if last_bytes is not None:
                        size = (await handle.stat()).size or 0
                        await handle.seek(max(0, size - last_bytes))
                    return _bytes(await handle.read())
            except asyncssh.SFTPNoSuchFile:
                return None
        found = await self._checked(f"read {path}", op)
        assert found is None or isinstance(found, bytes)
        return found

    async def download_dir(self, remote: str, local: Path) -> None:
        async def op(sftp: asyncssh.SFTPClient) -> None:
            await sftp.get(remote, str(local), recurse=True)
        await asyncio.to_thread(local.parent.mkdir, parents=True, exist_ok=True)
        await self._checked(f"download {remote}", op)

    async def _checked(self, what: str, operation: _SftpOperation) -> object:
        try:
            return await self._sftp_call(what, operation)
        except asyncssh.SFTPError as exc:  # the server answered: the file, not the link
            raise RemoteFileError(f"cluster {self.cluster.name}: {what}: "
                                  f"{_describe(exc)}") from exc


class _SftpOperation(Protocol):
    async def __call__(self, sftp: asyncssh.SFTPClient, /) -> object: ...


def _bytes(data: bytes | str | None) -> bytes:
    """Data as bytes (asyncssh types it bytes or str; with ``encoding=None`` it is bytes)."""
    if data is None:
        return b""
    return data if isinstance(data, bytes) else data.encode()


def _signal_number(done: asyncssh.SSHCompletedProcess) -> int:
    """The number of the signal a remote process died of (asyncssh gives its name)."""
    import signal

    name = done.exit_signal[0] if done.exit_signal else "KILL"
    try:
        return int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return int(signal.SIGKILL)
