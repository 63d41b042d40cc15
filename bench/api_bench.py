"""API benchmark: POST /jobs/direct throughput and latency, GET /jobs/direct latency.

``python -m bench.api_bench [--levels 1,8,32,128] [--requests 2000] [--requests-c1 300]
[--max-seconds 8] [--get-requests 2000] [--api-workers 1] [--profile]``

What it does:

1. a Kafka broker: the project's own (default home) if it already answers, used and left
   running; otherwise one started in its own home (``~/.cache/simjobs/kafka-apibench``) and
   stopped at the end. Either way the topics get a fresh prefix, so nothing else is touched,
   and are deleted at the end;
2. the projector and ``--api-workers`` API processes (sharing one port), started by the
   stack launcher (``devstack.stack``, the code behind ``make up``) with a fresh
   ``SIMJOBS_STATE_DIR`` under /tmp (SQLite read model, secrets, logs), a free port on
   127.0.0.1 and that topic prefix. The artifact store is ``--artifact-dir``, kept from
   run to run (see below);
3. registers and logs in one user, then runs :mod:`bench.loadgen` in its own process with
   the user's cookies (method in that module's docstring);
4. prints a table next to the targets, writes ``bench/results/api.json`` and stops every
   process it started (also on error, Ctrl-C or SIGTERM).

Why the artifact store is kept: on ext4 without a journal (this machine's disk), creating
a file skips every free inode of its block group that was freed in the last 60-300 s, and
reads each one to know. Deleting a run's 10,000 artifacts, then starting the next run,
made every submission's file create cost ~0.5 ms of kernel CPU (17 % of all the services'
CPU in ``find_inode_bit``/``recently_deleted``); four runs with the store kept: 881-1,206
jobs/s at 0.64-0.85 ms of API CPU a job, against 520-660 at 1.2-1.6 ms with it deleted
each time. A service's store never deletes (so this is the benchmark's doing), and a
journaled filesystem does not check. Once the kept store holds over ``--artifact-limit``
files it is emptied after the run (which slows the runs of the next minutes; it says so).

``--profile`` (or ``API_BENCH_PROFILE=1``) runs the API under cProfile and prints its top
functions (all workers together) after the API has stopped (the profiles are kept in the
state dir). CPU columns: CPU time of each process during the phase / phase wall time
(100 % = 1 core); the api column adds up every API worker. Every process of the stack is
on this machine, so the columns together show where the 2 cores go. ``all ms/req`` is
their CPU together per request, the figure least moved by this host's noise (the same
code's throughput varies by half from one minute to the next); ``host %`` is the whole
machine's busy share (100 % = both cores), kernel threads included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from devstack import kafka_broker, pick_free_ports
from devstack.stack import Stack, StackConfig
from services.contract.topics import delete_prefixed_topics

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "api.json"
BENCH_KAFKA_HOME = Path.home() / ".cache" / "simjobs" / "kafka-apibench"
BENCH_ARTIFACTS = Path.home() / ".cache" / "simjobs" / "apibench-artifacts"
TARGET_RATE = 1000.0
TARGET_P99_MS = 50.0
TARGET_CONCURRENCY = 32
POST_BODY: dict[str, Any] = {
    "sim_type": "shieldhit", "ntasks": 4, "input_type": "files",
    "input_files": {"beam.dat": "NSTAT 1000\n", "geo.dat": "", "mat.dat": "", "detect.dat": ""},
    "title": "bench",
}
USERNAME, PASSWORD = "bench", "bench-password-1"


class Bench:
    """Every process the benchmark starts, so that all of them can be stopped.

    The services are the stack launcher's; the load generator and (when no broker runs)
    a broker of its own are the benchmark's.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.services: Stack | None = None
        self.loadgen: subprocess.Popen[bytes] | None = None
        self.broker_home: Path | None = None
        self.broker_pid: int | None = None
        #: The broker and topic prefix of this run: its topics are deleted at the end.
        self.bootstrap: str | None = None
        self.topic_prefix: str | None = None

    def stop_all(self) -> None:
        if self.loadgen is not None and self.loadgen.poll() is None:
            self.loadgen.kill()
            self.loadgen.wait()
        if self.services is not None:
            self.services.stop()
        if self.bootstrap is not None and self.topic_prefix is not None:
            try:
                asyncio.run(delete_prefixed_topics(self.bootstrap, frozenset({self.topic_prefix})))
            except Exception as exc:  # the figures are printed: say what was left, go on
                log(f"could not delete topics {self.topic_prefix}.*: {exc!r}")
        if self.broker_home is not None:
            kafka_broker.stop(self.broker_home)
            self.broker_home = None


def log(message: str) -> None:
    print(f"api_bench: {message}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def broker(stack: Bench) -> str:
    """Bootstrap of a running broker: the project's own if up (left alone), else our own."""
    handle = kafka_broker.status()
    if handle is not None:
        log(f"using the running broker at {handle.bootstrap} (left running)")
        stack.broker_pid = handle.pid
        return handle.bootstrap
    log(f"starting a broker in {BENCH_KAFKA_HOME}")
    stack.broker_home = BENCH_KAFKA_HOME
    handle = kafka_broker.start(BENCH_KAFKA_HOME, jars_home=kafka_broker.default_home())
    stack.broker_pid = handle.pid
    return handle.bootstrap


def service_env(bootstrap: str, state_dir: Path, port: int, prefix: str,
                artifact_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMJOBS_")}
    env.update({
        "SIMJOBS_KAFKA_BOOTSTRAP": bootstrap,
        "SIMJOBS_TOPIC_PREFIX": prefix,
        "SIMJOBS_STATE_DIR": str(state_dir),
        "SIMJOBS_DATABASE_URL": f"sqlite+aiosqlite:///{state_dir / 'readmodel.sqlite3'}",
        "SIMJOBS_ARTIFACT_DIR": str(artifact_dir or state_dir / "artifacts"),
        "SIMJOBS_PROJECTOR_GROUP": f"{prefix}-projector",
        "SIMJOBS_API_HOST": "127.0.0.1",
        "SIMJOBS_API_PORT": str(port),
        "SIMJOBS_API_ACCESS_TTL": "3600",
        "PYTHONUNBUFFERED": "1",
    })
    return env


async def login(base: str) -> str:
    """Register and log in the bench user; the Cookie header of its session."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        creds = {"username": USERNAME, "password": PASSWORD}
        async with session.put(base + "/auth/register", json=creds) as r:
            if r.status != 201:
                raise RuntimeError(f"register: {r.status} {await r.text()}")
        async with session.post(base + "/auth/login", json=creds) as r:
            if r.status != 202:
                raise RuntimeError(f"login: {r.status} {await r.text()}")
            cookies = {k: m.value for k, m in r.cookies.items()}
        async with session.post(base + "/jobs/direct", json=POST_BODY) as r:
            if r.status != 202:
                raise RuntimeError(f"first submission: {r.status} {await r.text()}")
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def run_loadgen(stack: Bench, env: dict[str, str], config: dict[str, Any],
                timeout: float) -> dict[str, Any]:
    log_path = stack.state_dir / "logs" / "loadgen.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "bench.loadgen"], env=env, cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                start_new_session=True)
    stack.loadgen = proc
    try:
        out, _ = proc.communicate(json.dumps(config).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"loadgen did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}):\n{tail(log_path)}")
    result: dict[str, Any] = json.loads(out)
    return result


def reference_loop_ms(rounds: int = 3) -> float:
    """The best of a few runs of one fixed pure-Python workload, in ms.

    This host's speed drifts by tens of percent from one minute to the next (other
    tenants); the same code then measures very differently. Taken just before the load
    starts, with the services idle, it tells a fast phase from a slow one: compare runs
    only with similar reference times.
    """
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(20_000):
            json.loads(json.dumps({"n": i, "text": "reference", "list": [i, i * 2]}))
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def api_summed(values: dict[str, float | None]) -> dict[str, float | None]:
    """Per-process figures with the API workers (api-1, api-2, ...) added up as "api"."""
    workers = [v for k, v in values.items() if k.startswith("api-")]
    summed = {k: v for k, v in values.items() if not k.startswith("api-")}
    if workers:
        summed["api"] = None if None in workers else sum(v for v in workers if v is not None)
    return summed


def print_table(result: dict[str, Any]) -> None:
    names = ["api", "projector", "usage", "broker", "loadgen"]
    head = (f"{'phase':<6}{'conc':>5}{'sent':>7}{'ok':>7}{'err':>5}{'wall s':>8}"
            f"{'ok/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  "
            + " ".join(f"{n[:6] + ' %':>8}" for n in names) + f"{'api ms/req':>11}"
            + f"{'all ms/req':>11}{'host %':>8}")
    print(head)
    print("-" * len(head))
    for p in result["phases"]:
        cpu = api_summed(p["cpu_pct"])
        print(f"{p['method']:<6}{p['concurrency']:>5}{p['sent']:>7}{p['ok']:>7}{p['errors']:>5}"
              f"{p['wall_s']:>8.2f}{p['ok_per_s']:>8.0f}{fmt(p['p50_ms']):>8}"
              f"{fmt(p['p99_ms']):>8}{fmt(p['max_ms']):>8}  "
              + " ".join(f"{fmt(cpu.get(n), '.0f'):>8}" for n in names)
              + f"{fmt(api_summed(p['cpu_ms_per_req']).get('api'), '.2f'):>11}"
              + f"{fmt(p.get('all_ms_per_req'), '.2f'):>11}{fmt(p.get('host_busy_pct'), '.0f'):>8}")
    print(f"target (POST c={TARGET_CONCURRENCY}): >= {TARGET_RATE:.0f} accepted jobs/s "
          f"with p99 < {TARGET_P99_MS:.0f} ms")
    for p in result["phases"]:
        if p["method"] == "POST" and p["concurrency"] == TARGET_CONCURRENCY:
            ok = p["ok_per_s"] >= TARGET_RATE and p["p99_ms"] < TARGET_P99_MS and not p["errors"]
            print(f"measured: {p['ok_per_s']:.0f} jobs/s, p99 {p['p99_ms']:.1f} ms, "
                  f"{p['errors']} errors -> {'MET' if ok else 'NOT MET'}")
    print(f"projector catch-up after the POST phases: {fmt(result.get('projector_catchup_s'))} s"
          f"; {result.get('api_workers', 1)} API worker(s); host: {os.cpu_count()} CPUs, "
          "everything on one machine")
    print(f"host speed: reference loop {fmt(result.get('reference_loop_ms'))} ms before the "
          "load (lower is faster; compare runs of similar reference only)")
    for p in result["phases"]:
        for sample in p["error_samples"]:
            print(f"  error sample ({p['method']} c={p['concurrency']}): {sample}")


def print_profile(paths: list[Path], top: int = 25) -> None:
    found = [str(p) for p in paths if p.exists()]
    if not found:
        log(f"no profile in {paths}")
        return
    stats = pstats.Stats(*found)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,32,128")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--requests-c1", type=int, default=300)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--get-requests", type=int, default=2000)
    parser.add_argument("--get-concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--warmup-seconds", type=float, default=5.0,
                        help="then this long at concurrency 32, unmeasured (see bench.loadgen)")
    parser.add_argument("--api-workers", type=int, default=1,
                        help="API processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--profile", action="store_true",
                        default=os.environ.get("API_BENCH_PROFILE", "") not in ("", "0"))
    parser.add_argument("--keep-state", action="store_true")
    parser.add_argument("--artifact-dir", type=Path, default=BENCH_ARTIFACTS,
                        help="the artifact store, kept between runs (default: %(default)s)")
    parser.add_argument("--artifact-limit", type=int, default=300_000,
                        help="empty the kept artifact store after a run once it holds "
                             "more files than this")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.levels.split(",") if c.strip()]

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    state_dir = Path(tempfile.mkdtemp(prefix="simjobs-apibench-", dir="/tmp"))
    stack = Bench(state_dir)
    prefix = f"apibench{uuid.uuid4().hex[:10]}"
    profiles = [state_dir / f"api-{i}.prof" for i in range(1, args.api_workers + 1)]
    try:
        bootstrap = stack.bootstrap = broker(stack)
        stack.topic_prefix = prefix
        port = pick_free_ports(1)[0]
        env = service_env(bootstrap, state_dir, port, prefix, args.artifact_dir)
        base = f"http://127.0.0.1:{port}"
        python_args = ({"api": ["-m", "cProfile", "-o", "{state}/{name}.prof"]}
                       if args.profile else {})
        stack.services = Stack(StackConfig(state_dir, env, api_workers=args.api_workers,
                                           runners=0, bootstrap=bootstrap,
                                           python_args=python_args), report=log)
        stack.services.up()
        log(f"state {state_dir}, topics {prefix}.*, API {base}")
        cookie = asyncio.run(login(base))
        pids = {name: pid for service in ("api", "projector", "usage")
                for name, pid in stack.services.pids(service).items()}
        if stack.broker_pid is not None:
            pids["broker"] = stack.broker_pid
        config = {
            "base_url": base, "cookie": cookie, "post_body": POST_BODY,
            "levels": [{"concurrency": c, "requests": args.requests_c1 if c == 1
                        else args.requests} for c in levels],
            "get_concurrency": args.get_concurrency, "get_requests": args.get_requests,
            "max_seconds": args.max_seconds, "warmup": args.warmup,
            "warmup_seconds": args.warmup_seconds, "cpu_pids": pids,
        }
        budget = (len(levels) + 2) * (args.max_seconds + 35) + args.warmup_seconds + 60
        reference = reference_loop_ms()
        result = {**run_loadgen(stack, env, config, budget), "api_workers": args.api_workers,
                  "reference_loop_ms": reference}
        print_table(result)
        for name, code in stack.services.exited().items():
            args.keep_state = True
            print(f"WARNING: {name} exited with {code} during the run:\n"
                  f"{tail(stack.services.log_file(name), 15)}")
        report = {
            "bench": "api", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                     "platform": platform.platform()},
            "broker": {"bootstrap": bootstrap, "own": stack.broker_home is not None},
            "artifact_dir": str(args.artifact_dir),
            "targets": {"concurrency": TARGET_CONCURRENCY, "accepted_per_s": TARGET_RATE,
                        "p99_ms": TARGET_P99_MS},
            "config": {k: v for k, v in config.items() if k not in ("cookie",)},
            "profiled": args.profile, **result,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stack.stop_all()
        if args.profile:
            print_profile(profiles)
        if args.keep_state or args.profile:
            log(f"state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
        trim_artifacts(args.artifact_dir, args.artifact_limit)


def trim_artifacts(root: Path, limit: int) -> None:
    """Empty the kept artifact store once it is over ``limit`` files (see the docstring)."""
    try:
        count = sum(len(files) for _, _, files in os.walk(root))
    except OSError:
        return
    if count > limit:
        log(f"artifact store {root} held {count} files (over {limit}): emptied; creating "
            "files is slower for the next few minutes (freed inodes are skipped)")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
