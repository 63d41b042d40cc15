"""A whole run: primaries in chunks, progress lines, estimator files, energy balance.

Primaries are transported in chunks of :data:`CHUNK` (memory stays bounded
whatever NSTAT is); chunk ``k`` draws its random numbers from its own PCG64
stream seeded by ``SeedSequence([seed, k])``, so a run is reproducible bit for
bit from its seed and NSTAT, and two seeds give independent streams.

Progress goes to ``out`` in SHIELD-HIT12A's wording (what the runner parses):
``Requested number of primaries NSTAT ... : <n>``, then after chunks (at most
every :data:`PROGRESS_SECONDS`) ``Primary particle no. <k> ETR: <h> hour(s)
<m> minute(s) <s> second(s)``, and at the end ``Run time: ...``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from services.engine.input.model import EngineInput
from services.engine.output import VERSION, estimator_document, write_estimators
from services.engine.scoring import Detector, Primary
from services.engine.transport import EnergyBalance, Transport

CHUNK = 10_000
"""Primaries transported together (one set of arrays)."""
MAX_BATCHES = 10
"""Statistics batches for the engine's own standard errors."""
BATCH_CELLS = 5_000_000
"""Batches are fewer when bins x sums x batches would exceed this many floats."""
PROGRESS_SECONDS = 0.25


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reports."""

    primaries: int
    balance: EnergyBalance
    seconds: float
    files: list[Path]


def _hms(seconds: float) -> tuple[int, int, int]:
    whole = max(0, round(seconds))
    return whole // 3600, whole % 3600 // 60, whole % 60


def batch_count(nstat: int, detectors: list[Detector]) -> int:
    """How many statistics batches a run of ``nstat`` primaries uses."""
    cells = sum(d.nbins * len(d.keys) for d in detectors)
    return max(1, min(MAX_BATCHES, nstat, BATCH_CELLS // max(cells, 1)))


def run(engine_input: EngineInput, seed: int, workdir: Path, out: TextIO,
        nstat: int | None = None) -> RunSummary:
    """Run the input with ``seed`` and write its estimator files into ``workdir``."""
    started = time.monotonic()
    beam = engine_input.beam
    total = nstat if nstat is not None else beam.nstat
    primary = Primary(beam.projectile.z, beam.projectile.a, beam.projectile.jpart)
    probe = [Detector(o, 1, primary) for o in engine_input.outputs]
    batches = batch_count(total, probe)
    detectors = [Detector(o, batches, primary) for o in engine_input.outputs]
    transport = Transport(engine_input, detectors)

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    say(f"Built-in Monte Carlo engine ({VERSION}), SHIELD-HIT12A input subset")
    say(f"Random seed (-N)                         : {seed}")
    say(f"Projectile                               : {beam.projectile.name}, "
        f"{beam.energy:g} MeV/u")
    say(f"Requested number of primaries NSTAT      :  {total}")
    balance = EnergyBalance()
    # Primary i goes to batch i % batches: the first (total % batches) get one more.
    per_batch = (total // batches + (np.arange(batches) < total % batches)).astype(np.int64)
    done = 0
    last = time.monotonic()
    chunk_index = 0
    while done < total:
        n = min(CHUNK, total - done)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, chunk_index])))
        batch = (np.arange(done, done + n) % batches).astype(np.int64)
        balance.add(transport.run(n, batch, rng))
        done += n
        chunk_index += 1
        now = time.monotonic()
        if now - last >= PROGRESS_SECONDS or done == total:
            h, m, s = _hms((now - started) / done * (total - done))
            say(f"Primary particle no. {done:>10} ETR: {h:>2} hour(s) {m:>2} minute(s) "
                f"{s:>2} second(s)")
            last = now
    documents = [estimator_document(d, beam, total, per_batch) for d in detectors]
    files = write_estimators(workdir, documents)
    for path in files:
        say(f"Saving estimator to {path.name}")
    say(f"Saved all {len(files)} estimator(s)")
    say(f"Energy balance per primary (MeV): beam {balance.beam / total:.6f} "
        f"deposited {balance.deposited / total:.6f} escaped {balance.escaped / total:.6f} "
        f"nuclear-not-transported {balance.nuclear_not_transported / total:.6f}")
    seconds = time.monotonic() - started
    h, m, s = _hms(seconds)
    say(f"Run time: {h} hour(s) {m} minute(s) {s} second(s)")
    return RunSummary(total, balance, seconds, files)
