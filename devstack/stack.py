"""Start and stop the whole stack on one machine with its embedded defaults.

``make up`` runs ``python -m devstack.stack up``: the project's own Kafka
broker, the topics, then every service that exists (each as a detached
process with its log under ``var/logs`` and its pid under ``var/run``),
and returns once each one is ready, printing where it listens.
``make down`` stops what ``up`` started, services first, then the broker, and the
test sessions' broker, PostgreSQL and SLURM cluster. The SLURM bridge starts only
when ``SIMJOBS_CLUSTERS`` names clusters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect

from devstack import kafka_broker, postgres, process_alive, read_pid, slurm, tail
from services.contract.topics import ensure_topics
from services.projector.readmodel import make_engine
from services.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack."""

    name: str
    module: str
    ready: Callable[[dict[str, str]], bool]
    where: Callable[[dict[str, str]], str]
    #: Whether this stack wants the service (the SLURM bridge only when clusters are set).
    wanted: Callable[[dict[str, str]], bool] = lambda env: True


def _db_ready(env: dict[str, str]) -> bool:
    """The projector is up once it has created the read model's tables."""

    async def check() -> bool:
        engine = make_engine(_settings(env).database.url)
        try:
            async with engine.connect() as conn:
                names = await conn.run_sync(lambda c: inspect(c).get_table_names())
                return "jobs" in names
        except Exception:
            return False
        finally:
            await engine.dispose()

    return asyncio.run(check())


def _api_url(env: dict[str, str]) -> str:
    host = env.get("SIMJOBS_API_HOST", "127.0.0.1")
    port = env.get("SIMJOBS_API_PORT", "5000")
    return f"http://{host}:{port}/"


def _api_ready(env: dict[str, str]) -> bool:
    try:
        with urllib.request.urlopen(_api_url(env), timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _settings(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _runner_ready(env: dict[str, str]) -> bool:
    """The runner logs its start line once its topics exist and it is about to consume."""
    try:
        return "runner (" in _log_file("runner").read_text(errors="replace")
    except OSError:
        return False


def _bridge_ready(env: dict[str, str]) -> bool:
    """The SLURM bridge logs its start line once its topics exist and it is about to consume."""
    try:
        return "slurm-bridge on " in _log_file("slurm-bridge").read_text(errors="replace")
    except OSError:
        return False


def _clusters(env: dict[str, str]) -> list[str]:
    try:
        found = json.loads(env.get("SIMJOBS_CLUSTERS", "[]"))
    except json.JSONDecodeError:
        return ["?"]  # let the bridge say what is wrong with it
    return [str(c.get("name")) for c in found if isinstance(c, dict)] \
        if isinstance(found, list) else ["?"]


SERVICES = [
    Service("projector", "services.projector", _db_ready,
            lambda env: f"read model at {_settings(env).database.url}"),
    Service("runner", "services.runner", _runner_ready,
            lambda env: "direct platform (simulators from SIMJOBS_SIM_<TYPE>_EXE)"),
    Service("slurm-bridge", "services.slurm_bridge", _bridge_ready,
            lambda env: f"batch platform, clusters {', '.join(_clusters(env))}",
            wanted=lambda env: bool(_clusters(env))),
    Service("api", "services.api", _api_ready, _api_url),
]


def _var() -> Path:
    return Path(os.environ.get("SIMJOBS_STATE_DIR", ROOT / "var"))


def _pid_file(name: str) -> Path:
    return _var() / "run" / f"{name}.pid"


def _log_file(name: str) -> Path:
    return _var() / "logs" / f"{name}.log"


def _exists(service: Service) -> bool:
    return (ROOT / Path(*service.module.split(".")) / "__main__.py").exists()


def _start_service(service: Service, env: dict[str, str], timeout: float) -> None:
    pid = read_pid(_pid_file(service.name))
    if pid is not None and process_alive(pid):
        print(f"{service.name}: already running (pid {pid}), {service.where(env)}")
        return
    log = _log_file(service.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    _pid_file(service.name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # a fresh log per start: readiness is read from it
        proc = subprocess.Popen(
            [sys.executable, "-m", service.module], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    _pid_file(service.name).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{service.name} exited with status {proc.returncode}; "
                             f"last lines of {log}:\n{tail(log)}")
        if service.ready(env):
            print(f"{service.name}: ready (pid {proc.pid}), {service.where(env)}, log {log}")
            return
        time.sleep(0.3)
    raise SystemExit(f"{service.name} not ready after {timeout:.0f} s; see {log}:\n{tail(log)}")


def _stop_service(name: str, timeout: float = 20.0) -> None:
    pid = read_pid(_pid_file(name))
    if pid is None or not process_alive(pid):
        _pid_file(name).unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)
    _pid_file(name).unlink(missing_ok=True)
    print(f"{name}: stopped (pid {pid})")


def up(timeout: float) -> int:
    """Start the broker, the topics and every existing service; return when all are ready."""
    broker = kafka_broker.start()
    print(f"kafka: ready at {broker.bootstrap}"
          + (f", log {broker.log_file}" if broker.log_file else " (external)"))
    env = {**os.environ, "SIMJOBS_KAFKA_BOOTSTRAP": broker.bootstrap,
           "SIMJOBS_STATE_DIR": str(_var())}
    settings = _settings(env)
    created = asyncio.run(ensure_topics(settings.kafka))
    print(f"topics: {settings.kafka.jobs_topic}, {settings.kafka.tasks_topic}"
          + (f" (created {', '.join(created)})" if created else ""))
    for service in SERVICES:
        if _exists(service) and service.wanted(env):
            _start_service(service, env, timeout)
    return 0


def down() -> int:
    """Stop the services, then the broker (idempotent)."""
    for service in reversed(SERVICES):
        _stop_service(service.name)
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


def status() -> int:
    """Print what is running."""
    broker = kafka_broker.status()
    print(f"kafka: {'running at ' + broker.bootstrap if broker else 'stopped'}")
    for service in SERVICES:
        pid = read_pid(_pid_file(service.name))
        alive = pid is not None and process_alive(pid)
        print(f"{service.name}: {f'running (pid {pid})' if alive else 'stopped'}")
    cluster = slurm.status()
    where = (f"running, ssh {cluster.user}@{cluster.host}:{cluster.ssh_port}" if cluster
             else "stopped")
    print(f"slurm and sshd (tests): {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.stack {up,down,status}``."""
    parser = argparse.ArgumentParser(prog="devstack.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.timeout)
    if args.command == "down":
        return down()
    return status()


if __name__ == "__main__":
    sys.exit(main())
