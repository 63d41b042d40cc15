"""Scale-out on one machine: the stack launcher's API workers and runner processes.

The stack is started by ``devstack.stack`` itself (the code behind ``make up``), on a
free port, against the session's broker with its own topic prefix and state directory.
The runners run the SHIELD-HIT12A stand-in, configured as an operator configures the
real binary (``SIMJOBS_SIM_SHIELDHIT_EXE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack import pick_free_ports, process_alive
from devstack.stack import ROOT, Stack, StackConfig, StackError
from services import procnet
from services.artifacts.store import ArtifactStore
from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder
from services.contract.log_reader import LogReader
from services.settings import KafkaSettings
from services.simulators.merge import TaskResult, merge_results
from tests.conftest import new_prefix
from tests.runner.conftest import FAKE_SIMULATOR, beam, of_type
from tests.runner.test_processes import assignments, wait_for

pytestmark = pytest.mark.kafka

RUNNERS = 4
TASKS_PARTITIONS = 8
NTASKS = 64
#: How long a worker trusts a session it checked (the API default is 5 s; short here).
SESSION_CACHE_SECONDS = 1.0
PRIMARIES = 64 * 250
USER = {"username": "scale", "password": "scale-password-1"}


def stack_config(bootstrap: str, state: Path, *, api_workers: int, runners: int
                 ) -> StackConfig:
    """A stack of its own: topics, consumer groups, state dir and API port."""
    prefix = new_prefix()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMJOBS_", "FAKE_SIM_"))}
    env.update({
        "SIMJOBS_TOPIC_PREFIX": prefix,
        "SIMJOBS_JOBS_PARTITIONS": "3",
        "SIMJOBS_TASKS_PARTITIONS": str(TASKS_PARTITIONS),
        "SIMJOBS_PROJECTOR_GROUP": f"{prefix}-projector",
        "SIMJOBS_RUNNER_COORDINATOR_GROUP": f"{prefix}-coordinator",
        "SIMJOBS_RUNNER_WORKER_GROUP": f"{prefix}-workers",
        "SIMJOBS_RUNNER_CONCURRENCY": "2",
        "SIMJOBS_RUNNER_GRACE_SECONDS": "2",
        "SIMJOBS_SIM_SHIELDHIT_EXE": str(FAKE_SIMULATOR),
        "SIMJOBS_API_PORT": str(pick_free_ports(1)[0]),
        "SIMJOBS_VALIDATE_ON_CONSUME": "1",
        "SIMJOBS_API_SESSION_CACHE_SECONDS": str(SESSION_CACHE_SECONDS),
        "FAKE_SIM_STEP_SECONDS": "0.02",
    })
    return StackConfig(state, env, api_workers=api_workers, runners=runners,
                       bootstrap=bootstrap, timeout=120)


@contextlib.asynccontextmanager
async def launched(config: StackConfig) -> AsyncIterator[Stack]:
    """The stack up (in a thread: the launcher is synchronous), always stopped after."""
    stack = Stack(config, report=lambda line: print(f"stack: {line}"))
    try:
        await asyncio.to_thread(stack.up)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


@pytest.fixture(scope="module")
async def scaled(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Stack]:
    """Two API workers on one port, four runners, one projector."""
    mode = FAKE_SIMULATOR.stat().st_mode
    FAKE_SIMULATOR.chmod(mode | 0o111)
    config = stack_config(kafka_bootstrap, tmp_path_factory.mktemp("scaled"), api_workers=2,
                          runners=RUNNERS)
    async with launched(config) as stack:
        yield stack


def port(stack: Stack) -> int:
    return stack.api_settings().port


def kafka_of(stack: Stack) -> KafkaSettings:
    return stack.settings().kafka


async def job_events(kafka: KafkaSettings, job_id: str) -> list[Event]:
    decoder = EventDecoder(validate=True)
    found = []
    async for records in LogReader(kafka, kafka.jobs_topic).batches():
        for record in records:
            event = decoder.decode(record.value)
            if event is not None and event.job_id == job_id:
                found.append(event)
    assert not decoder.skipped, decoder.skipped
    return found


def runner_logs(stack: Stack) -> dict[str, Path]:
    return {name: stack.log_file(name) for name in stack.pids("runner")}


# --- a 64-task job over four runner processes ----------------------------------------------


async def test_a_64_task_job_spreads_over_four_runner_processes(scaled: Stack) -> None:
    runners = scaled.pids("runner")
    assert sorted(runners) == [f"runner-{i}" for i in range(1, RUNNERS + 1)]
    logs = runner_logs(scaled)

    def balanced() -> bool:
        latest = assignments(logs)
        parts = [latest.get(name, set()) for name in logs]
        return (all(parts) and set().union(*parts) == set(range(TASKS_PARTITIONS))
                and sum(map(len, parts)) == TASKS_PARTITIONS)

    await wait_for(balanced, f"four runners sharing {TASKS_PARTITIONS} partitions: {logs}",
                   within=60)
    base = f"http://127.0.0.1:{port(scaled)}"
    async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.put("/auth/register", json=USER) as r:
            assert r.status == 201, await r.text()
        async with http.post("/auth/login", json=USER) as r:
            assert r.status == 202, await r.text()
        body = {"sim_type": "shieldhit", "ntasks": NTASKS, "input_type": "files",
                "input_files": beam(PRIMARIES), "title": "scale-out"}
        async with http.post("/jobs/direct", json=body) as r:
            assert r.status == 202, await r.text()
            job_id = (await r.json())["job_id"]

        async def status() -> dict[str, Any]:
            async with http.get("/jobs/direct", params={"job_id": job_id}) as r:
                assert r.status == 200, await r.text()
                reply: dict[str, Any] = await r.json()
                return reply

        deadline = asyncio.get_running_loop().time() + 150
        view = await status()
        while view["job_state"] not in ("COMPLETED", "FAILED", "CANCELED"):
            assert asyncio.get_running_loop().time() < deadline, view["job_state"]
            await asyncio.sleep(0.3)
            view = await status()
        assert view["job_state"] == "COMPLETED", view
        async with http.get("/results", params={"job_id": job_id}) as r:
            assert r.status == 200, await r.text()
            served = (await r.json())["estimators"]

    tasks = view["job_tasks_status"]
    assert len(tasks) == NTASKS
    assert {t["task_state"] for t in tasks} == {"COMPLETED"}
    assert sum(t["requested_primaries"] for t in tasks) == PRIMARIES
    assert sum(t["simulated_primaries"] for t in tasks) == PRIMARIES

    events = await job_events(kafka_of(scaled), job_id)
    started = of_type(events, "TaskStarted")
    ran_by: dict[str, list[int]] = {}
    for e in started:
        ran_by.setdefault(e.payload["worker"], []).append(e.payload["task_index"])
    assert sorted(i for indexes in ran_by.values() for i in indexes) == list(range(NTASKS))
    assert set(ran_by) == set(runners), ran_by  # every runner process ran some of the tasks
    print({name: len(indexes) for name, indexes in sorted(ran_by.items())})

    completed = sorted(of_type(events, "TaskCompleted"), key=lambda e: e.payload["task_index"])
    assert [e.payload["task_index"] for e in completed] == list(range(NTASKS))
    assert sum(e.payload["simulated_primaries"] for e in completed) == PRIMARIES
    artifacts = ArtifactStore(scaled.settings().artifacts.root)
    (done,) = of_type(events, "JobCompleted")
    merged = artifacts.get_json(done.payload["result_ref"])
    assert merged == merge_results([TaskResult(e.payload["simulated_primaries"],
                                               artifacts.get_json(e.payload["result_ref"]))
                                    for e in completed])
    assert [e["name"] for e in served] == [e["name"] for e in merged["estimators"]]


# --- two API workers on one port ---------------------------------------------------------


@dataclass(frozen=True)
class Served:
    status: int
    body: dict[str, Any]
    cookies: dict[str, str]
    pid: int | None  # the API worker that accepted the connection


def call(port: int, pids: list[int], method: str, path: str, *, body: Any = None,
         cookies: dict[str, str] | None = None) -> Served:
    """One request on a fresh connection, and which worker process served it.

    The worker is read from the kernel's socket table while the (keep-alive)
    connection is still open: the one holding the accepted end.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.connect()
        assert conn.sock is not None
        client = conn.sock.getsockname()
        headers = {"Content-Type": "application/json"}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers)
        response = conn.getresponse()
        data = response.read()
        jar = {}
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]
        pid = procnet.server_of(client, port, pids)
        return Served(response.status, json.loads(data) if data else {}, jar, pid)
    finally:
        conn.close()


def served_by_other(port: int, pids: list[int], not_pid: int | None, method: str, path: str,
                    cookies: dict[str, str]) -> Served:
    """Fresh connections until one reaches a worker other than ``not_pid``."""
    for _ in range(64):  # each lands on either worker; 64 misses in a row: ~1e-19
        served = call(port, pids, method, path, cookies=cookies)
        if served.pid != not_pid:
            return served
    raise AssertionError(f"64 connections in a row reached pid {not_pid} only")


def sessions_across_workers(port: int, pids: list[int]) -> None:
    creds = {"username": "two-workers", "password": "two-workers-pw-1"}
    assert call(port, pids, "PUT", "/auth/register", body=creds).status == 201
    login = call(port, pids, "POST", "/auth/login", body=creds)
    assert login.status == 202 and login.pid in pids, login
    # The login on one worker is valid on the other.
    other = served_by_other(port, pids, login.pid, "GET", "/auth/status", login.cookies)
    assert other.pid in pids and other.pid != login.pid
    assert (other.status, other.body.get("username")) == (200, "two-workers"), other
    # Requests on fresh connections are spread over both processes.
    seen = [call(port, pids, "GET", "/auth/status", cookies=login.cookies) for _ in range(40)]
    assert {s.status for s in seen} == {200}
    counts = {pid: sum(1 for s in seen if s.pid == pid) for pid in pids}
    assert all(counts.values()), counts
    print(f"40 requests over the workers: {counts}")
    # Logout on one worker revokes the session on the other one too, once the other has
    # stopped trusting what it checked a moment ago (SIMJOBS_API_SESSION_CACHE_SECONDS).
    logout = call(port, pids, "DELETE", "/auth/logout", cookies=login.cookies)
    assert logout.status == 200, logout
    deadline = time.monotonic() + SESSION_CACHE_SECONDS + 10
    while True:
        after = served_by_other(port, pids, logout.pid, "GET", "/auth/status", login.cookies)
        if after.status != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (after.status, after.body.get("message")) == (
        403, "Refresh access token. Session ended."), after


async def test_two_api_workers_serve_one_port_and_share_sessions(scaled: Stack) -> None:
    workers = scaled.pids("api")
    assert sorted(workers) == ["api-1", "api-2"]
    pids = list(workers.values())
    assert all(procnet.listens_on(pid, port(scaled)) for pid in pids)
    await asyncio.to_thread(sessions_across_workers, port(scaled), pids)


# --- the container health check, run against real processes ------------------------------


def healthcheck(env: dict[str, str], *probes: str, pid: int | None = None
                ) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.healthcheck", *probes]
    if pid is not None:
        argv += ["--pid", str(pid)]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


async def test_health_check_probes_pass_for_live_connected_services(scaled: Stack) -> None:
    env = scaled.env
    api = await asyncio.to_thread(healthcheck, env, "api")
    assert api.returncode == 0, api.stdout + api.stderr
    assert f"ok http://127.0.0.1:{port(scaled)}/: 200" in api.stdout
    for name, pid in scaled.pids("runner").items():
        runner = await asyncio.to_thread(healthcheck, env, "kafka", pid=pid)
        assert runner.returncode == 0, (name, runner.stdout + runner.stderr)
        assert f"to {scaled.bootstrap}" in runner.stdout
    (projector,) = scaled.pids("projector").values()
    both = await asyncio.to_thread(healthcheck, env, "kafka", "database", pid=projector)
    assert both.returncode == 0, both.stdout + both.stderr
    assert "database: SQLite" in both.stdout  # this stack's read model is a file


@pytest.fixture
def idle_process() -> Iterator[int]:
    """A live process that holds no connection."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


async def test_health_check_probes_fail_without_a_connection_or_an_answer(
        scaled: Stack, idle_process: int) -> None:
    env = scaled.env
    kafka = await asyncio.to_thread(healthcheck, env, "kafka", pid=idle_process)
    assert kafka.returncode == 1
    assert f"FAIL kafka: no established connection to {scaled.bootstrap}" in kafka.stdout
    closed = {**env, "SIMJOBS_API_PORT": str(pick_free_ports(1)[0])}
    api = await asyncio.to_thread(healthcheck, closed, "api")
    assert api.returncode == 1 and api.stdout.startswith("FAIL http://127.0.0.1:"), api.stdout
    pg = {**env, "SIMJOBS_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:1/db"}
    database = await asyncio.to_thread(healthcheck, pg, "database", pid=idle_process)
    assert database.returncode == 1
    assert "FAIL database: no established connection to 127.0.0.1:1" in database.stdout
    unknown = await asyncio.to_thread(healthcheck, env, "kafak")
    assert unknown.returncode == 2 and "unknown probe 'kafak'" in unknown.stdout


# --- up again with other counts, status, down ------------------------------------------------


async def test_up_again_scales_down_and_stop_ends_every_process(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    config = stack_config(kafka_bootstrap, tmp_path / "state", api_workers=2, runners=0)
    async with launched(config) as stack:
        before = stack.pids("api")
        assert sorted(before) == ["api-1", "api-2"]
        smaller = Stack(replace(config, api_workers=1), report=stack.report)
        await asyncio.to_thread(smaller.up)
        assert smaller.pids("api") == {"api-1": before["api-1"]}  # kept, not restarted
        assert not process_alive(before["api-2"])
        assert not stack.pid_file("api-2").exists()
        served = await asyncio.to_thread(call, port(stack), [before["api-1"]], "GET", "/")
        assert (served.status, served.pid) == (200, before["api-1"])
        assert dict(stack.status()) == {"projector": stack.pids("projector")["projector"],
                                         "usage": stack.pids("usage")["usage"],
                                         "runner": None, "slurm-bridge": None,
                                         "api-1": before["api-1"]}
        everything = [*stack.pids("projector").values(), *stack.pids("usage").values(),
                      before["api-1"]]
    assert not any(process_alive(pid) for pid in everything)
    assert not list((tmp_path / "state" / "run").glob("*.pid"))


def test_up_refuses_an_api_port_that_another_process_holds(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    config = stack_config(kafka_bootstrap, tmp_path / "state", api_workers=2, runners=0)
    taken = int(config.env["SIMJOBS_API_PORT"])
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", taken))
        foreign.listen()
        stack = Stack(config, report=lambda line: None)
        with pytest.raises(StackError, match=f"API port 127.0.0.1:{taken} is in use"):
            stack.up()
    assert not (tmp_path / "state" / "run").exists()  # refused before starting anything


#: Loaded by every service process of the next test (through PYTHONPATH): on SIGUSR1 its main
#: thread exits while another thread lives on for LINGER_S. The kernel then shows the thread
#: group leader as a zombie, so the pid counts as dead, yet waitpid() cannot collect the
#: process until its last thread is gone. A SIGKILLed multi-threaded service goes through the
#: same state for a moment, while its threads exit.
LEADER_EXITS_FIRST = """
import ctypes, os, signal, threading, time

def _linger():
    time.sleep({linger})
    os._exit(0)

def _leader_exits(signum, frame):
    threading.Thread(target=_linger, daemon=True).start()
    ctypes.CDLL(None).pthread_exit(None)

signal.signal(signal.SIGUSR1, _leader_exits)
"""
LINGER_S = 2.0


def test_up_waits_for_a_process_whose_threads_outlive_its_leader_before_replacing_it(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Its Popen is waited for, never dropped while the process runs (ResourceWarning)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(LEADER_EXITS_FIRST.format(linger=LINGER_S))
    config = stack_config(kafka_bootstrap, tmp_path / "state", api_workers=0, runners=0)
    config.env["PYTHONPATH"] = str(site)  # type: ignore[index]
    stack = Stack(config, report=lambda line: print(f"stack: {line}"))
    try:
        stack.up()
        replaced = stack.pids("projector")["projector"]
        os.kill(replaced, signal.SIGUSR1)
        while process_alive(replaced):
            time.sleep(0.02)
        assert Path(f"/proc/{replaced}/task").exists()  # its other thread still runs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stack.up()
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], \
            [str(w.message) for w in caught]
        assert not Path(f"/proc/{replaced}").exists()  # collected, not a zombie
        successor = stack.pids("projector")["projector"]
        assert successor != replaced
        assert stack.exited() == {}
    finally:
        stack.stop()
