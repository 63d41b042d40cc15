"""Batch-platform benchmark against the real SLURM and sshd of ``devstack/slurm.py``.

``python -m bench.slurm_bench [--submits 20] [--poll-interval 2] [--levels 1,10,100]``

What it measures (API, projector and bridge run in this process, as the tests run them;
the Kafka broker is the test broker; SLURM and sshd are the project's single node):

1. **submit -> SLURM job id**: wall time of ``POST /jobs/batch`` (which answers once the
   bridge has uploaded the job over SFTP, run sbatch twice and its BatchSubmitted is in the
   read model), one job at a time;
2. **SLURM state change -> API**: for the same jobs, this benchmark watches squeue itself
   (one query for all jobs every ~0.1 s over its own SSH connection) and GET /jobs/batch
   (every 0.1 s per job), and reports, per transition (task PENDING -> RUNNING, RUNNING ->
   COMPLETED), the time from squeue first showing it to the API first showing it. The
   resolution is the watcher's period (printed); the bridge polls every ``--poll-interval``;
3. **SSH round trips per poll interval** with 1, 10 and 100 active jobs on the cluster
   (each job one task that never ends, so all stay active; the node runs 4 at a time, the
   rest pend): round trips the bridge makes per poll (status queries and SFTP operations)
   in steady state, and the status query's wall time. Target: constant in the number of jobs.

Prints a table and writes ``bench/results/slurm.json``. Every job it starts is cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from devstack import kafka_broker, slurm
from services.contract.envelope import Event
from services.settings import KafkaSettings
from services.slurm_bridge.ssh import AsyncSSHBackend
from tests.api.conftest import REALM, Realm, call
from tests.conftest import TEST_KAFKA_HOME, fresh_topics
from tests.runner.conftest import beam
from tests.slurm.conftest import (
    ApiBatchStack,
    ClusterSite,
    _install,
    api_batch_stack,
    bridge_settings,
)

RESULTS = Path(__file__).resolve().parent / "results" / "slurm.json"
WATCH_PERIOD = 0.1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50) * 1000, 1),
            "p99_ms": round(pct(values, 99) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else float("nan")}


async def until(predicate: Callable[[], bool], within: float, period: float = 0.1) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {within:g} s")
        await asyncio.sleep(period)


async def start_realm() -> tuple[Realm, TestServer]:
    """A Keycloak stand-in (JWKS endpoint) so that the benchmark user may submit batch jobs."""
    app = web.Application()
    holder: dict[str, Realm] = {}

    async def certs(request: web.Request) -> web.Response:
        return web.json_response(holder["realm"].jwks())

    app.router.add_get(f"/auth/realms/{REALM}/protocol/openid-connect/certs", certs)
    server = TestServer(app)
    await server.start_server()
    holder["realm"] = Realm(server)
    holder["realm"].add_key("k1")
    return holder["realm"], server


async def squeue_states(backend: AsyncSSHBackend, ids: list[str]) -> dict[str, str]:
    """Array job id -> state of its (single) task, as squeue shows it right now."""
    done = await backend.run(f"squeue --noheader --states=all --jobs={','.join(ids)} "
                             "--Format='ArrayJobID:|,State:|'", time_limit=30)
    states: dict[str, str] = {}
    for line in done.stdout_text.splitlines():
        fields = line.split("|")
        if len(fields) >= 2:
            states[fields[0].strip()] = fields[1].strip()
    return states


async def submit_and_watch(stack: ApiBatchStack, site: ClusterSite, realm: Realm,
                           submits: int) -> dict[str, Any]:
    session = await stack.api.keycloak_user(realm)
    submit_times: list[float] = []
    jobs: list[str] = []
    for _ in range(submits):
        started = time.perf_counter()
        status, body = await call(session, "POST", "/jobs/batch", json={
            "sim_type": "shieldhit", "ntasks": 1, "input_type": "files",
            "input_files": beam(1000), "batch_options": {"cluster_name": "local"}})
        submit_times.append(time.perf_counter() - started)
        assert status == 202 and body["message"] == "Batch job submitted", body
        jobs.append(body["job_id"])
    views = await stack.views(*jobs)
    array_of = {job: views[job].array_job_id for job in jobs}
    assert all(array_of.values())

    slurm_seen: dict[tuple[str, str], float] = {}
    api_seen: dict[tuple[str, str], float] = {}
    watcher = AsyncSSHBackend(site.config())
    periods: list[float] = []

    async def watch_slurm() -> None:
        ids = [a for a in array_of.values() if a]
        last = time.monotonic()
        while len(api_seen) < 2 * len(jobs):
            states = await squeue_states(watcher, ids)
            now = time.monotonic()
            periods.append(now - last)
            last = now
            for job, array in array_of.items():
                state = states.get(array or "")
                if state in ("RUNNING", "COMPLETED"):
                    slurm_seen.setdefault((job, "RUNNING"), now)
                if state == "COMPLETED":
                    slurm_seen.setdefault((job, "COMPLETED"), now)
            await asyncio.sleep(WATCH_PERIOD)

    async def watch_api(job: str) -> None:
        while (job, "COMPLETED") not in api_seen:
            _, body = await call(session, "GET", f"/jobs/batch?job_id={job}")
            now = time.monotonic()
            task = body["job_tasks_status"][0]["task_state"]
            if task in ("RUNNING", "COMPLETED"):
                api_seen.setdefault((job, "RUNNING"), now)
            if task == "COMPLETED":
                api_seen.setdefault((job, "COMPLETED"), now)
            await asyncio.sleep(WATCH_PERIOD)

    try:
        async with asyncio.timeout(300):
            await asyncio.gather(watch_slurm(), *(watch_api(job) for job in jobs))
    finally:
        await watcher.close()
    lags: dict[str, list[float]] = {"RUNNING": [], "COMPLETED": []}
    for (job, state), seen in api_seen.items():
        if (job, state) in slurm_seen:
            lags[state].append(seen - slurm_seen[(job, state)])
    return {
        "submit_to_slurm_id": summary(submit_times),
        "slurm_to_api_started": summary(lags["RUNNING"]),
        "slurm_to_api_completed": summary(lags["COMPLETED"]),
        "watch_period_ms": round(statistics.fmean(periods[1:] or periods) * 1000, 1),
    }


async def round_trips(kafka: KafkaSettings, tmp: Path, site: ClusterSite, realm: Realm,
                      jobs: int, poll_interval: float) -> dict[str, Any]:
    config = site.config(poll_interval=poll_interval, array_options={"time": "00:05:00"},
                         setup=("export FAKE_SIM_STEP_SECONDS=0.2",))
    settings = bridge_settings(tmp, kafka, config)
    async with api_batch_stack(kafka, tmp, realm, settings) as stack:
        ids = []
        for _ in range(jobs):
            ids.append(await stack.publish_batch(beam(100, extra="HANG\n"), ntasks=1,
                                                 primaries=100))
        async with asyncio.timeout(300):
            while True:
                views = await stack.views(*ids)
                if len(views) == jobs and all(v.array_job_id for v in views.values()):
                    break
                await asyncio.sleep(0.2)
        poller = stack.bridge.clusters["local"].poller
        backend = stack.backends["local"]
        await until(lambda: len(poller.jobs) == jobs, 60)
        await asyncio.sleep(2 * poll_interval)  # the first polls after the last submission
        # Counted from just after one poll ended to just after the fifth next one ended: a
        # poll's round trips are counted when it starts, the poll when it ends.
        first = poller.polls + 1
        await until(lambda: poller.polls >= first, 10 * poll_interval, 0.005)
        polls0, trips0, t0 = poller.polls, Counter(backend.round_trips), time.monotonic()
        seconds: list[float] = []
        for target in range(polls0 + 1, polls0 + 6):
            await until(lambda: poller.polls >= target, 10 * poll_interval, 0.005)  # noqa: B023
            seconds.append(poller.last_poll_seconds)
        polls, elapsed = poller.polls - polls0, time.monotonic() - t0
        trips = Counter(backend.round_trips) - trips0
        for job in ids:
            await stack.producer.publish(Event(type="CancelRequested", job_id=job,
                                               producer="bench",
                                               payload={"requested_by": "kc:bench"}))
        await until(lambda: not poller.jobs, 120)
        return {"jobs": jobs, "polls": polls, "seconds": round(elapsed, 2),
                "exec_round_trips_per_poll": trips["exec"] / polls,
                "sftp_round_trips_per_poll": trips["sftp"] / polls,
                "round_trips_per_poll_interval": sum(trips.values()) / polls,
                "status_query_ms_p50": round(pct(seconds, 50) * 1000, 1)}


async def main(args: argparse.Namespace, handle: slurm.SlurmHandle,
               broker: kafka_broker.BrokerHandle) -> dict[str, Any]:
    site = ClusterSite(handle, f"{handle.user_home}/simjobs-bench/{uuid.uuid4().hex[:8]}")
    await _install(handle, site.root)
    realm, realm_server = await start_realm()
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "load_avg": os.getloadavg()}
    report: dict[str, Any] = {"machine": machine, "poll_interval_s": args.poll_interval}
    try:
        with tempfile.TemporaryDirectory(prefix="slurm-bench-") as tmp:
            kafka = await fresh_topics(broker.bootstrap)
            config = site.config(poll_interval=args.poll_interval,
                                 setup=("export FAKE_SIM_STEP_SECONDS=0.3",))
            settings = bridge_settings(Path(tmp), kafka, config)
            async with api_batch_stack(kafka, Path(tmp) / "a", realm, settings) as stack:
                report["latency"] = await submit_and_watch(stack, site, realm, args.submits)
            report["round_trips"] = []
            for level in args.levels:
                kafka = await fresh_topics(broker.bootstrap)
                report["round_trips"].append(await round_trips(
                    kafka, Path(tmp) / f"rt{level}", site, realm, level, args.poll_interval))
    finally:
        await realm_server.close()
    report["machine"]["load_avg_after"] = os.getloadavg()
    return report


def show(report: dict[str, Any]) -> None:
    lat = report["latency"]
    print(f"poll interval {report['poll_interval_s']:g} s; squeue watcher period "
          f"{lat['watch_period_ms']} ms; load avg {report['machine']['load_avg']}")
    print(f"{'measure':40} {'n':>4} {'p50 ms':>9} {'p99 ms':>9}")
    for key, label in (("submit_to_slurm_id", "POST /jobs/batch -> SLURM job id"),
                       ("slurm_to_api_started", "SLURM RUNNING -> API RUNNING"),
                       ("slurm_to_api_completed", "SLURM COMPLETED -> API COMPLETED")):
        row = lat[key]
        print(f"{label:40} {row['n']:>4} {row['p50_ms']:>9} {row['p99_ms']:>9}")
    base = report["round_trips"][0]["round_trips_per_poll_interval"]
    print(f"\n{'active jobs':>11} {'exec/poll':>10} {'sftp/poll':>10} {'total/poll':>11} "
          f"{'vs 1 job':>9} {'status query p50 ms':>20}")
    for row in report["round_trips"]:
        total = row["round_trips_per_poll_interval"]
        print(f"{row['jobs']:>11} {row['exec_round_trips_per_poll']:>10.2f} "
              f"{row['sftp_round_trips_per_poll']:>10.2f} {total:>11.2f} "
              f"{total / base:>8.2f}x {row['status_query_ms_p50']:>20}")


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slurm_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submits", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--levels", default="1,10,100")
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    handle = slurm.start()  # both start synchronously, before the event loop
    broker = kafka_broker.start(TEST_KAFKA_HOME, jars_home=kafka_broker.default_home())
    report = asyncio.run(main(args, handle, broker))
    show(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
