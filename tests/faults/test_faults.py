"""Fault injection: processes of the stack are SIGKILLed while jobs run, then restarted.

The stack is the one ``make up`` starts (:mod:`devstack.stack`), on the session broker with
its own topic prefix and a SQLite read model of its own. Runners run the SHIELD-HIT12A
stand-in. For every fault, jobs are submitted, the fault is injected while their tasks run,
the killed process is restarted (``Stack.up`` starts what is missing), and then:

- every job reaches COMPLETED, each task completed once (none lost, no second completion
  under another event id),
- the merged result equals the merge of the per-task outputs recorded in the log,
- ``python -m services.audit verify`` finds the read model equal to a rebuild from the log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack import kafka_broker, postgres, process_alive
from devstack.stack import ROOT, Stack
from services.artifacts.store import ArtifactStore
from services.simulators.merge import TaskResult, merge_results
from tests.runner.conftest import FAKE_SIMULATOR, beam, of_type
from tests.support.fault_tally import TALLY, FaultRow, Tally
from tests.test_stack import job_events, kafka_of, launched, port, stack_config

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

JOBS = 2
NTASKS = 6
PRIMARIES = NTASKS * 200
TERMINAL = ("COMPLETED", "FAILED", "CANCELED")


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[Stack]:
    """One API worker, two runners, the projector: each can be killed and restarted."""
    FAKE_SIMULATOR.chmod(FAKE_SIMULATOR.stat().st_mode | 0o111)
    config = stack_config(kafka_bootstrap, tmp_path_factory.mktemp("faults"), api_workers=1,
                          runners=2)
    config.env["FAKE_SIM_STEP_SECONDS"] = "0.05"  # type: ignore[index]
    async with launched(config) as s:
        yield s


class Client:
    """An HTTP client that rides out an API that is down (connection refused: try again)."""

    def __init__(self, stack: Stack) -> None:
        self.base = f"http://127.0.0.1:{port(stack)}"
        self.http = aiohttp.ClientSession(self.base, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        for _ in range(600):
            try:
                async with self.http.request(method, path, **kw) as r:
                    return r.status, await r.json(content_type=None)
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.2)
        raise AssertionError(f"{method} {path}: the API did not come back")

    async def login(self, username: str) -> None:
        user = {"username": username, "password": "faults-password-1"}
        status, body = await self.request("PUT", "/auth/register", json=user)
        assert status == 201, body
        status, body = await self.request("POST", "/auth/login", json=user)
        assert status == 202, body

    async def submit(self, title: str) -> str:
        body = {"sim_type": "shieldhit", "ntasks": NTASKS, "input_type": "files",
                "input_files": beam(PRIMARIES), "title": title}
        status, reply = await self.request("POST", "/jobs/direct", json=body)
        assert status == 202, reply
        return str(reply["job_id"])

    async def state(self, job_id: str) -> dict[str, Any]:
        status, view = await self.request("GET", "/jobs/direct", params={"job_id": job_id})
        assert status == 200, view
        return dict(view)

    async def until_terminal(self, job_id: str, within: float = 120) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        view = await self.state(job_id)
        while view["job_state"] not in TERMINAL:
            assert asyncio.get_running_loop().time() < deadline, view
            await asyncio.sleep(0.3)
            view = await self.state(job_id)
        return view

    async def until_running(self, job_id: str) -> None:
        """Until a task of the job has started: the fault then hits work in progress."""
        for _ in range(600):
            view = await self.state(job_id)
            if any(t["task_state"] in ("RUNNING", "COMPLETED")
                   for t in view.get("job_tasks_status", [])):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{job_id} never started")


def kill(stack: Stack, service: str, name: str | None = None) -> int:
    """SIGKILL one process of a service (the first one unless named); its pid."""
    pids = stack.pids(service)
    pid = pids[name or sorted(pids)[0]]
    os.kill(pid, signal.SIGKILL)
    return pid


async def restart(stack: Stack, pid: int) -> None:
    """Wait for the killed process to be gone, then start what is missing."""
    for _ in range(100):
        proc = next((p for p in stack._procs.values() if p.pid == pid), None)
        if proc is not None:
            proc.poll()  # reap it: the launcher treats a zombie as dead already
        if not process_alive(pid):
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(stack.up)


def audit_verify(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.audit", "verify"], cwd=ROOT,
                          env=stack.env, capture_output=True, text=True, timeout=120,
                          check=False)


async def check_jobs(stack: Stack, client: Client, job_ids: list[str], row: FaultRow) -> None:
    """Every job COMPLETED, each task once, merged result = merge of the task outputs."""
    artifacts = ArtifactStore(stack.settings().artifacts.root)
    for job_id in job_ids:
        view = await client.until_terminal(job_id)
        row.jobs += 1
        assert view["job_state"] == "COMPLETED", view
        row.completed += 1
        events = await job_events(kafka_of(stack), job_id)
        completed = of_type(events, "TaskCompleted")
        indexes = sorted(e.payload["task_index"] for e in completed)
        row.lost_events += len(set(range(NTASKS)) - set(indexes))
        row.doubled_events += len(indexes) - len(set(indexes))
        assert indexes == list(range(NTASKS)), indexes
        row.rerun_tasks += len(of_type(events, "TaskStarted")) - NTASKS
        (done,) = of_type(events, "JobCompleted")
        merged = artifacts.get_json(done.payload["result_ref"])
        by_index = sorted(completed, key=lambda e: e.payload["task_index"])
        assert sum(e.payload["simulated_primaries"] for e in by_index) == PRIMARIES
        expected = merge_results([TaskResult(e.payload["simulated_primaries"],
                                             artifacts.get_json(e.payload["result_ref"]))
                                  for e in by_index])
        assert merged == expected
        row.results_equal += 1
    verified = await asyncio.to_thread(audit_verify, stack)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    row.verify_ok = True


async def run_under_fault(stack: Stack, tally: Tally, fault: str,
                          inject: Callable[[Client], Awaitable[None]]) -> None:
    """Submit jobs, inject the fault once their tasks run, check the outcome."""
    row = FaultRow(fault)
    tally.rows.append(row)
    client = Client(stack)
    try:
        await client.login(f"faults-{len(tally.rows)}")
        job_ids = [await client.submit(f"{fault}-{i}") for i in range(JOBS)]
        await client.until_running(job_ids[0])
        await inject(client)
        await check_jobs(stack, client, job_ids, row)
    finally:
        await client.http.close()


async def run_fault(stack: Stack, tally: Tally, fault: str, service: str,
                    name: str | None = None) -> None:
    """Kill the service once the jobs' tasks run, restart it, check the outcome."""
    async def kill_and_restart(_client: Client) -> None:
        pid = kill(stack, service, name)
        await asyncio.sleep(1.0)  # the jobs go on (or wait) without it for a moment
        await restart(stack, pid)
        assert stack.pids(service), f"{service} not restarted"

    await run_under_fault(stack, tally, fault, kill_and_restart)


async def test_sigkill_of_the_api(stack: Stack) -> None:
    await run_fault(stack, TALLY, "SIGKILL api", "api")


async def test_sigkill_of_a_runner(stack: Stack) -> None:
    await run_fault(stack, TALLY, "SIGKILL runner", "runner", "runner-1")


async def test_sigkill_of_the_projector(stack: Stack) -> None:
    await run_fault(stack, TALLY, "SIGKILL projector", "projector")



# --- restarts of the broker and the database: a stack on its own broker and PostgreSQL -----


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A broker of this module's own (never the shared test broker): it gets restarted."""
    home = tmp_path_factory.mktemp("kafka-own")
    kafka_broker.start(home, jars_home=kafka_broker.default_home(), disposable=True)
    try:
        yield home
    finally:
        kafka_broker.stop(home)


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A PostgreSQL server of this module's own (never the shared one): it gets restarted."""
    home = tmp_path_factory.mktemp("pg-own")
    postgres.start(home)
    try:
        yield home
    finally:
        postgres.stop(home)


@pytest.fixture(scope="module")
async def own_stack(own_broker: Path, own_postgres: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The stack on the module's own broker, with its read model on its own PostgreSQL."""
    FAKE_SIMULATOR.chmod(FAKE_SIMULATOR.stat().st_mode | 0o111)
    broker = await asyncio.to_thread(kafka_broker.start, own_broker,
                                     jars_home=kafka_broker.default_home())
    server = await asyncio.to_thread(postgres.start, own_postgres)
    config = stack_config(broker.bootstrap, tmp_path_factory.mktemp("faults-own"),
                          api_workers=1, runners=2)
    config.env["FAKE_SIM_STEP_SECONDS"] = "0.05"  # type: ignore[index]
    config.env["SIMJOBS_DATABASE_URL"] = await asyncio.to_thread(  # type: ignore[index]
        postgres.create_database, server, f"f_{uuid.uuid4().hex[:12]}")
    async with launched(config) as s:
        yield s


async def run_restart(stack: Stack, tally: Tally, fault: str,
                      restart_it: Callable[[], None],
                      while_down: Callable[[Client], Awaitable[None]] | None = None) -> None:
    """Restart a dependency once the jobs' tasks run, check the outcome."""
    async def inject(client: Client) -> None:
        await asyncio.to_thread(restart_it)
        if while_down is not None:
            await while_down(client)

    await run_under_fault(stack, tally, fault, inject)
    assert all(stack.pids(s) for s in ("api", "runner", "projector")), stack.exited()


async def test_restart_of_the_kafka_broker(own_stack: Stack, own_broker: Path,
                                           ) -> None:
    def restart_broker() -> None:
        kafka_broker.stop(own_broker)
        time.sleep(2.0)
        kafka_broker.start(own_broker, jars_home=kafka_broker.default_home())

    await run_restart(own_stack, TALLY, "restart kafka broker", restart_broker)


async def test_restart_of_postgresql(own_stack: Stack, own_postgres: Path,
                                     ) -> None:
    down: dict[str, Any] = {}

    def stop_db() -> None:
        postgres.stop(own_postgres)

    async def probe_then_start(client: Client) -> None:
        status, body = await client.request("GET", "/jobs/direct",
                                            params={"job_id": "x" * 32})
        down.update(status=status, body=body)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(postgres.start, own_postgres)

    await run_restart(own_stack, TALLY, "restart postgresql", stop_db, probe_then_start)
    assert down["status"] == 503, down
