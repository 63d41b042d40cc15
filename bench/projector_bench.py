"""Projector benchmark: replay rate, event-to-read-model lag, broker start time and RSS.

``python -m bench.projector_bench [--events 100000] [--postgres] [--rate 500] [--seconds 20]``

Methods (also printed with the results):

* replay: ``--events`` synthetic events are published to a fresh topic prefix first; the
  clock runs from ``Projector.run()`` being started (group join included) until the
  offsets stored in the database equal the end offsets. Also shown: the rate from the
  first committed batch on (without the join).
* lag: the projector runs as its own process (``python -m services.projector``); a
  paced producer publishes at ``--rate`` events/s for ``--seconds`` s and notes
  each event's (partition, offset) and the wall time just before ``send``. A watcher
  polls ``projector_offsets`` every 2 ms; those offsets are written in the same
  transaction as the rows, so the first time a stored offset >= o is seen, the rows of
  every event up to o are visible to readers. lag = that time - publish time (includes
  the producer's ack, the fetch, the transaction; resolution ~2 ms + one query).
* broker: start time of a broker in its own home (a cold JVM if none was running) and
  its VmRSS from /proc/PID/status, after start and after the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import kafka_broker, postgres
from services.contract.envelope import Event, utc_now
from services.contract.kafka_io import EventProducer
from services.contract.log_reader import end_offsets as log_end_offsets
from services.contract.topics import ensure_topics
from services.projector import readmodel as rm
from services.projector.projector import PROJECTION, Projector
from services.settings import KafkaSettings
from tests.support.histories import synthetic_log

BENCH_KAFKA_HOME = Path.home() / ".cache" / "simjobs" / "kafka-bench"
RESULTS = Path(__file__).resolve().parent / "results" / "projector.json"


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def make_log(n: int, seed: int = 1) -> list[Event]:
    jobs = max(1, n // 14)
    log = synthetic_log(seed, jobs)
    while len(log) < n:
        jobs = int(jobs * 1.2) + 1
        log = synthetic_log(seed, jobs)
    return log[:n]


def kafka_for(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap, f"bench{uuid.uuid4().hex[:10]}", 6, 2, "bench")


async def end_offsets(kafka: KafkaSettings) -> dict[int, int]:
    return await log_end_offsets(kafka, kafka.jobs_topic)


async def stored(engine: AsyncEngine, kafka: KafkaSettings) -> dict[int, int]:
    async with engine.connect() as conn:
        return await rm.load_offsets(conn, PROJECTION, kafka.jobs_topic)


async def replay(kafka: KafkaSettings, url: str, events: list[Event]) -> dict[str, Any]:
    await ensure_topics(kafka)
    async with EventProducer(kafka) as producer:
        for start in range(0, len(events), 2000):
            await producer.publish_many(events[start:start + 2000])
    ends = await end_offsets(kafka)
    wanted = {p: e - 1 for p, e in ends.items() if e > 0}
    engine = rm.make_engine(url)
    await rm.create_schema(engine)
    projector = Projector(kafka, engine, group_id=f"{kafka.topic_prefix}-p")
    t0 = time.perf_counter()
    task = asyncio.create_task(projector.run())
    first: float | None = None
    first_done = 0
    try:
        while True:
            now = await stored(engine, kafka)
            if now and first is None:
                first, first_done = time.perf_counter(), sum(o + 1 for o in now.values())
            if all(now.get(p, -1) >= o for p, o in wanted.items()):
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        t1 = time.perf_counter()
    finally:
        await projector.shutdown()
        await task
        await engine.dispose()
    total = sum(ends.values())
    after_first = (total - first_done) / (t1 - first) if first and t1 > first else None
    return {"events": total, "seconds": round(t1 - t0, 3),
            "events_per_s": round(total / (t1 - t0)),
            "events_per_s_after_first_batch": round(after_first) if after_first else None,
            "applied": projector.applied_total}


async def lag(kafka: KafkaSettings, url: str, rate: int, seconds: float) -> dict[str, Any]:
    await ensure_topics(kafka)
    engine = rm.make_engine(url)
    await rm.create_schema(engine)
    events = make_log(int(rate * seconds), seed=2)
    # The projector runs in its own process, as in production: a watcher polling the
    # database in the same event loop (and GIL) would slow the very thing it measures.
    env = {**os.environ, "SIMJOBS_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
           "SIMJOBS_TOPIC_PREFIX": kafka.topic_prefix, "SIMJOBS_DATABASE_URL": url,
           "SIMJOBS_JOBS_PARTITIONS": str(kafka.jobs_partitions),
           "SIMJOBS_TASKS_PARTITIONS": str(kafka.tasks_partitions),
           "SIMJOBS_PROJECTOR_GROUP": f"{kafka.topic_prefix}-p"}
    projector = subprocess.Popen([sys.executable, "-m", "services.projector"], env=env,  # noqa: ASYNC220
                                 stderr=subprocess.DEVNULL)
    sent: dict[tuple[int, int], float] = {}
    seen: dict[tuple[int, int], float] = {}
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    async with EventProducer(kafka) as producer:
        # Let the projector join its group before the clock starts.
        await producer.publish(events[0])
        while not await stored(engine, kafka):  # noqa: ASYNC110 - polling the DB is the method
            await asyncio.sleep(0.02)
        pending: set[asyncio.Task[None]] = set()

        async def send(batch: list[Event]) -> None:
            at = time.time()
            for pub in await producer.publish_many(batch):
                sent[(pub.partition, pub.offset)] = at

        async def watch() -> None:
            last: dict[int, int] = {}
            while True:
                now = await stored(engine, kafka)
                t = time.time()
                for p, o in now.items():
                    for off in range(last.get(p, -1) + 1, o + 1):
                        seen[(p, off)] = t
                last = now
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        start = time.perf_counter()
        body = events[1:]
        for k in range(0, len(body), per_tick):
            due = start + (k // per_tick) * tick
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            batch = [replace(e, occurred_at=utc_now()) for e in body[k:k + per_tick]]
            t = asyncio.create_task(send(batch))
            pending.add(t)
            t.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        produced_for = time.perf_counter() - start
        deadline = time.monotonic() + 60
        while not set(sent) <= set(seen) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        watcher.cancel()
    projector.terminate()
    projector.wait(30)
    await engine.dispose()
    lags = sorted((seen[k] - sent[k]) * 1000 for k in sent if k in seen)
    q = statistics.quantiles(lags, n=100)
    return {"rate_target": rate, "rate_achieved": round(len(sent) / produced_for),
            "events": len(sent), "missing": len(set(sent) - set(seen)),
            "lag_ms_p50": round(q[49], 1), "lag_ms_p99": round(q[98], 1),
            "lag_ms_max": round(lags[-1], 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.projector_bench")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--postgres", action="store_true", help="also run on PostgreSQL")
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)

    was_running = kafka_broker.status(BENCH_KAFKA_HOME) is not None
    t = time.perf_counter()
    broker = kafka_broker.start(BENCH_KAFKA_HOME, jars_home=kafka_broker.default_home())
    broker_start = time.perf_counter() - t
    results: dict[str, Any] = {"broker": {
        "start_s": round(broker_start, 2), "cold_start": not was_running,
        "pid": broker.pid, "rss_mib_after_start": rss_mib(broker.pid)}}
    backends: dict[str, Callable[[str], str]] = {}
    tmp = tempfile.TemporaryDirectory(prefix="simjobs-bench-")
    backends["sqlite"] = lambda name: f"sqlite+aiosqlite:///{Path(tmp.name) / name}.sqlite3"
    if args.postgres:
        pg = postgres.start()
        backends["postgres"] = lambda name: postgres.create_database(
            pg, f"bench_{name}_{uuid.uuid4().hex[:8]}")
    log = make_log(args.events)
    try:
        for name, url_for in backends.items():
            results[f"replay_{name}"] = asyncio.run(
                replay(kafka_for(broker.bootstrap), url_for("replay"), log))
            print(f"replay {name}: {results[f'replay_{name}']}", file=sys.stderr)
        for name, url_for in backends.items():
            results[f"lag_{name}"] = asyncio.run(
                lag(kafka_for(broker.bootstrap), url_for("lag"), args.rate, args.seconds))
            print(f"lag {name}: {results[f'lag_{name}']}", file=sys.stderr)
        results["broker"]["rss_mib_after_runs"] = rss_mib(broker.pid)
    finally:
        tmp.cleanup()
        if not was_running and not broker.external:
            kafka_broker.stop(BENCH_KAFKA_HOME)
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")
    return 0


def print_table(results: dict[str, Any]) -> None:
    print(__doc__.split("Methods", 1)[1].split("\n", 1)[1] if __doc__ else "")
    print(f"{'measure':<44}{'value':>16}")
    print("-" * 60)
    b = results["broker"]
    rows: list[tuple[str, Any]] = [
        ("broker start s" + (" (cold)" if b["cold_start"] else " (reused)"), b["start_s"]),
        ("broker VmRSS MiB after start", b["rss_mib_after_start"]),
        ("broker VmRSS MiB after runs", b.get("rss_mib_after_runs")),
    ]
    for key, r in results.items():
        if key.startswith("replay_"):
            be = key.removeprefix("replay_")
            rows += [(f"replay {be}: events", r["events"]), (f"replay {be}: seconds", r["seconds"]),
                     (f"replay {be}: events/s (incl. join)", r["events_per_s"]),
                     (f"replay {be}: events/s (after 1st batch)",
                      r["events_per_s_after_first_batch"])]
        if key.startswith("lag_"):
            be = key.removeprefix("lag_")
            rows += [(f"lag {be}: rate achieved ev/s", r["rate_achieved"]),
                     (f"lag {be}: p50 ms", r["lag_ms_p50"]), (f"lag {be}: p99 ms", r["lag_ms_p99"]),
                     (f"lag {be}: max ms", r["lag_ms_max"]),
                     (f"lag {be}: events not seen", r["missing"])]
    for label, value in rows:
        text = f"{value:,.1f}" if isinstance(value, float) else f"{value}"
        print(f"{label:<44}{text:>16}")


if __name__ == "__main__":
    sys.exit(main())
