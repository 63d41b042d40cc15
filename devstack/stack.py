"""Start and stop the whole stack on one machine, with several API and runner processes.

``make up`` runs ``python -m devstack.stack up``: the project's own Kafka broker, the
topics, then every service that exists, each as detached processes (one log under
``<state>/logs`` and one pid file under ``<state>/run`` per process), and returns once
every process is ready, printing where it listens. ``make down`` stops what ``up``
started, services first, then the broker, and the test sessions' broker, PostgreSQL and
SLURM cluster. The SLURM bridge runs only when ``SIMJOBS_CLUSTERS`` names clusters.

Scale-out on one machine: ``up --api-workers N`` runs N API processes on one port
(each binds it with ``SO_REUSEPORT``, and Linux spreads incoming connections over them;
sessions are shared because the signing secrets and the session table are); ``--runners
M`` runs M runner processes named runner-1..M, each a member of the runners' consumer
groups, so the tasks of a job spread over all of them. Running ``up`` again with other
counts starts the missing processes and stops the surplus ones.

The same launcher serves tests and benchmarks: :class:`StackConfig` says where the state
lives, which environment the services get, which broker to use and how many processes
to run; :class:`Stack` starts, observes and stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect

from devstack import (
    kafka_broker,
    postgres,
    process_alive,
    process_cmdline,
    read_pid,
    slurm,
    tail,
)
from services import procnet
from services.contract.topics import ensure_topics
from services.projector.readmodel import make_engine
from services.settings import (
    OPS_DEFAULT_PORTS,
    ApiSettings,
    RunnerSettings,
    Settings,
    load_api_settings,
    load_runner_settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]

#: The runner's worker logs each assignment of tasks partitions (its consumer group).
ASSIGNED = re.compile(r"worker (\S+): assigned tasks partitions \[([0-9, ]*)\]")
POLL_S = 0.3


class StackError(RuntimeError):
    """A process of the stack did not start or become ready (the message quotes its log)."""


@dataclass(frozen=True)
class StackConfig:
    """What to start: where, with which environment and broker, and how many processes.

    Attributes:
        state_dir: logs, pid files and the services' state (``SIMJOBS_STATE_DIR``).
        env: the environment every service starts with (its ``SIMJOBS_*`` settings).
        api_workers: API processes sharing the API port.
        runners: runner processes (runner-1..M).
        bootstrap: an already running broker; None starts the project's own broker
            (or uses ``SIMJOBS_KAFKA_BOOTSTRAP``'s cluster, see :mod:`devstack.kafka_broker`).
        timeout: seconds each service may take to become ready.
        python_args: interpreter arguments per service, placed before ``-m <module>``
            (e.g. ``("-m", "cProfile", "-o", "{state}/{name}.prof")``; ``{name}`` is the
            process name, ``{state}`` the state directory).
    """

    state_dir: Path
    env: Mapping[str, str]
    api_workers: int = 1
    runners: int = 1
    bootstrap: str | None = None
    timeout: float = 90.0
    python_args: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, *, api_workers: int = 1, runners: int = 1,
                         timeout: float = 90.0) -> StackConfig:
        """What ``make up`` starts: this process's environment, state in ``var/``.

        The services' metrics ports are fixed (:data:`OPS_DEFAULT_PORTS`) unless the
        environment sets them, so that Prometheus can scrape them.
        """
        state = Path(os.environ.get("SIMJOBS_STATE_DIR", str(ROOT / "var")))
        env = dict(os.environ)
        for name, port in OPS_DEFAULT_PORTS.items():
            env.setdefault(f"SIMJOBS_{name.upper()}_METRICS_PORT", str(port))
        return cls(state, env, api_workers, runners, None, timeout)


@dataclass(frozen=True)
class Instance:
    """One process of a service: ``projector``, or ``api-2``, ``runner-3`` when scaled."""

    service: Service
    index: int

    @property
    def name(self) -> str:
        return f"{self.service.name}-{self.index}" if self.service.scalable else self.service.name


@dataclass(frozen=True)
class Service:
    """One kind of long-running process of the stack.

    ``count`` says how many processes the configuration asks for, ``ready`` whether
    a started process serves, ``where`` what ``up`` prints about the service; ``args``
    and ``env`` are what a process gets beyond the stack's common environment.
    """

    name: str
    module: str
    count: Callable[[StackConfig], int]
    ready: Callable[[Stack, Instance, int], bool]
    where: Callable[[Stack], str]
    args: Callable[[Stack, Instance], list[str]] = lambda stack, instance: []
    env: Callable[[Stack, Instance], dict[str, str]] = lambda stack, instance: {}
    scalable: bool = False

    def exists(self) -> bool:
        """Whether this checkout has the service's entry point (services land one by one)."""
        path = ROOT / Path(*self.module.split("."))
        return (path / "__main__.py").exists() or path.with_suffix(".py").exists()


# --- readiness of each service ------------------------------------------------------------


def _projector_ready(stack: Stack, instance: Instance, pid: int) -> bool:
    """The projector is up once it has created the read model's tables."""

    async def check() -> bool:
        engine = make_engine(stack.settings().database.url)
        try:
            async with engine.connect() as conn:
                names = await conn.run_sync(lambda c: inspect(c).get_table_names())
                return "jobs" in names
        except Exception:
            return False
        finally:
            await engine.dispose()

    return asyncio.run(check())


def _runner_ready(stack: Stack, instance: Instance, pid: int) -> bool:
    """A runner is up once its worker has joined the consumer group (its first assignment)."""
    try:
        text = stack.log_file(instance.name).read_text(errors="replace")
    except OSError:
        return False
    return "runner (" in text and ASSIGNED.search(text) is not None


def _api_url(stack: Stack) -> str:
    api = stack.api_settings()
    host = "127.0.0.1" if api.host in ("", "0.0.0.0") else api.host
    return f"http://{host}:{api.port}/"


def _api_ready(stack: Stack, instance: Instance, pid: int) -> bool:
    """A worker serves once it listens (aiohttp binds after its start-up) and ``/`` answers.

    With several workers on one port a request may reach any of them, so the answer
    alone does not show that this worker is up; its listening socket does.
    """
    if procnet.available() and not procnet.listens_on(pid, stack.api_settings().port):
        return False
    try:
        with urllib.request.urlopen(_api_url(stack), timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


_METRICS_LINE = re.compile(r"metrics and health on (http://\S+)/metrics")


def _metrics_url(stack: Stack, instance: Instance) -> str | None:
    """Where a process serves /metrics and /readyz (it logs it; port 0 picks a free one)."""
    try:
        text = stack.log_file(instance.name).read_text(errors="replace")
    except OSError:
        return None
    found = _METRICS_LINE.findall(text)
    return found[-1] if found else None


def _usage_ready(stack: Stack, instance: Instance, pid: int) -> bool:
    """The usage worker is up once its own /readyz says so (Kafka, database, agent)."""
    url = _metrics_url(stack, instance)
    if url is None:
        return False
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _runner_env(stack: Stack, instance: Instance) -> dict[str, str]:
    """Each runner has its own name (in TaskStarted), work directory and metrics port.

    A fixed metrics port (``make up`` gives one, so Prometheus can scrape it) is the first
    runner's; the others take the next ones up.
    """
    root = stack.runner_settings().workdir_root
    env = {"SIMJOBS_RUNNER_NAME": instance.name,
           "SIMJOBS_RUNNER_WORKDIR": str(root / instance.name)}
    port = int(stack.env.get("SIMJOBS_RUNNER_METRICS_PORT", "0") or 0)
    if port > 0:
        env["SIMJOBS_RUNNER_METRICS_PORT"] = str(port + 10 * (instance.index - 1))
    return env


def _clusters(env: Mapping[str, str]) -> list[str]:
    """The cluster names of ``SIMJOBS_CLUSTERS`` (the bridge itself says what is wrong)."""
    try:
        found = json.loads(env.get("SIMJOBS_CLUSTERS", "[]"))
    except json.JSONDecodeError:
        return ["?"]
    if not isinstance(found, list):
        return ["?"]
    return [str(c.get("name")) if isinstance(c, dict) else "?" for c in found]


def _bridge_ready(stack: Stack, instance: Instance, pid: int) -> bool:
    """The SLURM bridge logs its start line once its topics exist and it is about to consume."""
    try:
        return "slurm-bridge on " in stack.log_file(instance.name).read_text(errors="replace")
    except OSError:
        return False


def _bridge_where(stack: Stack) -> str:
    return f"batch platform, clusters {', '.join(_clusters(stack.config.env))}"


def _api_where(stack: Stack) -> str:
    workers = stack.config.api_workers
    return _api_url(stack) + (f" ({workers} workers, one port)" if workers > 1 else "")


SERVICES = [
    Service("projector", "services.projector", lambda config: 1, _projector_ready,
            lambda stack: f"read model at {stack.settings().database.url}"),
    Service("usage", "services.projector.usage", lambda config: 1, _usage_ready,
            lambda stack: "usage accounting (faust-streaming) into the read model"),
    Service("runner", "services.runner", lambda config: config.runners, _runner_ready,
            lambda stack: "direct platform (simulators from SIMJOBS_SIM_<TYPE>_EXE)",
            env=_runner_env, scalable=True),
    Service("slurm-bridge", "services.slurm_bridge",
            lambda config: 1 if _clusters(config.env) else 0, _bridge_ready, _bridge_where),
    Service("api", "services.api", lambda config: config.api_workers, _api_ready,
            _api_where, args=lambda stack, instance: ["--reuse-port"], scalable=True),
]
"""In start order: the API needs the projector's schema, runners need nothing but Kafka."""


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """Read settings as a service with ``env`` would (the settings module reads os.environ)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (bound without SO_REUSEPORT, as a probe)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Stack:
    """The processes of one :class:`StackConfig`: start, observe, stop.

    Processes are detached (own session) and recorded in pid files, so a later
    ``status`` or ``down`` (another Python process) finds them; the ones started by this
    object are also reaped by it.
    """

    def __init__(self, config: StackConfig, report: Callable[[str], None] = print) -> None:
        self.config = config
        self.report = report
        self.bootstrap = config.bootstrap
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # --- configuration as the services see it ---

    @property
    def env(self) -> dict[str, str]:
        """The environment common to every service."""
        env = {**self.config.env, "SIMJOBS_STATE_DIR": str(self.config.state_dir),
               "PYTHONUNBUFFERED": "1"}
        if self.bootstrap is not None:
            env["SIMJOBS_KAFKA_BOOTSTRAP"] = self.bootstrap
        return env

    def settings(self) -> Settings:
        with _environment(self.env):
            return load_settings()

    def api_settings(self) -> ApiSettings:
        with _environment(self.env):
            return load_api_settings()

    def runner_settings(self) -> RunnerSettings:
        with _environment(self.env):
            return load_runner_settings()

    def pid_file(self, name: str) -> Path:
        return self.config.state_dir / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.config.state_dir / "logs" / f"{name}.log"

    # --- what runs ---

    def recorded(self, service: Service) -> dict[str, int | None]:
        """Every process of ``service`` with a pid file (name -> live pid, or None)."""
        found: dict[str, int | None] = {}
        run = self.config.state_dir / "run"
        pattern = re.compile(rf"{re.escape(service.name)}(-\d+)?\.pid")
        for path in sorted(run.glob(f"{service.name}*.pid")) if run.is_dir() else []:
            if pattern.fullmatch(path.name):
                pid = read_pid(path)
                alive = pid is not None and self._is_ours(service, pid)
                found[path.name[:-len(".pid")]] = pid if alive else None
        return found

    def pids(self, service_name: str) -> dict[str, int]:
        """The live processes of a service (name -> pid)."""
        service = next(s for s in SERVICES if s.name == service_name)
        return {name: pid for name, pid in self.recorded(service).items() if pid is not None}

    def exited(self) -> dict[str, int]:
        """Processes started by this object that have exited since (name -> status)."""
        return {name: code for name, proc in self._procs.items()
                if (code := proc.poll()) is not None}

    @staticmethod
    def _is_ours(service: Service, pid: int) -> bool:
        """Whether ``pid`` is alive and runs the service's module.

        A pid file outlives its process, and the kernel may have given the number to an
        unrelated process since: that one must never be signalled.
        """
        return process_alive(pid) and service.module in process_cmdline(pid)

    # --- start ---

    def up(self) -> None:
        """Start the broker (unless given), the topics and every process; wait until ready.

        Raises:
            StackError: a process exited or was not ready in time, or the API port is
                taken by a process that is not one of our workers.
            ValueError: a count is negative, or several API workers on a system
                without SO_REUSEPORT load balancing (Linux).
        """
        self._check_counts()
        if self.bootstrap is None:
            broker = kafka_broker.start()
            self.bootstrap = broker.bootstrap
            self.report(f"kafka: ready at {broker.bootstrap}"
                        + (f", log {broker.log_file}" if broker.log_file else " (external)"))
        else:
            self.report(f"kafka: using {self.bootstrap}")
        self._check_api_port()
        settings = self.settings()
        created = asyncio.run(ensure_topics(settings.kafka))
        self.report(f"topics: {settings.kafka.jobs_topic}, {settings.kafka.tasks_topic}"
                    + (f" (created {', '.join(created)})" if created else ""))
        for service in SERVICES:
            if service.exists():
                self._scale(service)

    def _check_counts(self) -> None:
        if self.config.api_workers < 0 or self.config.runners < 0:
            raise ValueError("--api-workers and --runners must not be negative")
        if self.config.api_workers > 1 and not sys.platform.startswith("linux"):
            raise ValueError("several API workers share one port through SO_REUSEPORT, "
                             "which spreads connections only on Linux")

    def _check_api_port(self) -> None:
        """Workers share the port with each other only: refuse a port someone else holds."""
        api_service = next(s for s in SERVICES if s.name == "api")
        if not self.config.api_workers or self.pids("api") or not api_service.exists():
            return
        api = self.api_settings()
        if not _port_free(api.host or "0.0.0.0", api.port):
            raise StackError(f"the API port {api.host}:{api.port} is in use by another "
                             "process; stop it or set SIMJOBS_API_PORT")

    def _scale(self, service: Service) -> None:
        """Start the missing processes of a service, stop its surplus ones, await them."""
        wanted = {i.name: i for i in
                  (Instance(service, n) for n in range(1, service.count(self.config) + 1))}
        recorded = self.recorded(service)
        surplus = [name for name in recorded if name not in wanted]
        if surplus:
            self._stop(service, surplus)
        starting: dict[str, tuple[Instance, subprocess.Popen[bytes]]] = {}
        for name, instance in wanted.items():
            pid = recorded.get(name)
            if pid is not None:
                self.report(f"{name}: already running (pid {pid}), {service.where(self)}")
                continue
            self._reap_replaced(name)
            starting[name] = (instance, self._spawn(instance))
        self._await_ready(starting)

    def _reap_replaced(self, name: str, timeout: float = 5.0) -> None:
        """Collect the process this object started earlier under ``name``, before a restart.

        Its pid file no longer names a live process of ours, so it has exited (a zombie
        that nobody waited for) or is about to. Dropping its ``Popen`` unwaited would
        leave the zombie until the object is collected, and warn then.
        """
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:  # still running, yet no pid file names it
            proc.kill()
            proc.wait()
            self.report(f"{name}: killed (pid {proc.pid}), not named by its pid file")

    def _spawn(self, instance: Instance) -> subprocess.Popen[bytes]:
        service = instance.service
        log = self.log_file(instance.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file(instance.name).parent.mkdir(parents=True, exist_ok=True)
        python_args = [a.format(name=instance.name, state=self.config.state_dir)
                       for a in self.config.python_args.get(service.name, ())]
        argv = [sys.executable, *python_args, "-m", service.module,
                *service.args(self, instance)]
        env = {**self.env, **service.env(self, instance)}
        with log.open("wb") as out:  # a fresh log per start: readiness is read from it
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.pid_file(instance.name).write_text(f"{proc.pid}\n")
        self._procs[instance.name] = proc
        return proc

    def _await_ready(self, starting: dict[str, tuple[Instance, subprocess.Popen[bytes]]]
                     ) -> None:
        deadline = time.monotonic() + self.config.timeout
        pending = dict(starting)
        while pending:
            for name, (instance, proc) in list(pending.items()):
                log = self.log_file(name)
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with status {proc.returncode}; "
                                     f"last lines of {log}:\n{tail(log)}")
                if instance.service.ready(self, instance, proc.pid):
                    self.report(f"{name}: ready (pid {proc.pid}), "
                                f"{instance.service.where(self)}, log {log}")
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                name = next(iter(pending))
                raise StackError(f"{name} not ready after {self.config.timeout:.0f} s; see "
                                 f"{self.log_file(name)}:\n{tail(self.log_file(name))}")
            time.sleep(POLL_S)

    # --- stop ---

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every process of every service, the last started first (idempotent)."""
        for service in reversed(SERVICES):
            self._stop(service, list(self.recorded(service)), timeout)
        # What this object started and no pid file names any more (another Stack of the
        # same state dir stopped it, say) is reaped here, and stopped if still running.
        for name, proc in list(self._procs.items()):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                self.report(f"{name}: stopped (pid {proc.pid})")
            del self._procs[name]

    def _stop(self, service: Service, names: list[str], timeout: float = 20.0) -> None:
        """SIGTERM the named processes together, SIGKILL what is left after ``timeout``."""
        pids = {}
        for name in names:
            pid = read_pid(self.pid_file(name))
            if pid is not None and self._is_ours(service, pid):
                os.kill(pid, signal.SIGTERM)
                pids[name] = pid
            else:
                self.pid_file(name).unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        while any(process_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name, pid in pids.items():
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
                self.report(f"{name}: killed (pid {pid}, still running after {timeout:.0f} s)")
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.wait()
            self.pid_file(name).unlink(missing_ok=True)
            self.report(f"{name}: stopped (pid {pid})")

    def status(self) -> list[tuple[str, int | None]]:
        """Every process with a pid file, or the bare service name if it has none."""
        rows: list[tuple[str, int | None]] = []
        for service in SERVICES:
            recorded = self.recorded(service)
            rows.extend(recorded.items() if recorded else [(service.name, None)])
        return rows


def up(config: StackConfig) -> int:
    """``up``: start everything; 1 with the reason when a process fails to start."""
    try:
        Stack(config).up()
    except (StackError, ValueError) as exc:
        print(f"up failed: {exc}", file=sys.stderr)
        return 1
    return 0


def down(config: StackConfig) -> int:
    """``down``: stop the services, then the broker (idempotent)."""
    Stack(config).stop()
    if kafka_broker.stop():
        print("kafka: stopped")
    # The test sessions' broker and PostgreSQL are left running between sessions.
    test_kafka = Path.home() / ".cache" / "simjobs" / "kafka-test"
    if kafka_broker.stop(Path(os.environ.get("SIMJOBS_TEST_KAFKA_HOME", test_kafka))):
        print("kafka (tests): stopped")
    test_pg = Path.home() / ".cache" / "simjobs" / "postgres-test"
    if postgres.stop(Path(os.environ.get("SIMJOBS_TEST_PG_HOME", test_pg))):
        print("postgresql (tests): stopped")
    if slurm.stop():
        print("slurm and sshd (tests): stopped")
    return 0


def status(config: StackConfig) -> int:
    """``status``: print what is running."""
    broker = kafka_broker.status()
    print(f"kafka: {'running at ' + broker.bootstrap if broker else 'stopped'}")
    for name, pid in Stack(config).status():
        print(f"{name}: {f'running (pid {pid})' if pid is not None else 'stopped'}")
    cluster = slurm.status()
    where = (f"running, ssh {cluster.user}@{cluster.host}:{cluster.ssh_port}" if cluster
             else "stopped")
    print(f"slurm and sshd (tests): {where}")
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.stack {up,down,status} [--api-workers N] [--runners M]``."""
    parser = argparse.ArgumentParser(prog="devstack.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--api-workers", type=_count, default=1,
                        help="API processes sharing the API port (default 1)")
    parser.add_argument("--runners", type=_count, default=1,
                        help="runner processes, named runner-1..M (default 1)")
    args = parser.parse_args(argv)
    config = StackConfig.from_environment(api_workers=args.api_workers, runners=args.runners,
                                          timeout=args.timeout)
    if args.command == "up":
        return up(config)
    if args.command == "down":
        return down(config)
    return status(config)


if __name__ == "__main__":
    sys.exit(main())
