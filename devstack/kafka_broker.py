"""Run a single-node Apache Kafka broker (KRaft) from Maven jars, without Docker.

Why: the service needs a real broker in development and tests, no package manager we can
reach ships one, and Maven Central has every jar of it. `devstack/kafka/pom.xml` names the
broker; `ensure_jars` copies its runtime classpath into a cache outside git and `start` runs
`kafka.Kafka` from it as a detached process whose state lives in a "home" directory::

    <home>/lib/               jar cache (+ marker file naming the Kafka version)
    <home>/data/              log.dirs (KRaft metadata and topic partitions)
    <home>/logs/broker.log    the broker's stdout+stderr (log4j2 logs to the console)
    <home>/server.properties  written on every start (ports may change)
    <home>/state.json         chosen ports and the cluster id
    <home>/broker.pid         pid of the running broker

Set SIMJOBS_KAFKA_BOOTSTRAP to use an already running cluster instead.

CLI: ``python -m devstack.kafka_broker {start,stop,status} [--home DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

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

LOG = logging.getLogger("devstack.kafka_broker")  # stable name, also under `python -m`

ENV_BOOTSTRAP = "SIMJOBS_KAFKA_BOOTSTRAP"
ENV_HOME = "SIMJOBS_KAFKA_HOME"
KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
STARTED_LINE = "Kafka Server started"
JAR_MARKER = ".simjobs-jars"
MAIN_CLASS = "kafka.Kafka"

# Heap per kafka.md section 3: the log cleaner's dedupe buffer lives on the heap, so a tiny
# heap dies at start; 1 GiB leaves room for Python and PostgreSQL on a 2-core machine.
JVM_OPTS = (
    "-Xms512m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)
_PROBE_TIMEOUT = 5.0
_POLL_INTERVAL = 0.25

# Brokers started by this Python process. Keeping the Popen objects lets us reap them when
# they exit (no zombies) and avoids Popen's "still running" ResourceWarning on collection.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """The broker could not be prepared, started or reached."""


@dataclass(frozen=True)
class BrokerHandle:
    """Where a running broker is and how it was started."""

    bootstrap: str
    pid: int | None
    home: Path
    log_file: Path | None
    external: bool


@dataclass(frozen=True)
class _Paths:
    """File layout of one broker home (see the module docstring)."""

    home: Path

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def tmp(self) -> Path:
        return self.home / "tmp"

    @property
    def log_file(self) -> Path:
        return self.logs / "broker.log"

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def state(self) -> Path:
        return self.home / "state.json"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def lock(self) -> Path:
        return self.home / "broker.lock"


def default_home() -> Path:
    """Return the broker home: $SIMJOBS_KAFKA_HOME, else ~/.cache/simjobs/kafka.

    A per-user cache keeps the jars and the formatted data across runs and out of git.
    """
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simjobs" / "kafka"


# --- jars ------------------------------------------------------------------------------------


def _jar_fingerprint() -> str:
    """Describe the wanted classpath: the Kafka version plus a hash of the whole POM.

    The hash also catches a changed log4j pin, which the version alone would miss.
    """
    pom_bytes = POM.read_bytes()
    root = ET.fromstring(pom_bytes)
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = root.findtext("m:properties/m:kafka.version", default="unknown", namespaces=namespace)
    digest = hashlib.sha256(pom_bytes).hexdigest()
    return f"kafka.version={version}\npom.sha256={digest}\n"


def _copy_dependencies(target: Path) -> None:
    """Let Maven copy the broker's runtime jars into `target` (downloads go to ~/.m2)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("mvn not found on PATH; install Maven to fetch the Kafka jars")
    cmd = [
        mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={target}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"mvn failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def ensure_jars(home: Path) -> Path:
    """Make sure `<home>/lib` holds the broker classpath named by the POM; return it.

    Skipped when the marker file in lib matches the POM. Otherwise the jars are copied into a
    fresh directory that then replaces lib, so two Kafka versions never share a classpath.
    """
    paths = _Paths(home.expanduser().resolve())
    wanted = _jar_fingerprint()
    marker = paths.lib / JAR_MARKER
    with file_lock(paths.home / "jars.lock"):
        if marker.is_file() and marker.read_text() == wanted:
            return paths.lib
        started = time.monotonic()
        staging = paths.home / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        _copy_dependencies(staging)
        shutil.rmtree(paths.lib, ignore_errors=True)
        staging.rename(paths.lib)
        marker.write_text(wanted)
        LOG.info("Copied Kafka jars to %s in %.1f s", paths.lib, time.monotonic() - started)
    return paths.lib


# --- configuration ---------------------------------------------------------------------------


def _server_properties(paths: _Paths, client_port: int, controller_port: int) -> str:
    """Render server.properties for a single combined broker+controller on loopback."""
    return f"""\
# Written by devstack/kafka_broker.py on every start; edits are overwritten.
# Single-node KRaft with a static quorum (one voter: this node).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{controller_port}
listeners=PLAINTEXT://{HOST}:{client_port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{client_port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={paths.data}

# One node: internal topics must have RF=1 / min ISR 1 or their coordinators never come up;
# one partition each keeps the first group join and first transaction fast on 2 cores.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# The service creates its topics (with their own retention) itself; auto-creation would
# hide a misspelt topic name behind a new, empty topic.
auto.create.topics.enable=false

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1

# Events are small; big payloads (inputs, results) go to the artifact store and only their
# references travel through Kafka. 4 MiB leaves headroom without inviting blobs.
message.max.bytes=4194304
# Default is 128 MiB allocated on the heap at start; 32 MiB is plenty for compacted topics here.
log.cleaner.dedupe.buffer.size=33554432
"""


def _new_cluster_id() -> str:
    """Return a 22-character URL-safe base64 UUID, the form StorageTool expects."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _choose_ports(state: dict[str, object]) -> tuple[int, int]:
    """Reuse the remembered client/controller ports when both are free, else pick new ones.

    Stable ports let a developer keep one bootstrap address across restarts.
    """
    client, controller = state.get("client_port"), state.get("controller_port")
    if isinstance(client, int) and isinstance(controller, int):
        if port_is_free(client) and port_is_free(controller):
            return client, controller
        LOG.info("Ports %d/%d are taken; picking new ones", client, controller)
    first, second = pick_free_ports(2)
    return first, second


def _java() -> str:
    """Locate the java executable, preferring $JAVA_HOME like Kafka's own scripts."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError("java not found; Kafka 4.x needs Java 17 or newer")
    return found


def _java_props(paths: _Paths) -> list[str]:
    """System properties shared by the broker and StorageTool.

    java.io.tmpdir must be writable: zstd-jni and snappy unpack native libraries into it.
    """
    return [
        f"-Djava.io.tmpdir={paths.tmp}",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={paths.logs}",
    ]


def _format_storage(paths: _Paths, lib: Path, cluster_id: str) -> None:
    """Format log.dirs for KRaft; the broker refuses to start on an unformatted directory."""
    cmd = [
        _java(), "-Xmx256m", *_java_props(paths), "-cp", f"{lib}/*",
        "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(paths.properties),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"StorageTool format failed:\n{result.stdout}{result.stderr}")
    LOG.info("Formatted %s with cluster id %s", paths.data, cluster_id)


# --- processes -------------------------------------------------------------------------------


def _is_alive(pid: int) -> bool:
    """Tell whether `pid` still runs, reaping it if it is our own exited child."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    return process_alive(pid)


def _is_our_broker(pid: int, paths: _Paths) -> bool:
    """Check that `pid` is a live broker started from this home (pids get reused)."""
    if not _is_alive(pid):
        return False
    argv = process_cmdline(pid)
    return MAIN_CLASS in argv and str(paths.properties) in argv


def _running_pid(paths: _Paths, *, clean: bool) -> int | None:
    """Return the pid of this home's live broker; optionally drop a stale pid file."""
    pid = read_pid(paths.pid_file)
    if pid is None:
        return None
    if _is_our_broker(pid, paths):
        return pid
    if clean:
        LOG.info("Removing stale pid file %s (pid %d is not our broker)", paths.pid_file, pid)
        paths.pid_file.unlink(missing_ok=True)
    return None


def _rotate_log(paths: _Paths) -> None:
    """Keep the previous run's log as broker.log.1 so broker.log describes this run only."""
    if paths.log_file.exists():
        paths.log_file.replace(paths.log_file.with_suffix(".log.1"))


def _spawn(paths: _Paths, lib: Path) -> int:
    """Start the broker JVM detached from our session; return its pid."""
    cmd = [
        _java(), *JVM_OPTS, *_java_props(paths),
        "-cp", f"{lib}/*", MAIN_CLASS, str(paths.properties),
    ]  # fmt: skip
    with paths.log_file.open("ab") as out:
        # A new session: Ctrl-C in the terminal or pytest's exit must not kill the broker.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=paths.home,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    paths.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_gone(pid: int, timeout: float) -> bool:
    """Poll until `pid` has exited; return False if it is still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while _is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(pid: int, timeout: float) -> None:
    """Stop a broker: SIGTERM runs its shutdown hook (clean, fast restart); SIGKILL if stuck."""
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    LOG.warning("Broker pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, timeout)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)


# --- readiness -------------------------------------------------------------------------------


async def _port_open(bootstrap: str) -> bool:
    """Tell whether the client port accepts TCP connections yet.

    A cheap pre-check: it saves one noisy aiokafka connection error per poll while the JVM
    is still booting.
    """
    host, _, port = bootstrap.rpartition(":")
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, int(port))
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _answers(bootstrap: str) -> bool:
    """Tell whether a Kafka cluster at `bootstrap` answers a metadata request with a broker."""
    if not await _port_open(bootstrap):
        return False
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(_PROBE_TIMEOUT * 1000)
    )
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            await admin.start()
            cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return bool(cluster.get("brokers"))


def _started_logged(log_file: Path | None) -> bool:
    """Tell whether our broker logged its "started" line (external clusters have no log)."""
    if log_file is None:
        return True
    try:
        return STARTED_LINE in log_file.read_text(errors="replace")
    except OSError:
        return False


def _failure(handle: BrokerHandle, what: str) -> BrokerError:
    """Build an error that carries the end of the broker's log, where the reason usually is."""
    if handle.log_file is None:
        return BrokerError(f"Kafka cluster at {handle.bootstrap} {what}")
    return BrokerError(
        f"Kafka broker at {handle.bootstrap} {what}; last lines of {handle.log_file}:\n"
        f"{tail(handle.log_file)}"
    )


async def _poll_ready(handle: BrokerHandle, alive: Callable[[], bool], deadline: float) -> None:
    """Wait until the broker answers and has logged its start, or fail with the log's tail."""
    while True:
        if not alive():
            raise _failure(handle, "exited during startup")
        if await _answers(handle.bootstrap) and _started_logged(handle.log_file):
            return
        if time.monotonic() >= deadline:
            raise _failure(handle, "did not become ready in time")
        await asyncio.sleep(_POLL_INTERVAL)


def _wait_ready(handle: BrokerHandle, deadline: float) -> None:
    """Block until `handle` is ready; the caller is sync code (CLI, pytest session fixture)."""
    pid = handle.pid

    def alive() -> bool:
        return pid is None or _is_alive(pid)

    asyncio.run(_poll_ready(handle, alive, deadline))


# --- public API ------------------------------------------------------------------------------


def _resolve_home(home: Path | None) -> Path:
    return (home if home is not None else default_home()).expanduser().resolve()


def _handle(paths: _Paths, pid: int, client_port: int) -> BrokerHandle:
    return BrokerHandle(f"{HOST}:{client_port}", pid, paths.home, paths.log_file, external=False)


def _running_handle(paths: _Paths, pid: int) -> BrokerHandle:
    """Describe the live broker `pid` of this home, whose port is in the state file."""
    port = load_state(paths.state).get("client_port")
    if not isinstance(port, int):
        raise BrokerError(f"{paths.state} lacks the port of running broker pid {pid}; stop it")
    return _handle(paths, pid, port)


def _external_handle(home: Path) -> BrokerHandle | None:
    bootstrap = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if not bootstrap:
        return None
    return BrokerHandle(bootstrap, None, home, None, external=True)


def _launch(paths: _Paths, lib: Path, deadline: float, *, disposable: bool) -> BrokerHandle:
    """Configure, format if needed, spawn and await a new broker for this home.

    A `disposable` home's data is wiped first: its topics belong to test sessions that have
    ended, and a broker must load every partition it holds before it answers (12,589
    partitions left by earlier sessions kept a CI broker loading logs past its start timeout).
    """
    if disposable and paths.data.exists():
        shutil.rmtree(paths.data)
    for directory in (paths.data, paths.logs, paths.tmp):
        directory.mkdir(parents=True, exist_ok=True)
    state = load_state(paths.state)
    client_port, controller_port = _choose_ports(state)
    cluster_id = str(state.get("cluster_id") or _new_cluster_id())
    save_state(
        paths.state,
        {"client_port": client_port, "controller_port": controller_port, "cluster_id": cluster_id},
    )
    paths.properties.write_text(_server_properties(paths, client_port, controller_port))
    if not (paths.data / "meta.properties").exists():
        _format_storage(paths, lib, cluster_id)
    _rotate_log(paths)
    pid = _spawn(paths, lib)
    handle = _handle(paths, pid, client_port)
    try:
        _wait_ready(handle, deadline)
    except BaseException:
        # A half-started JVM would hold 1 GiB and the ports; the next start retries cleanly.
        if _is_alive(pid):
            _terminate(pid, 10.0)
        paths.pid_file.unlink(missing_ok=True)
        raise
    return handle


def start(
    home: Path | None = None,
    *,
    timeout: float = 90.0,
    jars_home: Path | None = None,
    disposable: bool = False,
) -> BrokerHandle:
    """Start the broker of `home` (default: `default_home()`), or return the running one.

    Idempotent and safe against concurrent callers: under a lock file, a live broker from this
    home is reused, a stale pid file is removed, and only otherwise a new JVM is launched.
    `jars_home` names another home whose jar cache to use (tests pass the developer's default
    home so that a temporary home does not copy the jars again). Call from sync code only: it
    runs its own event loop. `disposable` (test homes only) wipes the data of a broker that has
    to be launched anew; a running broker is reused with its data either way.
    """
    paths = _Paths(_resolve_home(home))
    started = time.monotonic()
    deadline = started + timeout
    external = _external_handle(paths.home)
    if external is not None:
        _wait_ready(external, deadline)
        return external
    lib = ensure_jars(jars_home if jars_home is not None else paths.home)
    with file_lock(paths.lock):
        pid = _running_pid(paths, clean=True)
        if pid is not None:
            handle = _running_handle(paths, pid)
            _wait_ready(handle, deadline)
            return handle
        handle = _launch(paths, lib, deadline, disposable=disposable)
    LOG.info(
        "Kafka broker ready at %s (pid %s) after %.1f s",
        handle.bootstrap, handle.pid, time.monotonic() - started,
    )  # fmt: skip
    return handle


def stop(home: Path | None = None, *, timeout: float = 30.0) -> bool:
    """Stop this home's broker; return True if a broker was running and has been stopped.

    An external cluster (SIMJOBS_KAFKA_BOOTSTRAP) is never ours to stop.
    """
    paths = _Paths(_resolve_home(home))
    if _external_handle(paths.home) is not None:
        return False
    with file_lock(paths.lock):
        pid = _running_pid(paths, clean=True)
        if pid is None:
            return False
        _terminate(pid, timeout)
        paths.pid_file.unlink(missing_ok=True)
    LOG.info("Stopped Kafka broker pid %d", pid)
    return True


def status(home: Path | None = None) -> BrokerHandle | None:
    """Return the handle of this home's broker (or the external cluster) if it answers now."""
    paths = _Paths(_resolve_home(home))
    handle = _external_handle(paths.home)
    if handle is None:
        pid = _running_pid(paths, clean=False)
        if pid is None:
            return None
        handle = _running_handle(paths, pid)
    return handle if asyncio.run(_answers(handle.bootstrap)) else None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.kafka_broker",
        description="Run a single-node Kafka broker for development and tests.",
    )
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument(
        "--home", type=Path, default=None, help="state dir (default: see default_home())"
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="start/stop timeout, s")
    return parser.parse_args(argv)


def _print_handle(handle: BrokerHandle) -> None:
    print(f"bootstrap: {handle.bootstrap}")
    print(f"log: {handle.log_file if handle.log_file else '(external cluster)'}")
    print(f"pid: {handle.pid if handle.pid is not None else '(external cluster)'}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit status 0 on success, 1 on error, 3 if not running."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    LOG.setLevel(logging.INFO)
    try:
        if args.command == "start":
            _print_handle(start(args.home, timeout=args.timeout))
        elif args.command == "stop":
            print("stopped" if stop(args.home, timeout=args.timeout) else "not running")
        else:
            handle = status(args.home)
            if handle is None:
                print("not running")
                return 3
            _print_handle(handle)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
