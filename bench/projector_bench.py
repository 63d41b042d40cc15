"""Projector benchmark: replay rate, event-to-read-model lag, broker start time and RSS.

``python -m bench.projector_bench [--events 100000] [--postgres] [--rate 500] [--seconds 20]
[--repeat 1] [--only replay|lag]``

Methods (also printed with the results):

* load: the 1-minute load average (``uptime``) before and after every run; the machine may
  be shared, so every figure carries it. With ``--repeat N`` each run is made N times and
  the best and the median are shown.
* CPU reference (the in-process baseline): the same events folded in memory by
  ``services.projector.state.fold`` (no Kafka, no database). Its rate moves with the
  machine's load like the projector's does, so ``replay / reference`` compares runs made
  under different loads.
* replay: ``--events`` synthetic events are published to a fresh topic prefix first; then
  the projector starts as its own process (``python -m services.projector``, as in
  production); the clock runs from its log line "projecting ..." (imports and set-up done,
  group join included) until the offsets stored in the database equal the end offsets.
  Also shown: the rate from the first committed batch on (without the join), and the
  projector's CPU time (/proc/PID/stat) per event.
* lag: the projector runs as its own process (``python -m services.projector``); a
  paced producer publishes at ``--rate`` events/s for ``--seconds`` s and notes
  each event's (partition, offset) and the wall time just before ``send``. A watcher,
  in a third process (in the producer's loop its own poll p99 was 30-100 ms), polls
  ``projector_offsets`` every 2 ms on one autocommit connection; those offsets are
  written in the same transaction as the rows, so the first time a stored offset >= o is
  seen, the rows of every event up to o are visible to readers. lag = that time - publish
  time (includes the producer's ack, the fetch, the transaction; resolution: the watcher's
  poll period, shown).
* lag floor (the baseline of the lag): the same paced producer, and in place of the
  projector a bare consumer process with the projector's consumer settings (same group
  protocol, ``read_committed``, same fetch sizes and ``getmany`` call) that only notes when
  each record reaches it: what Kafka and aiokafka cost before the projector does anything.
  Shown with it: the producer's send-to-acknowledgement time (``acks=all``; part of every
  lag) and how long the probe's ``getmany`` calls waited.
* settling: before each lag run the disk is settled (``os.sync()``, and ``CHECKPOINT`` on
  PostgreSQL), so that the writes a replay deferred are not paid inside the lag run after
  it (they stalled the broker's acks: p99 53-100 ms instead of 7-11 ms).
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import kafka_broker, postgres
from services.contract.envelope import Event, utc_now
from services.contract.kafka_io import EventProducer, make_consumer
from services.contract.log_reader import end_offsets as log_end_offsets
from services.contract.topics import ensure_topics
from services.projector import readmodel as rm
from services.projector.projector import PROJECTION
from services.projector.state import fold
from services.settings import KafkaSettings
from tests.support.histories import synthetic_log

BENCH_KAFKA_HOME = Path.home() / ".cache" / "simjobs" / "kafka-bench"
RESULTS = Path(__file__).resolve().parent / "results" / "projector.json"
ROOT = Path(__file__).resolve().parent.parent
TARGET_REPLAY_SQLITE = 20_000
TARGET_LAG_P99_MS = 50.0


def load_average() -> float:
    """The 1-minute load average, as ``uptime`` prints it."""
    return float(Path("/proc/loadavg").read_text().split()[0])


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


def settle(pg_url: str | None) -> float:
    """Write out what earlier runs left for later (dirty pages, PostgreSQL's next checkpoint).

    Without it, a 100,000-event replay's deferred writes landed in the lag run after it:
    the broker's acks stalled behind them (producer ack p99 53-100 ms, against 7-11 ms
    when the lag runs came first). Returns the seconds it took.
    """
    t = time.perf_counter()
    if pg_url is not None:
        async def checkpoint() -> None:
            conn = await asyncpg.connect(postgres.dsn(pg_url))
            try:
                await conn.execute("CHECKPOINT")
            finally:
                await conn.close()
        asyncio.run(checkpoint())
    os.sync()
    return round(time.perf_counter() - t, 2)


def kafka_for(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap, f"bench{uuid.uuid4().hex[:10]}", 6, 2, "bench")


async def end_offsets(kafka: KafkaSettings) -> dict[int, int]:
    return await log_end_offsets(kafka, kafka.jobs_topic)


async def stored(engine: AsyncEngine, kafka: KafkaSettings) -> dict[int, int]:
    async with engine.connect() as conn:
        return await rm.load_offsets(conn, PROJECTION, kafka.jobs_topic)


def reference(events: list[Event]) -> dict[str, Any]:
    """The CPU reference: the events folded in memory (best of three)."""
    best = min(_timed(lambda: fold(events)) for _ in range(3))
    return {"events": len(events), "seconds": round(best, 3),
            "events_per_s": round(len(events) / best), "load": load_average()}


def _timed(work: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def started_projecting(child: subprocess.Popen[bytes]) -> None:
    """Until the projector logs that it starts projecting (its imports and set-up done).

    Raises:
        RuntimeError: it exited first.
    """
    assert child.stderr is not None
    while True:
        line = await asyncio.to_thread(child.stderr.readline)
        if not line:
            raise RuntimeError(f"the projector exited with status {child.wait()}")
        # Text lines read "... projecting <topic> ...", JSON lines '"message": "projecting <topic>'.
        if b" projecting " in line or b'"projecting ' in line:
            return


def drain(child: subprocess.Popen[bytes]) -> None:
    """Keep reading the child's stderr so that it never blocks on a full pipe."""
    assert child.stderr is not None
    for _ in iter(child.stderr.readline, b""):
        pass


async def replay(kafka: KafkaSettings, url: str, events: list[Event]) -> dict[str, Any]:
    await ensure_topics(kafka)
    async with EventProducer(kafka) as producer:
        for start in range(0, len(events), 2000):
            await producer.publish_many(events[start:start + 2000])
    ends = await end_offsets(kafka)
    wanted = {p: e - 1 for p, e in ends.items() if e > 0}
    engine = rm.make_engine(url)
    await rm.create_schema(engine)
    load_before = load_average()
    # Its own process, as in production (and as the lag run): in this one, the garbage
    # collector would also walk the bench's copy of the whole log at every full pass.
    child = subprocess.Popen([sys.executable, "-m", "services.projector"],  # noqa: ASYNC220
                             env=child_env(kafka, url), cwd=ROOT, stderr=subprocess.PIPE)
    first: float | None = None
    first_done = 0
    drainer: asyncio.Task[None] | None = None
    try:
        await started_projecting(child)
        t0 = time.perf_counter()
        cpu0 = cpu_seconds(child.pid)
        drainer = asyncio.create_task(asyncio.to_thread(drain, child))
        while True:
            now = await stored(engine, kafka)
            if now and first is None:
                first, first_done = time.perf_counter(), sum(o + 1 for o in now.values())
            if all(now.get(p, -1) >= o for p, o in wanted.items()):
                break
            if child.poll() is not None:
                raise RuntimeError(f"the projector exited with status {child.returncode}")
            await asyncio.sleep(0.02)
        t1 = time.perf_counter()
        cpu = cpu_seconds(child.pid) - cpu0
        rss = rss_mib(child.pid)
    finally:
        child.terminate()
        await asyncio.to_thread(child.wait, 30)
    if drainer is not None:
        await drainer
    async with engine.connect() as conn:
        applied = (await conn.execute(select(func.count()).select_from(
            rm.applied_events))).scalar_one()
    await engine.dispose()
    total = sum(ends.values())
    after_first = (total - first_done) / (t1 - first) if first and t1 > first else None
    return {"events": total, "seconds": round(t1 - t0, 3),
            "events_per_s": round(total / (t1 - t0)),
            "events_per_s_after_first_batch": round(after_first) if after_first else None,
            "projector_cpu_us_per_event": round(cpu / total * 1e6, 1),
            "projector_rss_mib": rss, "applied": applied,
            "load_before": load_before, "load_after": load_average()}


Seen = dict[tuple[int, int], float]


@dataclass
class Paced:
    """What the paced producer did: per (partition, offset), the wall time just before
    ``send`` and when its acknowledgement came back; how long publishing took."""

    sent: Seen
    acked: Seen
    seconds: float


async def paced(kafka: KafkaSettings, events: list[Event], rate: int,
                ready: Callable[[], Awaitable[bool]]) -> Paced:
    """Publish the events at ``rate`` per second.

    The first event goes out alone, and the clock starts once ``ready`` says the observer
    has seen it (its group joined, its partitions assigned).
    """
    sent: Seen = {}
    acked: Seen = {}
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    async with EventProducer(kafka) as producer:
        await producer.publish(events[0])
        while not await ready():  # noqa: ASYNC110 - polling the observer is the method
            await asyncio.sleep(0.02)
        pending: set[asyncio.Task[None]] = set()

        async def send(batch: list[Event]) -> None:
            at = time.time()
            published = await producer.publish_many(batch)
            back = time.time()
            for pub in published:
                sent[(pub.partition, pub.offset)] = at
                acked[(pub.partition, pub.offset)] = back

        start = time.perf_counter()
        body = events[1:]
        for k in range(0, len(body), per_tick):
            due = start + (k // per_tick) * tick
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            batch = [replace(e, occurred_at=utc_now()) for e in body[k:k + per_tick]]
            task = asyncio.create_task(send(batch))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        return Paced(sent, acked, time.perf_counter() - start)


def lag_figures(run: Paced, seen: Seen, rate: int, load_before: float) -> dict[str, Any]:
    """Lag quantiles; ``ack_ms``: send to the producer's acknowledgement (acks=all), the
    part of every lag that Kafka's write path costs before any consumer can see it."""
    sent = run.sent
    lags = sorted((seen[k] - sent[k]) * 1000 for k in sent if k in seen)
    q = statistics.quantiles(lags, n=100)
    qa = statistics.quantiles(sorted((run.acked[k] - sent[k]) * 1000 for k in sent), n=100)
    return {"rate_target": rate, "rate_achieved": round(len(sent) / run.seconds),
            "events": len(sent), "missing": len(set(sent) - set(seen)),
            "lag_ms_p50": round(q[49], 1), "lag_ms_p99": round(q[98], 1),
            "ack_ms_p50": round(qa[49], 1), "ack_ms_p99": round(qa[98], 1),
            "lag_ms_max": round(lags[-1], 1),
            "load_before": load_before, "load_after": load_average()}


def child_env(kafka: KafkaSettings, url: str) -> dict[str, str]:
    return {**os.environ, "SIMJOBS_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "SIMJOBS_TOPIC_PREFIX": kafka.topic_prefix, "SIMJOBS_DATABASE_URL": url,
            "SIMJOBS_JOBS_PARTITIONS": str(kafka.jobs_partitions),
            "SIMJOBS_TASKS_PARTITIONS": str(kafka.tasks_partitions),
            "SIMJOBS_PROJECTOR_GROUP": f"{kafka.topic_prefix}-p"}


async def lag(kafka: KafkaSettings, url: str, rate: int, seconds: float) -> dict[str, Any]:
    await ensure_topics(kafka)
    engine = rm.make_engine(url)
    await rm.create_schema(engine)
    await engine.dispose()
    events = make_log(int(rate * seconds), seed=2)
    load_before = load_average()
    # The projector runs in its own process, as in production: a watcher polling the
    # database in the same event loop (and GIL) would slow the very thing it measures.
    projector = subprocess.Popen([sys.executable, "-m", "services.projector"],  # noqa: ASYNC220
                                 env=child_env(kafka, url), cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        run, seen, polls = await observed(kafka, events, rate, ["watch", url, kafka.jobs_topic])
    finally:
        projector.terminate()
        projector.wait(30)
    figures = lag_figures(run, seen, rate, load_before)
    polls.sort()
    figures["watcher_poll_ms_p50"] = round(polls[len(polls) // 2], 2)
    figures["watcher_poll_ms_p99"] = round(polls[int(len(polls) * 0.99)], 2)
    return figures


async def lag_floor(kafka: KafkaSettings, rate: int, seconds: float) -> dict[str, Any]:
    await ensure_topics(kafka)
    events = make_log(int(rate * seconds), seed=2)
    load_before = load_average()
    run, seen, polls = await observed(
        kafka, events, rate, ["probe", kafka.bootstrap_servers, kafka.topic_prefix])
    figures = lag_figures(run, seen, rate, load_before)
    polls.sort()
    figures["getmany_ms_p50"] = round(polls[len(polls) // 2], 2)
    figures["getmany_ms_p99"] = round(polls[int(len(polls) * 0.99)], 2)
    return figures


async def observed(kafka: KafkaSettings, events: list[Event], rate: int,
                   observer: list[str]) -> tuple[Paced, Seen, list[float]]:
    """Publish at ``rate`` while an observer process notes when each record shows up.

    The observer (``probe`` or ``watch``, below) runs in its own process: in the producer's
    event loop, its polls waited behind the producer's work (the in-process watcher's
    poll p99 was 30-100 ms, all of it counted as lag). Both write the same JSON: when
    each ``partition:offset`` was seen, and how long their polls took.

    Returns:
        (what the producer did, seen times, poll durations in ms).
    """
    with tempfile.TemporaryDirectory(prefix="simjobs-bench-") as tmp:
        out = Path(tmp) / "seen.json"
        ready_file = Path(tmp) / "ready"
        child = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "bench.projector_bench", *observer, str(len(events)),
             str(out), str(ready_file)],
            cwd=ROOT, stderr=subprocess.DEVNULL)

        async def ready() -> bool:
            return ready_file.exists()

        try:
            run = await paced(kafka, events, rate, ready)
            for _ in range(600):
                if child.poll() is not None:
                    break
                await asyncio.sleep(0.1)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(30)
        raw: dict[str, Any] = (json.loads(out.read_text()) if out.exists()
                               else {"seen": {}, "polls": [0.0]})
    seen = {(int(k.split(":")[0]), int(k.split(":")[1])): t for k, t in raw["seen"].items()}
    return run, seen, raw["polls"]


async def probe(bootstrap: str, prefix: str, count: int, out: Path, ready_file: Path) -> None:
    """The bare consumer of the lag floor: the projector's consumer, minus the projector."""
    kafka = KafkaSettings(bootstrap, prefix, 6, 2, "bench")
    consumer = make_consumer(kafka, group_id=f"{prefix}-probe")
    consumer.subscribe([kafka.jobs_topic])
    await consumer.start()
    seen: dict[str, float] = {}
    polls: list[float] = []
    announced = False
    try:
        while len(seen) < count:
            t0 = time.perf_counter()
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            t = time.time()
            polls.append((time.perf_counter() - t0) * 1000)
            for records in batch.values():
                for r in records:
                    seen[f"{r.partition}:{r.offset}"] = t
            if seen and not announced:
                await asyncio.to_thread(ready_file.touch)
                announced = True
    finally:
        await consumer.stop()
    await asyncio.to_thread(out.write_text, json.dumps({"seen": seen, "polls": polls}))


async def watch(url: str, topic: str, count: int, out: Path, ready_file: Path) -> None:
    """The lag's observer: polls ``projector_offsets`` every 2 ms on one autocommit
    connection until ``count`` records are stored."""
    engine = rm.make_engine(url)
    seen: dict[str, float] = {}
    polls: list[float] = []
    last: dict[int, int] = {}
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            while len(seen) < count:
                t0 = time.perf_counter()
                now = await rm.load_offsets(conn, PROJECTION, topic)
                t = time.time()
                for p, o in now.items():
                    for off in range(last.get(p, -1) + 1, o + 1):
                        seen[f"{p}:{off}"] = t
                if now and not last:
                    await asyncio.to_thread(ready_file.touch)
                last = now
                await asyncio.sleep(0.002)
                polls.append((time.perf_counter() - t0) * 1000)
    finally:
        await engine.dispose()
    await asyncio.to_thread(out.write_text, json.dumps({"seen": seen, "polls": polls}))


def summary(runs: list[dict[str, Any]], key: str, best: Callable[..., Any]) -> dict[str, Any]:
    values = [r[key] for r in runs if r.get(key) is not None]
    return {"best": best(values), "median": statistics.median(values), "runs": len(values)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["probe"], ["watch"]):
        first, second, count, out, ready_file = argv[1:6]
        observer = probe if argv[0] == "probe" else watch
        asyncio.run(observer(first, second, int(count), Path(out), Path(ready_file)))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.projector_bench")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--postgres", action="store_true", help="also run on PostgreSQL")
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement")
    ap.add_argument("--only", choices=["replay", "lag"], help="skip the other measurement")
    args = ap.parse_args(argv)

    was_running = kafka_broker.status(BENCH_KAFKA_HOME) is not None
    load = load_average()
    t = time.perf_counter()
    broker = kafka_broker.start(BENCH_KAFKA_HOME, jars_home=kafka_broker.default_home())
    broker_start = time.perf_counter() - t
    results: dict[str, Any] = {"broker": {
        "start_s": round(broker_start, 2), "cold_start": not was_running,
        "pid": broker.pid, "rss_mib_after_start": rss_mib(broker.pid), "load": load}}
    backends: dict[str, Callable[[str], str]] = {}
    tmp = tempfile.TemporaryDirectory(prefix="simjobs-bench-")
    backends["sqlite"] = lambda name: f"sqlite+aiosqlite:///{Path(tmp.name) / name}.sqlite3"
    pg_url: str | None = None
    if args.postgres:
        pg = postgres.start()
        pg_url = pg.url
        backends["postgres"] = lambda name: postgres.create_database(
            pg, f"bench_{name}_{uuid.uuid4().hex[:8]}")
    log = make_log(args.events)
    try:
        results["reference"] = reference(log)
        print(f"CPU reference: {results['reference']}", file=sys.stderr)
        for n in range(args.repeat if args.only != "lag" else 0):
            for name, url_for in backends.items():
                run = asyncio.run(replay(kafka_for(broker.bootstrap), url_for(f"replay{n}"), log))
                results.setdefault(f"replay_{name}", {"runs": []})["runs"].append(run)
                print(f"replay {name}: {run}", file=sys.stderr)
        for n in range(args.repeat if args.only != "replay" else 0):
            print(f"settled the disk in {settle(pg_url)} s", file=sys.stderr)
            floor = asyncio.run(lag_floor(kafka_for(broker.bootstrap), args.rate, args.seconds))
            results.setdefault("lag_floor", {"runs": []})["runs"].append(floor)
            print(f"lag floor (bare consumer): {floor}", file=sys.stderr)
            for name, url_for in backends.items():
                print(f"settled the disk in {settle(pg_url)} s", file=sys.stderr)
                run = asyncio.run(lag(kafka_for(broker.bootstrap), url_for(f"lag{n}"),
                                      args.rate, args.seconds))
                results.setdefault(f"lag_{name}", {"runs": []})["runs"].append(run)
                print(f"lag {name}: {run}", file=sys.stderr)
        results["broker"]["rss_mib_after_runs"] = rss_mib(broker.pid)
    finally:
        tmp.cleanup()
        if not was_running and not broker.external:
            kafka_broker.stop(BENCH_KAFKA_HOME)
    for key, entry in results.items():
        if key.startswith("replay_"):
            entry["events_per_s"] = summary(entry["runs"], "events_per_s", max)
        elif key.startswith("lag"):
            entry["lag_ms_p99"] = summary(entry["runs"], "lag_ms_p99", min)
            entry["lag_ms_p50"] = summary(entry["runs"], "lag_ms_p50", min)
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")
    return 0


def print_table(results: dict[str, Any]) -> None:
    print(__doc__.split("Methods", 1)[1].split("\n", 1)[1] if __doc__ else "")
    print(f"{'measure':<52}{'best':>12}{'median':>12}{'load':>10}")
    print("-" * 86)
    b = results["broker"]
    rows: list[tuple[str, Any, Any, Any]] = [
        ("broker start s" + (" (cold)" if b["cold_start"] else " (reused)"), b["start_s"], None,
         b["load"]),
        ("broker VmRSS MiB after start", b["rss_mib_after_start"], None, None),
        ("broker VmRSS MiB after runs", b.get("rss_mib_after_runs"), None, None),
    ]
    ref = results.get("reference")
    if ref:
        rows.append(("CPU reference: in-memory fold events/s", ref["events_per_s"], None,
                     ref["load"]))
    for key, entry in results.items():
        runs = entry.get("runs") if isinstance(entry, dict) else None
        if not runs:
            continue
        loads = "/".join(f"{r['load_before']:.1f}" for r in runs)
        if key.startswith("replay_"):
            be = key.removeprefix("replay_")
            rate = entry["events_per_s"]
            rows += [
                (f"replay {be}: events/s (incl. join)", rate["best"], rate["median"], loads),
                (f"replay {be}: events/s (after 1st batch)",
                 max(r["events_per_s_after_first_batch"] or 0 for r in runs), None, None),
                (f"replay {be}: projector CPU us/event",
                 min(r["projector_cpu_us_per_event"] for r in runs), None, None),
                (f"replay {be}: projector VmRSS MiB",
                 max(r["projector_rss_mib"] or 0 for r in runs), None, None),
            ]
            if ref:
                rows.append((f"replay {be} / CPU reference",
                             f"{rate['best'] / ref['events_per_s']:.3f}", None, None))
            if be == "sqlite":
                rows.append(("replay sqlite / target 20,000 ev/s",
                             f"{rate['best'] / TARGET_REPLAY_SQLITE:.2f}", None, None))
        elif key.startswith("lag"):
            be = "floor (bare consumer)" if key == "lag_floor" else key.removeprefix("lag_")
            rows += [
                (f"lag {be}: p50 ms", entry["lag_ms_p50"]["best"], entry["lag_ms_p50"]["median"],
                 loads),
                (f"lag {be}: p99 ms", entry["lag_ms_p99"]["best"], entry["lag_ms_p99"]["median"],
                 None),
                (f"lag {be}: max ms", min(r["lag_ms_max"] for r in runs), None, None),
                (f"lag {be}: of which producer ack ms p50/p99",
                 f"{runs[0].get('ack_ms_p50')}/{runs[0].get('ack_ms_p99')}", None, None),
                (f"lag {be}: rate achieved ev/s", min(r["rate_achieved"] for r in runs), None,
                 None),
                (f"lag {be}: events not seen", max(r["missing"] for r in runs), None, None),
            ]
            if key != "lag_floor":
                rows.append((f"lag {be}: watcher poll ms p50/p99",
                             f"{runs[0]['watcher_poll_ms_p50']}/{runs[0]['watcher_poll_ms_p99']}",
                             None, None))
                floor = results.get("lag_floor")
                if floor:
                    rows.append((f"lag {be}: p99 minus floor p99 ms", round(
                        entry["lag_ms_p99"]["best"] - floor["lag_ms_p99"]["best"], 1),
                        None, None))
                rows.append((f"lag {be}: p99 / target 50 ms",
                             f"{entry['lag_ms_p99']['best'] / TARGET_LAG_P99_MS:.2f}",
                             None, None))
    for label, best, median, load in rows:
        cells = [_cell(best), _cell(median), _cell(load)]
        print(f"{label:<52}{cells[0]:>12}{cells[1]:>12}{cells[2]:>10}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:,.1f}" if isinstance(value, float) else f"{value}"


if __name__ == "__main__":
    sys.exit(main())
