"""API benchmark: POST /jobs/direct throughput and latency, GET /jobs/direct latency.

``python -m bench.api_bench [--levels 1,8,32,128] [--requests 2000] [--requests-c1 300]
[--max-seconds 8] [--get-requests 2000] [--profile]``

What it does:

1. a Kafka broker: the project's own (default home) if it already answers, used and left
   running; otherwise one started in its own home (``~/.cache/simjobs/kafka-apibench``) and
   stopped at the end. Either way the topics get a fresh prefix, so nothing else is touched;
2. ``python -m services.api`` and ``python -m services.projector`` as subprocesses with a
   fresh ``SIMJOBS_STATE_DIR`` under /tmp (SQLite read model, artifacts, secrets), a free
   port on 127.0.0.1 and that topic prefix;
3. registers and logs in one user, then runs :mod:`bench.loadgen` in its own process with
   the user's cookies (method in that module's docstring);
4. prints a table next to the targets, writes ``bench/results/api.json`` and stops every
   process it started (also on error, Ctrl-C or SIGTERM).

``--profile`` (or ``API_BENCH_PROFILE=1``) runs the API under cProfile and prints its top
functions after the API has stopped (the profile is kept in the state dir).
CPU columns: CPU time of each process during the phase / phase wall time (100 % = 1 core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pstats
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from devstack import kafka_broker, pick_free_ports

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "api.json"
BENCH_KAFKA_HOME = Path.home() / ".cache" / "simjobs" / "kafka-apibench"
TARGET_RATE = 1000.0
TARGET_P99_MS = 50.0
TARGET_CONCURRENCY = 32
#: A small valid built-in engine input (the API parses builtin inputs at submit).
BENCH_GEO = ("    0    0          bench\n"
             "  RPP    1     -10.0      10.0     -10.0      10.0       0.0      20.0\n"
             "  END\n  001          +1\n  END\n    1\n    1\n")
POST_BODY: dict[str, Any] = {
    "sim_type": "builtin", "ntasks": 4, "input_type": "files",
    "input_files": {"beam.dat": "TMAX0 150\nNSTAT 1000\n", "geo.dat": BENCH_GEO,
                    "mat.dat": "MEDIUM 1\nICRU 276\nEND\n",
                    "detect.dat": "Geometry Cyl\n Name c\n R 0 10 1\n Z 0 20 200\n"
                                  "Output\n Filename dd.bdo\n Geo c\n Quantity Dose\n"},
    "title": "bench",
}
USERNAME, PASSWORD = "bench", "bench-password-1"


class Stack:
    """Every process the benchmark starts, so that all of them can be stopped."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.broker_home: Path | None = None
        self.broker_pid: int | None = None

    def spawn(self, name: str, argv: list[str], env: dict[str, str],
              stdin: int | None = None, stdout: int | None = None) -> subprocess.Popen[bytes]:
        log = open(self.state_dir / f"{name}.log", "wb")  # noqa: SIM115 - kept by the child
        try:
            proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=stdin,
                                    stdout=stdout if stdout is not None else log, stderr=log,
                                    start_new_session=True)
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def stop_process(self, name: str, timeout: float = 20.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # graceful: aiohttp and the projector both handle it
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(reversed(self.procs)):
            self.stop_process(name)
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


def broker(stack: Stack) -> str:
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


def service_env(bootstrap: str, state_dir: Path, port: int, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMJOBS_")}
    env.update({
        "SIMJOBS_KAFKA_BOOTSTRAP": bootstrap,
        "SIMJOBS_TOPIC_PREFIX": prefix,
        "SIMJOBS_STATE_DIR": str(state_dir),
        "SIMJOBS_DATABASE_URL": f"sqlite+aiosqlite:///{state_dir / 'readmodel.sqlite3'}",
        "SIMJOBS_ARTIFACT_DIR": str(state_dir / "artifacts"),
        "SIMJOBS_PROJECTOR_GROUP": f"{prefix}-projector",
        "SIMJOBS_API_HOST": "127.0.0.1",
        "SIMJOBS_API_PORT": str(port),
        "SIMJOBS_API_ACCESS_TTL": "3600",
        "PYTHONUNBUFFERED": "1",
    })
    return env


async def wait_ready(base: str, stack: Stack, limit_s: float = 90.0) -> None:
    """Until GET / answers 200 (the API's cleanup contexts, Kafka included, have started)."""
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n"
                                       f"{tail(stack.state_dir / f'{name}.log')}")
            try:
                async with session.get(base + "/", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"API not ready after {limit_s} s:\n{tail(stack.state_dir / 'api.log')}")


def wait_schema(stack: Stack, db: Path, limit_s: float = 60.0) -> None:
    """Until the projector has created the read model's ``jobs`` table."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        proc = stack.procs["projector"]
        if proc.poll() is not None:
            raise RuntimeError(f"projector exited with {proc.returncode}:\n"
                               f"{tail(stack.state_dir / 'projector.log')}")
        if db.exists():
            try:
                with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
                    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                         "AND name = 'jobs'").fetchone()
                if found:
                    time.sleep(0.5)  # the rest of the schema is created in the same run
                    return
            except sqlite3.Error:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"projector created no schema in {limit_s} s")


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


def run_loadgen(stack: Stack, env: dict[str, str], config: dict[str, Any],
                timeout: float) -> dict[str, Any]:
    proc = stack.spawn("loadgen", [sys.executable, "-m", "bench.loadgen"], env,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(json.dumps(config).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"loadgen did not finish in {timeout:.0f} s") from None
    stack.procs.pop("loadgen", None)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}):\n"
                           f"{tail(stack.state_dir / 'loadgen.log')}")
    result: dict[str, Any] = json.loads(out)
    return result


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def print_table(result: dict[str, Any]) -> None:
    names = ["api", "projector", "broker", "loadgen"]
    head = (f"{'phase':<6}{'conc':>5}{'sent':>7}{'ok':>7}{'err':>5}{'wall s':>8}"
            f"{'ok/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  "
            + " ".join(f"{n[:6] + ' %':>8}" for n in names) + f"{'api ms/req':>11}")
    print(head)
    print("-" * len(head))
    for p in result["phases"]:
        cpu = p["cpu_pct"]
        print(f"{p['method']:<6}{p['concurrency']:>5}{p['sent']:>7}{p['ok']:>7}{p['errors']:>5}"
              f"{p['wall_s']:>8.2f}{p['ok_per_s']:>8.0f}{fmt(p['p50_ms']):>8}"
              f"{fmt(p['p99_ms']):>8}{fmt(p['max_ms']):>8}  "
              + " ".join(f"{fmt(cpu.get(n), '.0f'):>8}" for n in names)
              + f"{fmt(p['cpu_ms_per_req'].get('api'), '.2f'):>11}")
    print(f"target (POST c={TARGET_CONCURRENCY}): >= {TARGET_RATE:.0f} accepted jobs/s "
          f"with p99 < {TARGET_P99_MS:.0f} ms")
    for p in result["phases"]:
        if p["method"] == "POST" and p["concurrency"] == TARGET_CONCURRENCY:
            ok = p["ok_per_s"] >= TARGET_RATE and p["p99_ms"] < TARGET_P99_MS and not p["errors"]
            print(f"measured: {p['ok_per_s']:.0f} jobs/s, p99 {p['p99_ms']:.1f} ms, "
                  f"{p['errors']} errors -> {'MET' if ok else 'NOT MET'}")
    print(f"projector catch-up after the POST phases: {fmt(result.get('projector_catchup_s'))} s"
          f"; host: {os.cpu_count()} CPUs, everything on one machine")
    for p in result["phases"]:
        for sample in p["error_samples"]:
            print(f"  error sample ({p['method']} c={p['concurrency']}): {sample}")


def print_profile(path: Path, top: int = 25) -> None:
    if not path.exists():
        log(f"no profile at {path}")
        return
    stats = pstats.Stats(str(path))
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
    parser.add_argument("--profile", action="store_true",
                        default=os.environ.get("API_BENCH_PROFILE", "") not in ("", "0"))
    parser.add_argument("--keep-state", action="store_true")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.levels.split(",") if c.strip()]

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    state_dir = Path(tempfile.mkdtemp(prefix="simjobs-apibench-", dir="/tmp"))
    stack = Stack(state_dir)
    prefix = f"apibench{uuid.uuid4().hex[:10]}"
    profile_path = state_dir / "api.prof"
    try:
        bootstrap = broker(stack)
        port = pick_free_ports(1)[0]
        env = service_env(bootstrap, state_dir, port, prefix)
        base = f"http://127.0.0.1:{port}"
        api_argv = [sys.executable, "-m", "services.api"]
        if args.profile:
            api_argv = [sys.executable, "-m", "cProfile", "-o", str(profile_path),
                        "-m", "services.api"]
        stack.spawn("projector", [sys.executable, "-m", "services.projector"], env)
        # Both services create the read-model schema at start and the projector does not
        # retry a lost race ("table jobs already exists"): let it finish first.
        wait_schema(stack, state_dir / "readmodel.sqlite3")
        stack.spawn("api", api_argv, env)
        log(f"state {state_dir}, topics {prefix}.*, API {base}")
        asyncio.run(wait_ready(base, stack))
        cookie = asyncio.run(login(base))
        pids = {name: proc.pid for name, proc in stack.procs.items()}
        if stack.broker_pid is not None:
            pids["broker"] = stack.broker_pid
        config = {
            "base_url": base, "cookie": cookie, "post_body": POST_BODY,
            "levels": [{"concurrency": c, "requests": args.requests_c1 if c == 1
                        else args.requests} for c in levels],
            "get_concurrency": args.get_concurrency, "get_requests": args.get_requests,
            "max_seconds": args.max_seconds, "warmup": args.warmup, "cpu_pids": pids,
        }
        budget = (len(levels) + 2) * (args.max_seconds + 35) + 60
        result = run_loadgen(stack, env, config, budget)
        print_table(result)
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                args.keep_state = True
                print(f"WARNING: {name} exited with {proc.returncode} during the run:\n"
                      f"{tail(state_dir / f'{name}.log', 15)}")
        report = {
            "bench": "api", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                     "platform": platform.platform()},
            "broker": {"bootstrap": bootstrap, "own": stack.broker_home is not None},
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
            print_profile(profile_path)
        if args.keep_state or args.profile:
            log(f"state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
