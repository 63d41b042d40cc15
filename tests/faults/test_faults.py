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
from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder, EventProducer
from services.contract.log_reader import LogReader
from services.settings import KafkaSettings
from tests.runner.conftest import FAKE_SIMULATOR, beam, of_type
from tests.support.fault_tally import TALLY, FaultRow, Tally
from tests.support.twins import direct_twin
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


async def restart(stack: Stack, *pids: int) -> None:
    """Wait for the killed processes to be gone, then start what is missing.

    ``Stack.up`` collects each replaced process itself before starting its successor.
    """
    for _ in range(100):
        if not any(process_alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(stack.up)


def audit_verify(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.audit", "verify"], cwd=ROOT,
                          env=stack.env, capture_output=True, text=True, timeout=120,
                          check=False)


async def check_jobs(stack: Stack, client: Client, job_ids: list[str], row: FaultRow) -> None:
    """Every job COMPLETED, each task once, merged result = its undisturbed twin's.

    The twin (:mod:`tests.support.twins`) is the same submission with the same base seed,
    run after the fault, when nothing disturbs it: so a task whose output was lost, doubled
    or taken from a different seed after the fault makes the two results differ.
    """
    artifacts = ArtifactStore(stack.settings().artifacts.root)
    kafka = kafka_of(stack)
    for job_id in job_ids:
        view = await client.until_terminal(job_id)
        row.jobs += 1
        assert view["job_state"] == "COMPLETED", view
        row.completed += 1
        events = await job_events(kafka, job_id)
        completed = of_type(events, "TaskCompleted")
        indexes = sorted(e.payload["task_index"] for e in completed)
        row.lost_events += len(set(range(NTASKS)) - set(indexes))
        row.doubled_events += len(indexes) - len(set(indexes))
        assert indexes == list(range(NTASKS)), indexes
        row.rerun_tasks += len(of_type(events, "TaskStarted")) - NTASKS
        assert sum(e.payload["simulated_primaries"] for e in completed) == PRIMARIES
        twin = direct_twin(events[0])
        async with EventProducer(kafka) as producer:
            await producer.publish(twin)
        reference = await client.until_terminal(twin.job_id)
        assert reference["job_state"] == "COMPLETED", reference
        (done,) = of_type(events, "JobCompleted")
        (expected,) = of_type(await job_events(kafka, twin.job_id), "JobCompleted")
        assert artifacts.get_json(done.payload["result_ref"]) == \
            artifacts.get_json(expected.payload["result_ref"])
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



async def test_cancel_while_every_runner_is_down(stack: Stack) -> None:
    """DELETE while no runner lives: once they are back, the job ends CANCELED, nothing reruns.

    The job's tasks hang (the stand-in's HANG card), so only the cancel can end them.
    """
    row = FaultRow("cancel while runners killed")
    TALLY.rows.append(row)
    client = Client(stack)
    kafka = kafka_of(stack)
    try:
        await client.login("faults-cancel")
        status, reply = await client.request("POST", "/jobs/direct", json={
            "sim_type": "shieldhit", "ntasks": 2, "input_type": "files",
            "input_files": beam(400, extra="HANG\n"), "title": "cancel under fault"})
        assert status == 202, reply
        job_id = str(reply["job_id"])
        row.jobs += 1
        await client.until_running(job_id)
        pids = [kill(stack, "runner", name) for name in sorted(stack.pids("runner"))]
        status, reply = await client.request("DELETE", "/jobs/direct",
                                             params={"job_id": job_id})
        assert status == 200, reply
        await restart(stack, *pids)
        events = await wait_for_events(kafka, job_id, "JobCanceled")
        view = await client.until_terminal(job_id)
        assert view["job_state"] == "CANCELED", view
        row.completed += 1
        types = [e.type for e in events]
        after_cancel = types[types.index("CancelRequested"):]
        assert "TaskStarted" not in after_cancel and "TaskCompleted" not in types, types
        canceled = {e.payload["task_index"] for e in of_type(events, "TaskCanceled")}
        row.lost_events += len({0, 1} - canceled)
        assert canceled == {0, 1}, types
        assert len(of_type(events, "JobCanceled")) == 1
        verified = await asyncio.to_thread(audit_verify, stack)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        row.verify_ok = True
    finally:
        await client.http.close()


async def wait_for_events(kafka: KafkaSettings, job_id: str, event_type: str,
                          within: float = 120) -> list[Event]:
    """The job's events once one of ``event_type`` is among them."""
    deadline = time.monotonic() + within
    while True:
        events = await job_events(kafka, job_id)
        if of_type(events, event_type):
            return events
        assert time.monotonic() < deadline, [e.type for e in events]
        await asyncio.sleep(0.3)


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


async def test_the_api_while_kafka_is_down(own_stack: Stack, own_broker: Path) -> None:
    """A submit gets a prompt 503 and leaves nothing behind; reads go on from the read model."""
    client = Client(own_stack)
    kafka = kafka_of(own_stack)
    try:
        await client.login("faults-kafka-down")
        before = await client.submit("before the outage")
        assert (await client.until_terminal(before))["job_state"] == "COMPLETED"
        await asyncio.to_thread(kafka_broker.stop, own_broker)
        try:
            started = time.monotonic()
            status, reply = await client.request("POST", "/jobs/direct", json={
                "sim_type": "shieldhit", "ntasks": 2, "input_type": "files",
                "input_files": beam(400), "title": "during the outage"})
            waited = time.monotonic() - started
            print(f"POST while Kafka is down: {status} after {waited:.1f} s")
            assert status == 503, reply
            assert reply["message"] == "The job log is unavailable, try again later", reply
            assert (await client.state(before))["job_state"] == "COMPLETED"
            status, listing = await client.request("GET", "/user/simulations")
            assert status == 200 and [s["job_id"] for s in listing["simulations"]] == [before]
        finally:
            await asyncio.to_thread(kafka_broker.start, own_broker,
                                    jars_home=kafka_broker.default_home())
        after = await client.submit("after the outage")
        assert (await client.until_terminal(after))["job_state"] == "COMPLETED"
        # The refused submission never shows up: not in the log, not in the listing.
        titles = []
        async for records in LogReader(kafka, kafka.jobs_topic).batches():
            for record in records:
                event = EventDecoder().decode(record.value)
                if event is not None and event.type == "JobSubmitted":
                    titles.append(event.payload["title"])
        assert "during the outage" not in titles and "after the outage" in titles, titles
        status, listing = await client.request("GET", "/user/simulations")
        assert status == 200
        assert sorted(s["job_id"] for s in listing["simulations"]) == sorted([before, after])
    finally:
        await client.http.close()
