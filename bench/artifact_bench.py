"""Artifact store: CPU and latency of a durable put, journal against fsync per file.

``python -m bench.artifact_bench [--rounds 10] [--concurrency 32] [--busy-us 600]``

What a busy API does: ``--concurrency`` coroutines in one event loop, each spending
``--busy-us`` of CPU on the loop (the rest of a submission) and then awaiting one
``aput_bytes`` of a distinct 300-byte input. Two stores, each in its own directory under
``~/.cache/simjobs/artifact-bench`` (kept between runs, as :mod:`bench.api_bench` keeps
its store, and for the same reason: files deleted in the last minutes make every create
slow on this disk), take turns for one second at a time (``--rounds`` turns each), so that the
host's speed, which drifts by tens of percent here from one minute to the next, is the
same for both; the figures are medians over the turns.

* ``journal``: :class:`services.artifacts.store.ArtifactStore` (the journal's writer
  thread syncs whatever is queued in one fdatasync, each put then appends its record to
  its pack on the loop (:mod:`services.artifacts.packs`); all checkpointed by a ``syncfs``
  every few seconds);
* ``fsync per file`` (baseline): each put in a thread of its own: write, fsync, rename.

Columns: puts/s; CPU of this process per put beyond the simulated request (user+sys,
every thread), its system part, and put latency p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.api_bench import trim_artifacts
from services.artifacts.store import ArtifactStore, digest

RESULTS = Path(__file__).resolve().parent / "results" / "artifacts.json"
KEPT_STORES = Path.home() / ".cache" / "simjobs" / "artifact-bench"
COLUMNS = ("puts_per_s", "cpu_us_per_put", "sys_us_per_put", "p50_ms", "p99_ms")


class FsyncPerFileStore(ArtifactStore):
    """The baseline: every put written, fsynced and renamed in a thread of its own."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._fsyncers = ThreadPoolExecutor(8, thread_name_prefix="bench-fsync")

    async def aput_bytes(self, data: bytes) -> str:
        result = (await asyncio.to_thread(self._put_many, [data]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _put_many(self, blobs: Any) -> list[str | BaseException]:
        refs = [digest(data) for data in blobs]
        opened = []
        for ref, data in zip(refs, blobs, strict=True):
            path = self.path_of(ref)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.write(fd, data)
            opened.append((fd, tmp, path))
        list(self._fsyncers.map(os.fsync, [fd for fd, _, _ in opened]))
        for fd, tmp, path in opened:
            os.close(fd)
            os.replace(tmp, path)
        return list(refs)


async def one_turn(store: ArtifactStore, seconds: float, concurrency: int,
                   busy_us: float) -> dict[str, float]:
    """Puts from ``concurrency`` busy coroutines for ``seconds``; this turn's figures."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def submitter() -> None:
        while time.perf_counter() < deadline:
            spin_until = time.perf_counter() + busy_us / 1e6
            while time.perf_counter() < spin_until:
                pass
            started = time.perf_counter()
            await store.aput_bytes(secrets.token_bytes(300))
            latencies.append(time.perf_counter() - started)

    cpu0, wall0 = os.times(), time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    cpu1, wall = os.times(), time.perf_counter() - wall0
    n = len(latencies)
    latencies.sort()
    return {
        "puts_per_s": n / wall,
        "cpu_us_per_put": ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / n * 1e6
        - busy_us,
        "sys_us_per_put": (cpu1.system - cpu0.system) / n * 1e6,
        "p50_ms": latencies[n // 2] * 1e3,
        "p99_ms": latencies[int(n * 0.99)] * 1e3,
    }


async def run(rounds: int, concurrency: int, busy_us: float) -> dict[str, Any]:
    stores = {"fsync per file": FsyncPerFileStore(KEPT_STORES / "baseline"),
              "journal": ArtifactStore(KEPT_STORES / "journal")}
    turns: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
    for _ in range(rounds):
        for name, store in stores.items():
            turns[name].append(await one_turn(store, 1.0, concurrency, busy_us))
    await stores["journal"].aclose()
    trim_artifacts(KEPT_STORES, 300_000)
    return {name: {c: statistics.median(t[c] for t in ts) for c in COLUMNS}
            for name, ts in turns.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.artifact_bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--busy-us", type=float, default=600.0)
    args = parser.parse_args()
    figures = asyncio.run(run(args.rounds, args.concurrency, args.busy_us))
    print(f"{'store':16s} {'puts/s':>8s} {'cpu us/put':>11s} {'sys us/put':>11s} "
          f"{'p50 ms':>7s} {'p99 ms':>7s}")
    for name, f in figures.items():
        print(f"{name:16s} {f['puts_per_s']:8.0f} {f['cpu_us_per_put']:11.0f} "
              f"{f['sys_us_per_put']:11.0f} {f['p50_ms']:7.1f} {f['p99_ms']:7.1f}")
    base, new = figures["fsync per file"], figures["journal"]
    print(f"journal / baseline: CPU per put x{new['cpu_us_per_put'] / base['cpu_us_per_put']:.2f}, "
          f"puts/s x{new['puts_per_s'] / base['puts_per_s']:.2f}")
    RESULTS.write_text(json.dumps({
        "bench": "artifacts", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average": os.getloadavg()},
        "config": vars(args), "figures": figures}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(RESULTS.parent.parent.parent)}")


if __name__ == "__main__":
    main()
