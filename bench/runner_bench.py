"""Direct-platform benchmark: orchestration overhead, dispatch latency, cancel latency.

``python -m bench.runner_bench [--reps 8] [--reps-64 4] [--cancel-reps 8]``

The whole stack runs as separate processes started by the stack launcher
(:mod:`devstack.stack`), as in production: the broker (the project's own if it already
answers, else one of the benchmark's own), the projector, one runner (concurrency = the
number of cores) and the API, with a fresh state directory and topic prefix. The simulator
is ``bench/null_simulator.sh``, a SHIELD-HIT12A stand-in in POSIX sh that does almost nothing
(same command line and log lines, one estimator file), configured as an operator configures
the real binary, so what is measured is the platform's own overhead; for the cancel phase
its ``SLEEP`` card keeps it running until it is stopped.

* **Orchestration overhead**: ``POST /jobs/direct`` to the moment ``GET /jobs/direct``
  shows COMPLETED (polled every 5 ms), jobs one after another, at ntasks 1, 8 and 64.
  Target: under 1 s at ntasks 8. The same interval taken from the log (JobSubmitted to
  JobCompleted, both stamped by their producers on this machine's clock) is shown beside it.
* **Dispatch latency**: JobSubmitted to the job's first TaskStarted, from the log.
* **Cancel latency**: ``DELETE /jobs/direct`` to the last process of the job's simulators'
  process groups gone from the process table (polled every 2 ms), for jobs with one running
  simulator per runner slot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.api_bench import Bench, broker, service_env
from devstack import pick_free_ports, process_alive, process_cmdline
from devstack.stack import Stack, StackConfig
from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder
from services.contract.log_reader import LogReader
from services.settings import KafkaSettings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "runner.json"
NULL_SIMULATOR = ROOT / "bench" / "null_simulator.sh"
USERNAME, PASSWORD = "bench", "bench-password-1"
TARGET_OVERHEAD_S = 1.0
TERMINAL = {"COMPLETED", "FAILED", "CANCELED"}


def log(message: str) -> None:
    print(f"runner_bench: {message}", file=sys.stderr, flush=True)


def body(ntasks: int, sleep: float = 0.0) -> dict[str, Any]:
    """A SHIELD-HIT12A files submission of ``ntasks`` tasks, 10 primaries each."""
    beam = f"RNDSEED 89736501\nJPART0 2\nTMAX0 150.0 0.0\nNSTAT {10 * ntasks} 0\n"
    if sleep:
        beam += f"SLEEP {sleep:g}\n"
    return {"sim_type": "shieldhit", "ntasks": ntasks, "input_type": "files", "title": "bench",
            "input_files": {"beam.dat": beam, "geo.dat": "", "mat.dat": "", "detect.dat": ""}}


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99, min and max (nearest rank) of some durations in seconds."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "min": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]

    return {"n": len(ordered), "p50": rank(0.50), "p99": rank(0.99), "min": ordered[0],
            "max": ordered[-1], "mean": statistics.fmean(ordered)}


class Client:
    """The benchmark's HTTP client, logged in as the bench user."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def login(self) -> None:
        creds = {"username": USERNAME, "password": PASSWORD}
        async with self.session.put(self.base + "/auth/register", json=creds) as r:
            if r.status not in (201, 403):
                raise RuntimeError(f"register: {r.status} {await r.text()}")
        async with self.session.post(self.base + "/auth/login", json=creds) as r:
            if r.status != 202:
                raise RuntimeError(f"login: {r.status} {await r.text()}")

    async def submit(self, ntasks: int, sleep: float = 0.0) -> str:
        async with self.session.post(self.base + "/jobs/direct",
                                     json=body(ntasks, sleep)) as r:
            data = await r.json()
            if r.status != 202:
                raise RuntimeError(f"submit: {r.status} {data}")
            return str(data["job_id"])

    async def state(self, job_id: str) -> str:
        async with self.session.get(self.base + "/jobs/direct",
                                    params={"job_id": job_id}) as r:
            data = await r.json()
            if r.status != 200:
                raise RuntimeError(f"status: {r.status} {data}")
            return str(data["job_state"])

    async def cancel(self, job_id: str) -> None:
        async with self.session.delete(self.base + "/jobs/direct",
                                       params={"job_id": job_id}) as r:
            if r.status != 200:
                raise RuntimeError(f"cancel: {r.status} {await r.text()}")

    async def wait_terminal(self, job_id: str, limit_s: float = 120.0) -> str:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            state = await self.state(job_id)
            if state in TERMINAL:
                return state
            await asyncio.sleep(0.005)
        raise RuntimeError(f"job {job_id} not finished after {limit_s} s")


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def simulator_groups(root: Path) -> set[int]:
    """Process groups of the stand-in simulators running under ``root``."""
    marker = str(root)
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = process_cmdline(int(entry.name))
        if any("null_simulator" in a for a in argv) and any(marker in a for a in argv) \
                and process_alive(int(entry.name)):
            fields = _stat_fields(int(entry.name))
            if len(fields) > 2:
                groups.add(int(fields[2]))
    return groups


def group_members(groups: set[int]) -> list[int]:
    """Live processes in any of these process groups (the simulators and their children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if len(fields) > 2 and int(fields[2]) in groups and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


async def job_events(kafka: KafkaSettings) -> dict[str, list[Event]]:
    decoder = EventDecoder(validate=False)
    by_job: dict[str, list[Event]] = {}
    async for records in LogReader(kafka, kafka.jobs_topic).batches():
        for record in records:
            event = decoder.decode(record.value)
            if event is not None:
                by_job.setdefault(event.job_id, []).append(event)
    return by_job


def first_time(events: list[Event], type_: str) -> float | None:
    times = [e.occurred_at.timestamp() for e in events if e.type == type_]
    return min(times) if times else None


async def overhead_phase(client: Client,
                         reps: dict[int, int]) -> dict[int, list[tuple[str, float]]]:
    runs: dict[int, list[tuple[str, float]]] = {}
    for ntasks, count in reps.items():
        runs[ntasks] = []
        for _ in range(count):
            started = time.monotonic()
            job_id = await client.submit(ntasks)
            state = await client.wait_terminal(job_id)
            if state != "COMPLETED":
                raise RuntimeError(f"job {job_id} ended {state}")
            runs[ntasks].append((job_id, time.monotonic() - started))
        log(f"ntasks {ntasks}: {count} jobs done")
    return runs


async def cancel_phase(client: Client, workdir: Path, reps: int, slots: int) -> list[float]:
    latencies = []
    for _ in range(reps):
        job_id = await client.submit(slots, sleep=600)
        deadline = time.monotonic() + 60
        while len(groups := simulator_groups(workdir)) < slots:
            if time.monotonic() > deadline:
                raise RuntimeError("the simulators of the cancel job never all started")
            await asyncio.sleep(0.01)
        while len(group_members(groups)) < 2 * slots:  # noqa: ASYNC110 - each sh has its sleep
            await asyncio.sleep(0.005)
        started = time.monotonic()
        await client.cancel(job_id)
        while group_members(groups):  # noqa: ASYNC110 - polls /proc
            await asyncio.sleep(0.002)
        latencies.append(time.monotonic() - started)
        await client.wait_terminal(job_id)
    return latencies


def runner_env(base_env: dict[str, str], prefix: str) -> dict[str, str]:
    """Every service's environment, with the runner's simulator and groups."""
    env = dict(base_env)
    env.update({
        "SIMJOBS_SIM_SHIELDHIT_EXE": str(NULL_SIMULATOR),
        "SIMJOBS_RUNNER_COORDINATOR_GROUP": f"{prefix}-coordinator",
        "SIMJOBS_RUNNER_WORKER_GROUP": f"{prefix}-workers",
        "SIMJOBS_RUNNER_GRACE_SECONDS": "2",
    })
    return env


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix="simjobs-runnerbench-"))
    bench = Bench(state_dir)
    prefix = f"rb{uuid.uuid4().hex[:10]}"
    try:
        bootstrap = await asyncio.to_thread(broker, bench)
        (port,) = pick_free_ports(1)
        env = runner_env(service_env(bootstrap, state_dir, port, prefix), prefix)
        bench.services = Stack(StackConfig(state_dir, env, api_workers=1, runners=1,
                                           bootstrap=bootstrap), report=log)
        await asyncio.to_thread(bench.services.up)
        base = f"http://127.0.0.1:{port}"
        kafka = KafkaSettings(bootstrap, prefix, 6, 12, "runner-bench")
        slots = os.cpu_count() or 1
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            client = Client(base, s)
            await client.login()
            await client.wait_terminal(await client.submit(1))  # warm-up: groups joined
            reps = {1: args.reps, 8: args.reps, 64: args.reps_64}
            runs = await overhead_phase(client, reps)
            cancels = await cancel_phase(client, state_dir, args.cancel_reps, slots)
        events = await job_events(kafka)
    finally:
        bench.stop_all()
    if args.timeline:
        job_id = runs[8][-1][0]
        evs = events.get(job_id, [])
        t0 = first_time(evs, "JobSubmitted") or 0.0
        for e in evs:
            log(f"{(e.occurred_at.timestamp() - t0) * 1000:8.1f} ms {e.type:<14} "
                f"{e.payload.get('task_index', '')} {e.producer}")
    overhead: dict[str, Any] = {}
    dispatch: list[float] = []
    for ntasks, jobs in runs.items():
        client_s = [seconds for _, seconds in jobs]
        server_s = []
        for job_id, _ in jobs:
            evs = events.get(job_id, [])
            submitted = first_time(evs, "JobSubmitted")
            completed = first_time(evs, "JobCompleted")
            started = first_time(evs, "TaskStarted")
            if submitted is not None and completed is not None:
                server_s.append(completed - submitted)
            if submitted is not None and started is not None:
                dispatch.append(started - submitted)
        overhead[str(ntasks)] = {"client": percentiles(client_s),
                                 "log": percentiles(server_s)}
    return {
        "bench": "runner", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_avg_1m": os.getloadavg()[0]},
        "runner_slots": slots,
        "overhead_s": overhead,
        "dispatch_s": percentiles(dispatch),
        "cancel_s": percentiles(cancels),
        "targets": {"overhead_ntasks_8_s": TARGET_OVERHEAD_S},
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{'measure':<34}{'n':>4}{'p50 ms':>9}{'p99 ms':>9}{'min ms':>9}{'max ms':>9}")
    print("-" * 74)
    for ntasks, row in result["overhead_s"].items():
        for source, stats in row.items():
            name = f"overhead ntasks={ntasks} ({source})"
            print(f"{name:<34}{stats['n']:>4}{ms(stats['p50']):>9}{ms(stats['p99']):>9}"
                  f"{ms(stats['min']):>9}{ms(stats['max']):>9}")
    for key, name in (("dispatch_s", "dispatch (submit->1st start)"),
                      ("cancel_s", "cancel (DELETE->processes gone)")):
        stats = result[key]
        print(f"{name:<34}{stats['n']:>4}{ms(stats['p50']):>9}{ms(stats['p99']):>9}"
              f"{ms(stats['min']):>9}{ms(stats['max']):>9}")
    eight = result["overhead_s"]["8"]["client"]["p50"]
    verdict = "MET" if eight is not None and eight < TARGET_OVERHEAD_S else "NOT MET"
    print(f"target: overhead at ntasks 8 under {TARGET_OVERHEAD_S:.0f} s -> {verdict} "
          f"(p50 {ms(eight)} ms); runner slots {result['runner_slots']}, "
          f"load average {result['host']['load_avg_1m']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runner_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=8, help="jobs at ntasks 1 and 8")
    parser.add_argument("--reps-64", type=int, default=4, help="jobs at ntasks 64")
    parser.add_argument("--cancel-reps", type=int, default=8)
    parser.add_argument("--timeline", action="store_true",
                        help="print the events of the last ntasks=8 job with their times")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print_table(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
