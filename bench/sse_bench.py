"""SSE benchmark: event-to-browser latency through ``GET /jobs/stream`` with 1,000 open streams.

``python -m bench.sse_bench [--duration 30] [--streams 1000]``

What it does:

1. a Kafka broker as :mod:`bench.api_bench` finds or starts one (fresh topic prefix);
2. ``python -m services.api`` and ``python -m services.projector`` as subprocesses
   (SQLite read model in a fresh state dir under /tmp; stream limits raised so one
   user may hold every stream);
3. per phase: submits the jobs through ``POST /jobs/direct``, starts
   :mod:`bench.sse_clients` in its own process with the streams, and once every
   stream has its snapshot publishes TaskProgress events (from this process, as a
   runner would: same producer helper, same topic) at a steady rate for ``--duration``
   seconds, round-robin over the jobs; then cancels every job, which ends the streams.
   Phases: ``baseline`` (1 stream, 1 job, 20 events/s), ``few-jobs`` (``--streams``
   streams on 10 jobs: one event fans out to 100 streams; 10 events/s, 1,000 messages/s),
   ``few-fast`` (the same at 50 events/s, 5,000 messages/s), ``many-jobs`` (``--streams``
   streams on as many jobs: one event, one stream; 200 events/s);
4. prints latency p50/p90/p99/max (client clock at parse minus the event's
   ``occurred_at``), messages delivered against published x followers, CPU of the API
   and the clients, and the machine's load (``uptime``) before and after each phase;
   writes ``bench/results/sse.json``; stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from bench.api_bench import Bench, broker, service_env, tail
from bench.loadgen import cpu_seconds
from devstack import pick_free_ports
from devstack.stack import Stack, StackConfig
from services.contract.envelope import Event
from services.contract.kafka_io import EventProducer
from services.settings import KafkaSettings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "sse.json"
USERNAME, PASSWORD = "ssebench", "ssebench-password-1"
PRIMARIES = 1_000_000
BODY: dict[str, Any] = {"sim_type": "shieldhit", "ntasks": 1, "input_type": "files",
                        "title": "sse bench", "input_files": {
                            "beam.dat": f"NSTAT {PRIMARIES}\n", "geo.dat": "", "mat.dat": "",
                            "detect.dat": ""}}


@dataclass(frozen=True)
class Phase:
    name: str
    streams: int
    jobs: int
    #: TaskProgress events published per second, over all jobs.
    rate: float


def log(message: str) -> None:
    print(f"sse_bench: {message}", file=sys.stderr, flush=True)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def login(session: aiohttp.ClientSession, base: str) -> str:
    creds = {"username": USERNAME, "password": PASSWORD}
    async with session.put(f"{base}/auth/register", json=creds) as r:
        if r.status not in (201, 403):
            raise RuntimeError(f"register: {r.status} {await r.text()}")
    async with session.post(f"{base}/auth/login", json=creds) as r:
        if r.status != 202:
            raise RuntimeError(f"login: {r.status} {await r.text()}")
        return "; ".join(f"{k}={m.value}" for k, m in r.cookies.items())


async def submit_jobs(session: aiohttp.ClientSession, base: str, count: int) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one() -> str:
        async with gate, session.post(f"{base}/jobs/direct", json=BODY) as r:
            if r.status != 202:
                raise RuntimeError(f"submit: {r.status} {await r.text()}")
            return str((await r.json())["job_id"])

    jobs = list(await asyncio.gather(*(one() for _ in range(count))))
    for job_id in jobs:  # until the read model has them (a stream needs that)
        while True:
            async with session.get(f"{base}/jobs/direct?job_id={job_id}") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
    return jobs


async def publish(producer: EventProducer, jobs: list[str], rate: float,
                  duration: float) -> int:
    """TaskProgress at ``rate`` per second for ``duration`` seconds; how many were sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    progress = dict.fromkeys(jobs, 0)
    while (now := loop.time()) < start + duration:
        due = int((now - start) * rate) + 1 - sent
        batch = []
        for _ in range(max(due, 0)):
            job_id = jobs[sent % len(jobs)]
            progress[job_id] = min(progress[job_id] + 1, PRIMARIES)
            batch.append(Event(type="TaskProgress", job_id=job_id, producer="sse-bench",
                               payload={"task_index": 0, "requested_primaries": PRIMARIES,
                                        "simulated_primaries": progress[job_id],
                                        "estimated_time": 60}))
            sent += 1
        if batch:
            await producer.publish_many(batch)
        await asyncio.sleep(0.005)
    return sent


async def run_phase(phase: Phase, base: str, kafka: KafkaSettings, bench: Bench,
                    env: dict[str, str], session: aiohttp.ClientSession, cookie: str,
                    duration: float) -> dict[str, Any]:
    log(f"phase {phase.name}: {phase.streams} streams on {phase.jobs} jobs, "
        f"{phase.rate:.0f} events/s for {duration:.0f} s")
    jobs = await submit_jobs(session, base, phase.jobs)
    streams = [jobs[i % len(jobs)] for i in range(phase.streams)]
    config = {"base_url": base, "cookie": cookie, "streams": streams,
              "deadline_s": duration + 240}
    errors = await asyncio.to_thread((bench.state_dir / f"clients-{phase.name}.log").open, "wb")
    with errors:
        clients = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sse_clients", cwd=ROOT, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=errors)
    assert clients.stdin is not None and clients.stdout is not None
    clients.stdin.write((json.dumps(config) + "\n").encode())
    await clients.stdin.drain()
    connect_start = time.monotonic()
    line = await asyncio.wait_for(clients.stdout.readline(), 180)
    if not line or "ready" not in json.loads(line):
        raise RuntimeError(f"clients not ready: {line!r}\n"
                           f"{tail(bench.state_dir / f'clients-{phase.name}.log')}")
    connect_s = time.monotonic() - connect_start
    assert bench.services is not None
    api_pid = bench.services.pids("api")["api-1"]
    load_before, cpu_api, cpu_clients = uptime(), cpu_seconds(api_pid), cpu_seconds(clients.pid)
    t0 = time.monotonic()
    async with EventProducer(kafka) as producer:
        sent = await publish(producer, jobs, phase.rate, duration)
        wall = time.monotonic() - t0
        cpu_api_after, cpu_clients_after = cpu_seconds(api_pid), cpu_seconds(clients.pid)
        load_after = uptime()
        await producer.publish_many([
            Event(type="CancelRequested", job_id=j, producer="sse-bench",
                  payload={"requested_by": "u:" + USERNAME}) for j in jobs])
    out, _ = await asyncio.wait_for(clients.communicate(), duration + 240)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    expected = sum(sent // len(jobs) + (1 if i < sent % len(jobs) else 0)
                   for i in (jobs.index(j) for j in streams))
    result.update({
        "phase": phase.name, "jobs": phase.jobs, "rate_per_s": phase.rate,
        "published": sent, "expected_progress_messages": expected,
        "delivered_per_s": result["samples"] / wall, "connect_all_s": connect_s,
        "api_cpu_pct": _pct(cpu_api, cpu_api_after, wall),
        "clients_cpu_pct": _pct(cpu_clients, cpu_clients_after, wall),
        "uptime_before": load_before, "uptime_after": load_after,
    })
    return result


def _pct(before: float | None, after: float | None, wall: float) -> float | None:
    if before is None or after is None:
        return None
    return 100 * (after - before) / wall


def fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[dict[str, Any]]) -> None:
    head = (f"{'phase':<10}{'streams':>8}{'jobs':>6}{'ev/s':>6}{'msgs':>8}{'expect':>8}"
            f"{'msg/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}"
            f"{'api %':>7}{'cli %':>7}{'err':>5}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['phase']:<10}{r['streams']:>8}{r['jobs']:>6}{r['rate_per_s']:>6.0f}"
              f"{r['samples']:>8}{r['expected_progress_messages']:>8}"
              f"{r['delivered_per_s']:>8.0f}{fmt(r['p50_ms']):>8}{fmt(r['p90_ms']):>8}"
              f"{fmt(r['p99_ms']):>8}{fmt(r['max_ms']):>8}{fmt(r['api_cpu_pct'], '.0f'):>7}"
              f"{fmt(r['clients_cpu_pct'], '.0f'):>7}{r['errors']:>5}")
    base = next((r for r in results if r["phase"] == "baseline"), None)
    for r in results:
        if base and r is not base and base["p50_ms"] and base["p99_ms"]:
            print(f"{r['phase']}: p50 x{r['p50_ms'] / base['p50_ms']:.1f}, "
                  f"p99 x{r['p99_ms'] / base['p99_ms']:.1f} against the 1-stream baseline")
    for r in results:
        print(f"{r['phase']}: load before {r['uptime_before'].split('load average:')[-1]}, "
              f"after {r['uptime_after'].split('load average:')[-1]}; all streams connected "
              f"in {r['connect_all_s']:.1f} s")
        for sample in r["error_samples"]:
            print(f"  error sample: {sample}")
    print(f"host: {os.cpu_count()} CPUs shared by broker, projector, API, clients and "
          "publisher (and other sessions)")


async def run_all(base: str, kafka: KafkaSettings, bench: Bench, env: dict[str, str],
                  phases: list[Phase], duration: float) -> list[dict[str, Any]]:
    results = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        cookie = await login(session, base)
        for phase in phases:
            results.append(await run_phase(phase, base, kafka, bench, env, session, cookie,
                                           duration))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sse_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--keep-state", action="store_true")
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    state_dir = Path(tempfile.mkdtemp(prefix="simjobs-ssebench-", dir="/tmp"))
    bench = Bench(state_dir)
    prefix = f"ssebench{uuid.uuid4().hex[:10]}"
    phases = [Phase("baseline", 1, 1, 20.0), Phase("few-jobs", args.streams, 10, 10.0),
              Phase("few-fast", args.streams, 10, 50.0),
              Phase("many-jobs", args.streams, args.streams, 200.0)]
    try:
        bootstrap = broker(bench)
        port = pick_free_ports(1)[0]
        env = service_env(bootstrap, state_dir, port, prefix)
        env.update({"SIMJOBS_STREAM_MAX": str(4 * args.streams),
                    "SIMJOBS_STREAM_MAX_PER_USER": str(4 * args.streams)})
        kafka = KafkaSettings(bootstrap, prefix, 6, 12, "sse-bench")
        base = f"http://127.0.0.1:{port}"
        bench.services = Stack(StackConfig(state_dir, env, api_workers=1, runners=0,
                                           bootstrap=bootstrap), report=log)
        bench.services.up()
        log(f"state {state_dir}, topics {prefix}.*, API {base}")
        results = asyncio.run(run_all(base, kafka, bench, env, phases, args.duration))
        print_table(results)
        report = {
            "bench": "sse", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                     "platform": platform.platform()},
            "broker": {"bootstrap": bootstrap, "own": bench.broker_home is not None},
            "method": "latency = client wall clock when a TaskProgress update is parsed minus "
                      "the event's occurred_at (set just before publishing); clients in their "
                      "own process; API, projector, broker, publisher on the same machine",
            "duration_s": args.duration, "phases": results,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.stop_all()
        if args.keep_state:
            log(f"state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
