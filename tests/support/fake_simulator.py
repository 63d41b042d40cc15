#!/usr/bin/env python3
"""A stand-in for the SHIELD-HIT12A binary, for the runner's tests (standard library only).

Command line as the real one: ``fake_simulator.py -N <seed> <workdir>``. It
reads NSTAT from ``<workdir>/beam.dat``, prints SHIELD-HIT-style lines
(``Requested number of primaries NSTAT``, ``Primary particle no. <k> ETR: ...``,
``Run time: ...``) to stdout and to ``shieldhit_<NNNN>.log``, and writes one
estimator, ``z_profile_<NNNN>.json``, in the result schema: a depth-dose
profile whose noise depends on the seed and the number of primaries, so the
same task always gives the same numbers and a merge can be checked.

Test hooks:

* ``beam.dat`` line ``FAIL`` -> exit 2 half-way; ``FAIL <seed> ...`` -> only for those seeds;
* ``beam.dat`` line ``HANG`` (or ``HANG <seed> ...``) -> stop making progress after the first
  step and never end (a stuck run, for time limits and cancels);
* ``beam.dat`` line ``BINS <n>`` -> the profile has n depth bins (default 40; many bins make a
  large output file);
* ``FAKE_SIM_STEP_SECONDS`` -> sleep per progress step (default 0.05; 10 steps);
* ``FAKE_SIM_CHILD=1`` -> start a helper child in the same process group (it only sleeps);
* ``FAKE_SIM_IGNORE_SIGINT=1`` -> ignore SIGINT, so only SIGKILL stops it;
* ``FAKE_SIM_KEEP_GOING=1`` -> carry on (writing its log file only) when its output is
  closed, as a simulator that logs to a file does when its parent is gone.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

BINS = 40
DEPTH_CM = 20.0
STEPS = 10


def read_beam(workdir: Path) -> tuple[int, dict[str, list[int]]]:
    """NSTAT, and the test cards given (``FAIL``, ``HANG``, ``BINS``) with their numbers."""
    nstat = 0
    cards: dict[str, list[int]] = {}
    for line in (workdir / "beam.dat").read_text().splitlines():
        tokens = line.split("!", 1)[0].split()
        if not tokens:
            continue
        if tokens[0].upper() == "NSTAT" and len(tokens) > 1:
            nstat = int(float(tokens[1]))
        elif tokens[0] in ("FAIL", "HANG", "BINS"):
            cards[tokens[0]] = [int(t) for t in tokens[1:]]
    return nstat, cards


def chosen(cards: dict[str, list[int]], card: str, seed: int) -> bool:
    """Whether a seed-selecting card applies to this seed (no seeds given: every seed)."""
    seeds = cards.get(card)
    return seeds is not None and (not seeds or seed in seeds)


def profile(seed: int, primaries: int, bins: int = BINS) -> list[float]:
    """Dose per primary in depth bins: a Bragg-like curve with seed-dependent noise."""
    rng = random.Random(seed)
    peak = 15.0
    values = []
    for i in range(bins):
        z = (i + 0.5) * DEPTH_CM / bins
        clean = 0.0 if z > peak + 0.5 else 1.0 + 3.0 * math.exp(-((z - peak) ** 2) / 0.8)
        noise = rng.gauss(0.0, 1.0) / math.sqrt(max(primaries, 1))
        values.append(round(clean * (1.0 + noise), 12))
    return values


def estimator(seed: int, primaries: int, bins: int = BINS) -> dict[str, object]:
    return {
        "name": "z_profile",
        "metadata": {"geometry": "Cyl", "z_min": 0.0, "z_max": DEPTH_CM, "bins": bins},
        "pages": [{
            "metadata": {"page_number": 0, "page_name": "DOSE", "page_dimension": 1},
            "dimensions": 1,
            "data": {"name": "Dose", "unit": "Gy", "values": profile(seed, primaries, bins)},
        }],
    }


def helper() -> int:
    """A child that only waits to be killed (it ignores nothing)."""
    while True:
        time.sleep(1)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--helper":
        return helper()
    if len(argv) != 3 or argv[0] != "-N":
        print("usage: fake_simulator.py -N <seed> <workdir>", file=sys.stderr)
        return 64
    seed, workdir = int(argv[1]), Path(argv[2])
    if os.environ.get("FAKE_SIM_IGNORE_SIGINT") == "1":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get("FAKE_SIM_CHILD") == "1":
        subprocess.Popen([sys.executable, __file__, "--helper", str(workdir)])
    step_seconds = float(os.environ.get("FAKE_SIM_STEP_SECONDS", "0.05"))
    nstat, cards = read_beam(workdir)
    must_fail = chosen(cards, "FAIL", seed)
    must_hang = chosen(cards, "HANG", seed)
    bins = (cards.get("BINS") or [BINS])[0]
    log = (workdir / f"shieldhit_{seed:04d}.log").open("w")

    keep_going = os.environ.get("FAKE_SIM_KEEP_GOING") == "1"

    def say(text: str) -> None:
        try:
            print(text, flush=True)
        except BrokenPipeError:
            if not keep_going:
                raise
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        log.write(text + "\n")
        log.flush()

    started = time.monotonic()
    say("SHIELD-HIT12A (fake for tests)")
    say(f"Random seed (-N)                         : {seed}")
    say(f"Requested number of primaries NSTAT      :  {nstat}")
    steps = min(STEPS, nstat) or 1
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        if must_fail and step > steps // 2:
            print(f"ERROR: FAIL card in beam.dat (seed {seed})", file=sys.stderr, flush=True)
            return 2
        done = nstat * step // steps
        left = round(step_seconds * (steps - step))
        say(f"Primary particle no. {done:>10} ETR: {left // 3600:>2} hour(s) "
            f"{left % 3600 // 60:>2} minute(s) {left % 60:>2} second(s)")
        while must_hang:
            time.sleep(1)
    (workdir / f"z_profile_{seed:04d}.json").write_text(
        json.dumps(estimator(seed, nstat, bins)))
    took = round(time.monotonic() - started)
    say(f"Run time: {took // 3600} hour(s) {took % 3600 // 60} minute(s) {took % 60} second(s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr, flush=True)
        sys.exit(130)
