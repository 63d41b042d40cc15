#!/usr/bin/env python3
"""A stand-in for the SHIELD-HIT12A binary, for the runner's tests (standard library only).

Command line as the real one: ``fake_simulator.py -N <seed> <workdir>``. It
reads NSTAT from ``<workdir>/beam.dat``, prints SHIELD-HIT-style lines
(``Requested number of primaries NSTAT``, ``Primary particle no. <k> ETR: ...``,
``Run time: ...``) to stdout and to ``shieldhit_<NNNN>.log``, and writes two
estimators in the result schema: ``z_profile_<NNNN>.json``, a 1-D depth-dose
profile whose noise depends on the seed and the number of primaries (so the
same task always gives the same numbers and a merge can be checked), and
``zy_map_<NNNN>.json``, a 2-D dose map made from it.

Test hooks:

* ``beam.dat`` line ``FAIL`` -> exit 2 half-way; ``FAIL <seed> ...`` -> only for those seeds;
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
MAP_BINS_Y = 16
DEPTH_CM = 20.0
STEPS = 10


def read_beam(workdir: Path) -> tuple[int, list[int] | None]:
    """NSTAT and the seeds that must fail (``[]``: all, ``None``: none)."""
    nstat = 0
    fail: list[int] | None = None
    for line in (workdir / "beam.dat").read_text().splitlines():
        tokens = line.split("!", 1)[0].split()
        if not tokens:
            continue
        if tokens[0].upper() == "NSTAT" and len(tokens) > 1:
            nstat = int(float(tokens[1]))
        elif tokens[0] == "FAIL":
            fail = [int(t) for t in tokens[1:]]
    return nstat, fail


def profile(seed: int, primaries: int) -> list[float]:
    """Dose per primary in depth bins: a Bragg-like curve with seed-dependent noise."""
    rng = random.Random(seed)
    peak = 15.0
    values = []
    for i in range(BINS):
        z = (i + 0.5) * DEPTH_CM / BINS
        clean = 0.0 if z > peak + 0.5 else 1.0 + 3.0 * math.exp(-((z - peak) ** 2) / 0.8)
        noise = rng.gauss(0.0, 1.0) / math.sqrt(max(primaries, 1))
        values.append(round(clean * (1.0 + noise), 12))
    return values


def centres(bins: int, low: float, high: float) -> list[float]:
    return [round(low + (i + 0.5) * (high - low) / bins, 6) for i in range(bins)]


def estimator(seed: int, primaries: int) -> dict[str, object]:
    return {
        "name": "z_profile",
        "metadata": {"geometry": "Cyl", "z_min": 0.0, "z_max": DEPTH_CM, "bins": BINS},
        "pages": [{
            "metadata": {"page_number": 0, "page_name": "DOSE", "page_dimension": 1},
            "dimensions": 1,
            "data": {"name": "Dose", "unit": "Gy", "values": profile(seed, primaries)},
            "axis_dim1": {"name": "Position (Z)", "unit": "cm",
                          "values": centres(BINS, 0.0, DEPTH_CM)},
        }],
    }


def dose_map(seed: int, primaries: int) -> dict[str, object]:
    """A 2-D (Z, Y) dose map: the depth profile spread by a Gaussian lateral profile."""
    depth = profile(seed, primaries)[::2]
    ys = centres(MAP_BINS_Y, -2.0, 2.0)
    values = [round(d * math.exp(-(y ** 2) / 0.5), 12) for d in depth for y in ys]
    return {
        "name": "zy_map",
        "metadata": {"geometry": "Mesh", "bins": [len(depth), MAP_BINS_Y]},
        "pages": [{
            "metadata": {"page_number": 0, "page_name": "DOSE", "page_dimension": 2},
            "dimensions": 2,
            "data": {"name": "Dose", "unit": "Gy", "values": values},
            "axis_dim1": {"name": "Position (Z)", "unit": "cm",
                          "values": centres(len(depth), 0.0, DEPTH_CM)},
            "axis_dim2": {"name": "Position (Y)", "unit": "cm", "values": ys},
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
    nstat, fail = read_beam(workdir)
    must_fail = fail is not None and (not fail or seed in fail)
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
    (workdir / f"z_profile_{seed:04d}.json").write_text(json.dumps(estimator(seed, nstat)))
    (workdir / f"zy_map_{seed:04d}.json").write_text(json.dumps(dose_map(seed, nstat)))
    took = round(time.monotonic() - started)
    say(f"Run time: {took // 3600} hour(s) {took % 3600 // 60} minute(s) {took % 60} second(s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr, flush=True)
        sys.exit(130)
