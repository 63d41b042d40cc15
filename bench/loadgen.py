"""HTTP load generator for the API benchmark, run in its own process.

``python -m bench.loadgen`` reads one JSON config object on stdin and writes one JSON
result object on stdout (progress goes to stderr). Config keys:

* ``base_url``: ``http://127.0.0.1:PORT`` (anything else is refused);
* ``cookie``: the ``Cookie`` header of a logged-in user;
* ``post_body``: the body of ``POST /jobs/direct``; each request sends it with a distinct
  input (a comment line numbering it appended to its first input file), so that every
  submission stores a new input artifact (write + fsync), as real submissions do: with
  one body for all, only the first request wrote one;
* ``levels``: ``[{"concurrency": c, "requests": n}, ...]`` for ``POST /jobs/direct``;
* ``get_concurrency``, ``get_requests``: the ``GET /jobs/direct`` phase;
* ``max_seconds``: wall-time bound of each phase (a phase stops at whichever comes first);
* ``warmup``: requests sent (at concurrency 8, not measured) before the first phase;
* ``warmup_seconds``: then, as many requests as fit in this time at concurrency 32 (not
  measured either): a broker JVM started minutes ago still compiles its hot paths, at up
  to half a core taken from the services (its CPU a request fell about fourfold over its
  first ~100 s of this load);
* ``cpu_pids``: ``{"name": pid}`` whose CPU time is sampled around every phase
  (``/proc/PID/stat``; the load generator itself is added as ``loadgen``), and the
  whole host's busy share (``/proc/stat``: 100 % = every core busy).

Method: a phase runs ``c`` workers, each with its own keep-alive HTTP/1.1 connection
(:class:`Connection`, kept across phases), that take request numbers from a shared counter
until ``n`` were started or ``max_seconds`` passed. Latency is measured per request with
``time.perf_counter`` from just before the request is written to its body being read;
throughput = successful responses / phase wall time.

Why a client of its own: the load generator shares the 2 cores with the services it
measures, and every millisecond of client CPU is taken from them. aiohttp's client cost
0.29 ms of CPU a request here; this one, which only speaks what the benchmark needs
(``Content-Length`` bodies, keep-alive), costs a fraction of that.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from services.ops.gctune import tune_garbage_collector

CLK_TCK = os.sysconf("SC_CLK_TCK")
JOBS_PATH = "/jobs/direct"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (children not included), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_ticks() -> tuple[int, int]:
    """Busy and total jiffies of all cores together since boot (``/proc/stat``)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; NaN if none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class PhaseResult:
    """What one phase measured (times in ms, rates per second)."""

    name: str
    method: str
    concurrency: int
    planned: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    ok_per_s: float = 0.0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    mean_ms: float = math.nan
    cpu_pct: dict[str, float | None] = field(default_factory=dict)
    cpu_ms_per_req: dict[str, float | None] = field(default_factory=dict)
    #: CPU of every measured process together, per request sent.
    all_ms_per_req: float | None = None
    #: Busy share of the whole host (all cores) during the phase.
    host_busy_pct: float | None = None
    timed_out: bool = False


class Phase:
    """Shared state of the workers of one phase."""

    def __init__(self, result: PhaseResult, deadline: float) -> None:
        self.result = result
        self.deadline = deadline
        self.started = 0
        self.latencies: list[float] = []

    def take(self) -> int | None:
        """The next request number, or None when the phase is over."""
        if self.started >= self.result.planned or time.perf_counter() >= self.deadline:
            if self.started < self.result.planned:
                self.result.timed_out = True
            return None
        self.started += 1
        return self.started - 1

    def record(self, status: int | None, elapsed: float, expected: int, detail: str) -> None:
        res = self.result
        res.sent += 1
        key = str(status) if status is not None else "exception"
        res.statuses[key] = res.statuses.get(key, 0) + 1
        if status == expected:
            res.ok += 1
            self.latencies.append(elapsed)
        else:
            res.errors += 1
            if len(res.error_samples) < 5:
                res.error_samples.append(f"{key}: {detail[:200]}")


#: What a failed request raises (TimeoutError is an OSError, IncompleteReadError an
#: EOFError); each counts as that request's error.
REQUEST_ERRORS = (OSError, EOFError, asyncio.LimitOverrunError, ValueError)


class _Responses(asyncio.Protocol):
    """The reading side of one connection: HTTP/1.1 responses with ``Content-Length`` bodies.

    A protocol rather than a ``StreamReader``: its ``readuntil`` and ``readexactly`` made
    a future and a wake-up each per response, most of this client's CPU.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end + 4])
        try:
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at < 0:
                raise ValueError(f"no Content-Length in {head[:200]!r}")
            length = int(head[at + 17:head.index(b"\r\n", at + 2)])
        except ValueError as exc:
            waiter.set_exception(exc)
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        waiter.set_result((status, lower, body))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionResetError("the server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)


class Connection:
    """One keep-alive HTTP/1.1 connection to the API, reopened after an error."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in
                             {"Host": f"{host}:{port}", **headers}.items()).encode()
        self.protocol: _Responses | None = None

    async def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        """Status and body of one request.

        Raises:
            One of :data:`REQUEST_ERRORS`: the connection failed or the answer was not
                what this client reads (it is closed then).
        """
        try:
            async with asyncio.timeout(30):
                protocol = self.protocol
                if protocol is None or protocol.lost is not None:
                    loop = asyncio.get_running_loop()
                    _, protocol = await loop.create_connection(_Responses, self.host, self.port)
                    self.protocol = protocol
                assert protocol.transport is not None
                protocol.waiter = waiter = asyncio.get_running_loop().create_future()
                protocol.transport.write(
                    f"{method} {target} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode()
                    + self.fixed + b"\r\n" + body)
                status, lower, payload = await waiter
                if b"\r\nconnection: close" in lower:
                    self.close()
                return status, payload
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None


#: Where the request's numbered comment goes in the body template (never in a real input).
_MARK = "@@loadgen-request@@"


class LoadGen:
    """Runs the phases of one config against one API."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.base = str(config["base_url"]).rstrip("/")
        if not self.base.startswith("http://127.0.0.1:"):
            raise SystemExit(f"loadgen only targets http://127.0.0.1, got {self.base!r}")
        self.post_body: dict[str, Any] = config["post_body"]
        self.run_id = f"{os.getpid()}-{time.time_ns()}"
        self.posts = 0
        self._template: tuple[bytes, bytes] | None = None
        self.headers = {"Cookie": str(config["cookie"]), "Content-Type": "application/json"}
        self.max_seconds = float(config["max_seconds"])
        self.job_ids: list[str] = []
        self.pids: dict[str, int] = {k: int(v) for k, v in config.get("cpu_pids", {}).items()}
        self.pids["loadgen"] = os.getpid()

    def _body(self) -> bytes:
        """The POST body with an input no other request of any run has sent.

        The body is the configured one, its first input file ending in a comment line
        that numbers the request: made from a template once, filled in per request.
        """
        self.posts += 1
        if self._template is None:
            files = dict(self.post_body["input_files"])
            first = next(iter(files))
            files[first] += _MARK
            text = json.dumps({**self.post_body, "input_files": files}).encode()
            head, _, tail = text.partition(_MARK.encode())
            self._template = (head, tail)
        head, tail = self._template
        return head + f"* loadgen {self.run_id} request {self.posts}\\n".encode() + tail

    async def _post(self, conn: Connection, phase: Phase) -> None:
        while phase.take() is not None:
            body = self._body()
            t0 = time.perf_counter()
            status: int | None
            try:
                status, raw = await conn.request("POST", JOBS_PATH, body)
            except REQUEST_ERRORS as exc:
                status, raw = None, repr(exc).encode()
            elapsed = time.perf_counter() - t0
            phase.record(status, elapsed, 202, raw.decode(errors="replace"))
            if status == 202:
                self.job_ids.append(str(json.loads(raw)["job_id"]))

    async def _get(self, conn: Connection, phase: Phase) -> None:
        ids = self.job_ids
        while (number := phase.take()) is not None:
            target = f"{JOBS_PATH}?job_id={ids[number * 7919 % len(ids)]}"
            t0 = time.perf_counter()
            status: int | None
            try:
                status, raw = await conn.request("GET", target)
            except REQUEST_ERRORS as exc:
                status, raw = None, repr(exc).encode()
            phase.record(status, time.perf_counter() - t0, 200, raw.decode(errors="replace"))

    def _cpu(self) -> dict[str, float | None]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    async def run_phase(self, conns: list[Connection], name: str, method: str,
                        concurrency: int, requests: int,
                        max_seconds: float | None = None) -> PhaseResult:
        result = PhaseResult(name=name, method=method, concurrency=concurrency, planned=requests)
        cpu0 = self._cpu()
        host0 = host_ticks()
        t0 = time.perf_counter()
        phase = Phase(result, t0 + (self.max_seconds if max_seconds is None else max_seconds))
        worker = self._post if method == "POST" else self._get
        await asyncio.gather(*(worker(conn, phase) for conn in conns[:concurrency]))
        result.wall_s = time.perf_counter() - t0
        cpu1 = self._cpu()
        host1 = host_ticks()
        if host1[1] > host0[1]:
            result.host_busy_pct = round(100 * (host1[0] - host0[0]) / (host1[1] - host0[1]), 1)
        lat = sorted(phase.latencies)
        result.ok_per_s = result.ok / result.wall_s if result.wall_s > 0 else 0.0
        if lat:
            result.p50_ms = percentile(lat, 50) * 1000
            result.p90_ms = percentile(lat, 90) * 1000
            result.p99_ms = percentile(lat, 99) * 1000
            result.max_ms = lat[-1] * 1000
            result.mean_ms = sum(lat) / len(lat) * 1000
        for key in self.pids:
            before, after = cpu0.get(key), cpu1.get(key)
            if before is None or after is None:
                result.cpu_pct[key] = result.cpu_ms_per_req[key] = None
                continue
            used = after - before
            result.cpu_pct[key] = round(100 * used / result.wall_s, 1)
            result.cpu_ms_per_req[key] = round(1000 * used / max(result.sent, 1), 3)
        per_req = result.cpu_ms_per_req.values()
        if None not in per_req:
            result.all_ms_per_req = round(sum(v for v in per_req if v is not None), 3)
        print(f"loadgen: {name} c={concurrency}: {result.ok}/{result.sent} ok in "
              f"{result.wall_s:.2f} s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms",
              file=sys.stderr, flush=True)
        return result

    async def run(self) -> dict[str, Any]:
        levels = [(int(lv["concurrency"]), int(lv["requests"])) for lv in self.config["levels"]]
        get_c = int(self.config["get_concurrency"])
        limit = max([c for c, _ in levels] + [get_c])
        host, port = self.base.removeprefix("http://").split(":")
        conns = [Connection(host, int(port), self.headers) for _ in range(limit)]
        phases: list[PhaseResult] = []
        try:
            warmup = int(self.config.get("warmup", 0))
            if warmup:
                await self.run_phase(conns, "warmup", "POST", min(8, limit), warmup)
            warmup_seconds = float(self.config.get("warmup_seconds", 0))
            if warmup_seconds > 0:
                await self.run_phase(conns, "warmup", "POST", min(32, limit), 10**9,
                                     max_seconds=warmup_seconds)
            for concurrency, requests in levels:
                phases.append(await self.run_phase(conns, "post", "POST", concurrency,
                                                   requests))
            if self.job_ids and self.config.get("get_requests"):
                await self._await_visible(conns[0], self.job_ids[-10:])
                phases.append(await self.run_phase(conns, "get", "GET", get_c,
                                                   int(self.config["get_requests"])))
        finally:
            for conn in conns:
                conn.close()
        return {"phases": [asdict(p) for p in phases], "submitted": len(self.job_ids),
                "projector_catchup_s": self.catchup_s}

    catchup_s: float | None = None

    async def _await_visible(self, conn: Connection, job_ids: list[str]) -> None:
        """Wait (bounded) until the last jobs submitted are visible in the read model."""
        t0 = time.perf_counter()
        pending = list(job_ids)
        while pending and time.perf_counter() - t0 < 60:
            status, _ = await conn.request("GET", f"{JOBS_PATH}?job_id={pending[0]}")
            if status == 200:
                pending.pop(0)
                continue
            await asyncio.sleep(0.05)
        if not pending:
            self.catchup_s = round(time.perf_counter() - t0, 3)


def main() -> int:
    config = json.load(sys.stdin)
    tune_garbage_collector()  # the client's own collector pauses are not the API's latency
    result = asyncio.run(LoadGen(config).run())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
