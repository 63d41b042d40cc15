"""Run a private PostgreSQL server for the PostgreSQL leg of the tests.

Why: the service must work on PostgreSQL as well as SQLite, and its tests need a real server
without Docker or a system-wide cluster. This module runs one from the Debian binaries with
all of its state in a "home" directory::

    <home>/data/              PGDATA (owned by the `postgres` OS user)
    <home>/run/               unix socket directory
    <home>/logs/postgres.log  server log
    <home>/state.json         the chosen port

PostgreSQL refuses to run as root, so when we are root the server runs as the `postgres` OS
user (created if missing). The server listens on 127.0.0.1 only, with trust authentication
for the superuser role `simjobs`: fine for a throw-away test server, never for production.
Durability settings (fsync, synchronous_commit) stay at their defaults so that measured
numbers mean something.

Set SIMJOBS_PG_URL to use an already running server instead.

CLI: ``python -m devstack.postgres {start,stop,status} [--home DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from devstack import (
    HOST,
    file_lock,
    load_state,
    pick_free_ports,
    port_is_free,
    process_alive,
    process_cmdline,
    read_pid,
    save_state,
    tail,
)

LOG = logging.getLogger("devstack.postgres")  # stable name, also under `python -m`

ENV_URL = "SIMJOBS_PG_URL"
ENV_HOME = "SIMJOBS_PG_HOME"
OS_USER = "postgres"
ROLE = "simjobs"
DEFAULT_DB = "simjobs"
DRIVER = "postgresql+asyncpg"
CONF_NAME = "simjobs.conf"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, including the terminating NUL
_PROBE_TIMEOUT = 5.0


class PostgresError(RuntimeError):
    """The server could not be installed, started or reached."""


@dataclass(frozen=True)
class PostgresHandle:
    """Where a running server is and how it was started."""

    url: str
    port: int
    pid: int | None
    home: Path
    log_file: Path | None
    external: bool


@dataclass(frozen=True)
class _Paths:
    """File layout of one server home (see the module docstring)."""

    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "postgres.log"

    @property
    def state(self) -> Path:
        return self.home / "state.json"

    @property
    def lock(self) -> Path:
        return self.home / "postgres.lock"

    @property
    def postmaster_pid(self) -> Path:
        return self.data / "postmaster.pid"


def default_home() -> Path:
    """Return the server home: $SIMJOBS_PG_HOME, else ~/.cache/simjobs/postgres."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simjobs" / "postgres"


# --- installation ----------------------------------------------------------------------------


def _is_bindir(path: Path) -> bool:
    return all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))


def _find_bindir() -> Path | None:
    """Find a directory with initdb, pg_ctl and postgres: PATH first, then Debian's layout."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []

    def version(path: Path) -> int:
        name = path.parent.name
        return int(name) if name.isdigit() else -1

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    return next((path for path in candidates if _is_bindir(path)), None)


def _apt_install() -> None:
    """Install Debian's postgresql package; needs root (the machines' normal user)."""
    if os.geteuid() != 0:
        raise PostgresError("PostgreSQL is not installed; run: apt-get install -y postgresql")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        LOG.info("Running %s", " ".join(cmd))
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")


def ensure_installed() -> Path:
    """Return the PostgreSQL bin directory, installing the Debian package if none is found."""
    found = _find_bindir()
    if found is None:
        _apt_install()
        found = _find_bindir()
    if found is None:
        raise PostgresError("postgresql installed, but initdb/pg_ctl/postgres not found")
    return found


# --- running as the postgres user ------------------------------------------------------------


def _as_root() -> bool:
    return os.geteuid() == 0


def _ensure_os_user() -> pwd.struct_passwd:
    """Return the `postgres` OS user, creating a system user if it is missing."""
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        pass
    cmd = [
        "useradd", "--system", "--user-group", "--no-create-home",
        "--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh", OS_USER,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return pwd.getpwnam(OS_USER)


def _server_cmd(cmd: Sequence[str]) -> list[str]:
    """Prefix a command so it runs as the server's OS user (only needed when we are root)."""
    return ["runuser", "-u", OS_USER, "--", *cmd] if _as_root() else list(cmd)


def _grant_traverse(home: Path, uid: int) -> None:
    """Let the server's user reach `home`: add o+x to any ancestor that blocks it.

    Why: PostgreSQL must open its data dir by path, and homes under /root or pytest's
    /tmp/pytest-of-root are mode 0700. o+x lets others pass through a directory by name
    without listing it; each change is logged.
    """
    for directory in (home, *home.parents):
        info = directory.stat()
        if info.st_uid == uid or info.st_mode & stat.S_IXOTH:
            continue
        directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
        LOG.warning("Added o+x to %s so that user %s can reach %s", directory, OS_USER, home)


def _prepare_dirs(paths: _Paths) -> None:
    """Create the home layout and hand the server's directories to its OS user."""
    paths.home.mkdir(parents=True, exist_ok=True)
    for directory in (paths.data, paths.run, paths.logs):
        directory.mkdir(exist_ok=True)
    paths.data.chmod(0o700)  # initdb and postgres insist on 0700/0750
    if not _as_root():
        return
    user = _ensure_os_user()
    _grant_traverse(paths.home, user.pw_uid)
    for directory in (paths.data, paths.run, paths.logs):
        os.chown(directory, user.pw_uid, user.pw_gid)


def _run_server_tool(cmd: Sequence[str], what: str, cwd: Path) -> str:
    """Run initdb/pg_ctl as the server's user; raise with its output if it fails."""
    result = subprocess.run(
        _server_cmd(cmd),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,  # Ctrl-C in the caller's terminal must not reach the server
    )
    if result.returncode != 0:
        raise PostgresError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


# --- configuration ---------------------------------------------------------------------------


def _initdb(paths: _Paths, bindir: Path) -> None:
    """Create the cluster once, with `simjobs` as bootstrap superuser and trust auth."""
    if (paths.data / "PG_VERSION").exists():
        return
    cmd = [
        str(bindir / "initdb"), "-D", str(paths.data), "-U", ROLE, "--auth=trust",
        "-E", "UTF8", "--no-locale",
    ]  # fmt: skip
    _run_server_tool(cmd, "initdb", paths.home)
    with (paths.data / "postgresql.conf").open("a") as conf:
        conf.write(f"\n# Settings managed by devstack/postgres.py\ninclude = '{CONF_NAME}'\n")
    LOG.info("Initialised PostgreSQL cluster in %s", paths.data)


def _server_conf(paths: _Paths, port: int) -> str:
    """Render the settings file included from postgresql.conf (rewritten on every start)."""
    return f"""\
# Written by devstack/postgres.py on every start; edits are overwritten.
listen_addresses = '{HOST}'
port = {port}
unix_socket_directories = '{paths.run}'
# Durability stays at PostgreSQL's defaults: benchmarks against this server must be real.
fsync = on
synchronous_commit = on
"""


def _write_conf(paths: _Paths, port: int) -> None:
    socket_path = paths.run / f".s.PGSQL.{port}"
    if len(str(socket_path)) > _SOCKET_PATH_MAX:
        raise PostgresError(f"unix socket path too long for Linux: {socket_path}")
    conf = paths.data / CONF_NAME
    conf.write_text(_server_conf(paths, port))
    if _as_root():
        user = pwd.getpwnam(OS_USER)
        os.chown(conf, user.pw_uid, user.pw_gid)


def _choose_port(paths: _Paths) -> int:
    """Reuse the remembered port when it is free, else pick (and remember) a new one."""
    saved = load_state(paths.state).get("port")
    if isinstance(saved, int) and port_is_free(saved):
        return saved
    port = pick_free_ports(1)[0]
    save_state(paths.state, {"port": port})
    return port


# --- processes -------------------------------------------------------------------------------


def _postmaster_info(paths: _Paths) -> tuple[int, int] | None:
    """Return (pid, port) of the postmaster running on this data dir, or None.

    postmaster.pid holds the pid on line 1 and the port on line 4. A leftover file whose pid
    now belongs to some other program would make PostgreSQL refuse to start, so it is removed;
    one whose pid is dead is left for PostgreSQL, which cleans it up itself.
    """
    pid = read_pid(paths.postmaster_pid)
    if pid is None or not process_alive(pid):
        return None
    argv = " ".join(process_cmdline(pid))
    if str(paths.data) in argv:
        lines = paths.postmaster_pid.read_text().splitlines()
        return pid, int(lines[3])
    if "postgres" not in argv:
        LOG.info("Removing stale %s (pid %d is another program)", paths.postmaster_pid, pid)
        paths.postmaster_pid.unlink(missing_ok=True)
    return None


def _pg_ctl_start(paths: _Paths, bindir: Path, timeout: float) -> None:
    """Start the server and let pg_ctl wait until it accepts connections."""
    cmd = [
        str(bindir / "pg_ctl"), "-D", str(paths.data), "-l", str(paths.log_file),
        "-w", "-t", str(max(1, int(timeout))), "start",
    ]  # fmt: skip
    try:
        _run_server_tool(cmd, "pg_ctl start", paths.home)
    except PostgresError as exc:
        log_tail = tail(paths.log_file)
        raise PostgresError(f"{exc}\nlast lines of {paths.log_file}:\n{log_tail}") from None


def _pg_ctl_stop(paths: _Paths, bindir: Path) -> None:
    """Stop the server: "fast" rolls back open sessions; "immediate" if that hangs."""
    base = [str(bindir / "pg_ctl"), "-D", str(paths.data), "-w", "-t", "60", "stop"]
    try:
        _run_server_tool([*base, "-m", "fast"], "pg_ctl stop", paths.home)
    except PostgresError:
        LOG.warning("Fast shutdown failed; using immediate shutdown")
        _run_server_tool([*base, "-m", "immediate"], "pg_ctl stop", paths.home)


def _wait_exit(pid: int, timeout: float = 10.0) -> None:
    """Wait for the postmaster process itself to end.

    pg_ctl returns as soon as postmaster.pid is gone, which the postmaster deletes just
    before it exits; callers expect the process (and its port) to be gone after stop().
    """
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


# --- SQL -------------------------------------------------------------------------------------


def _url(port: int, database: str) -> str:
    return f"{DRIVER}://{ROLE}@{HOST}:{port}/{database}"


def _normalise_url(url: str) -> str:
    """Make any postgresql:// URL an asyncpg one, the driver the service uses."""
    return make_url(url).set(drivername=DRIVER).render_as_string(hide_password=False)


def dsn(url: str, database: str | None = None) -> str:
    """Turn a SQLAlchemy URL into a libpq-style DSN that asyncpg accepts (for admin SQL)."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _select_one(url: str) -> bool:
    """Tell whether the server behind `url` runs `SELECT 1` right now."""
    try:
        conn = await asyncpg.connect(dsn(url), timeout=_PROBE_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await conn.close()


async def _poll_ready(url: str, deadline: float) -> None:
    while not await _select_one(url):
        if time.monotonic() >= deadline:
            raise PostgresError(f"PostgreSQL at {make_url(url)!r} did not answer in time")
        await asyncio.sleep(0.2)


async def _create_database(url: str, name: str) -> None:
    conn = await asyncpg.connect(dsn(url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Identifiers cannot be bound as parameters; `name` is checked by the caller.
            await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        pass  # created concurrently by someone else: just as good
    finally:
        await conn.close()


async def _ready_with_default_db(port: int, deadline: float) -> None:
    """Wait until the server answers, then make sure the handle's database exists."""
    admin_url = _url(port, "postgres")  # the maintenance database initdb always creates
    await _poll_ready(admin_url, deadline)
    await _create_database(admin_url, DEFAULT_DB)


def create_database(handle: PostgresHandle, name: str) -> str:
    """Create database `name` on the handle's server unless it exists; return its URL.

    An existing database is kept as it is (its data too), so callers that need an empty one
    should use a fresh name, e.g. one per test session.
    """
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    asyncio.run(_create_database(handle.url, name))
    return make_url(handle.url).set(database=name).render_as_string(hide_password=False)


# --- public API ------------------------------------------------------------------------------


def _resolve_home(home: Path | None) -> Path:
    return (home if home is not None else default_home()).expanduser().resolve()


def _external_handle(home: Path) -> PostgresHandle | None:
    url = os.environ.get(ENV_URL, "").strip()
    if not url:
        return None
    normalised = _normalise_url(url)
    port = make_url(normalised).port or 5432
    return PostgresHandle(normalised, port, None, home, None, external=True)


def _handle(paths: _Paths, pid: int, port: int) -> PostgresHandle:
    return PostgresHandle(_url(port, DEFAULT_DB), port, pid, paths.home, paths.log_file, False)


def _launch(paths: _Paths, bindir: Path, timeout: float) -> tuple[int, int]:
    """Prepare, configure and start a server for this home; return (pid, port)."""
    _prepare_dirs(paths)
    _initdb(paths, bindir)
    port = _choose_port(paths)
    _write_conf(paths, port)
    _pg_ctl_start(paths, bindir, timeout)
    info = _postmaster_info(paths)
    if info is None:
        raise PostgresError(f"pg_ctl reported success but no server runs on {paths.data}")
    return info


def start(home: Path | None = None, *, timeout: float = 60.0) -> PostgresHandle:
    """Start the server of `home` (default: `default_home()`), or return the running one.

    Idempotent and safe against concurrent callers (lock file). The handle's URL points at
    the database `simjobs`, created on first start. Call from sync code only: it runs its own
    event loop.
    """
    paths = _Paths(_resolve_home(home))
    started = time.monotonic()
    deadline = started + timeout
    external = _external_handle(paths.home)
    if external is not None:
        asyncio.run(_poll_ready(external.url, deadline))
        return external
    bindir = ensure_installed()
    with file_lock(paths.lock):
        info = _postmaster_info(paths)
        if info is None:
            info = _launch(paths, bindir, timeout)
        handle = _handle(paths, *info)
        asyncio.run(_ready_with_default_db(handle.port, deadline))
    LOG.info(
        "PostgreSQL ready at %s (pid %d) after %.1f s",
        handle.url, handle.pid, time.monotonic() - started,
    )  # fmt: skip
    return handle


def stop(home: Path | None = None) -> bool:
    """Stop this home's server; return True if one was running and has been stopped."""
    paths = _Paths(_resolve_home(home))
    if _external_handle(paths.home) is not None:
        return False
    with file_lock(paths.lock):
        info = _postmaster_info(paths)
        if info is None:
            return False
        _pg_ctl_stop(paths, ensure_installed())
        _wait_exit(info[0])
    LOG.info("Stopped PostgreSQL pid %d", info[0])
    return True


def status(home: Path | None = None) -> PostgresHandle | None:
    """Return the handle of this home's server (or the external one) if it answers now."""
    paths = _Paths(_resolve_home(home))
    handle = _external_handle(paths.home)
    if handle is None:
        info = _postmaster_info(paths)
        if info is None:
            return None
        handle = _handle(paths, *info)
    return handle if asyncio.run(_select_one(handle.url)) else None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.postgres",
        description="Run a private PostgreSQL server for development and tests.",
    )
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--home", type=Path, default=None, help="state dir (see default_home())")
    parser.add_argument("--timeout", type=float, default=60.0, help="start timeout, seconds")
    return parser.parse_args(argv)


def _print_handle(handle: PostgresHandle) -> None:
    print(f"url: {handle.url}")
    print(f"log: {handle.log_file if handle.log_file else '(external server)'}")
    print(f"pid: {handle.pid if handle.pid is not None else '(external server)'}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit status 0 on success, 1 on error, 3 if not running."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    LOG.setLevel(logging.INFO)
    try:
        if args.command == "start":
            _print_handle(start(args.home, timeout=args.timeout))
        elif args.command == "stop":
            print("stopped" if stop(args.home) else "not running")
        else:
            handle = status(args.home)
            if handle is None:
                print("not running")
                return 3
            _print_handle(handle)
    except PostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
