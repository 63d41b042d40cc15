#!/usr/bin/env python3
"""A stand-in for FLUKA's ``rfluka`` script, for the tests (standard library only).

Command line as the real one: ``fake_rfluka.py -M 1 <path>/<name>.inp`` (one
cycle). Like rfluka it runs the cycle in ``fluka_<pid>/`` under the current
directory, where it writes ``<name>001.out`` as it goes, then moves the cycle's
files up as ``<name>001.out``, ``<name>001.err``, ``<name>001.log`` and
``<name>001_fort.NN`` and removes the sub-directory. Its stdout has rfluka's
few lines (``Running fluka in ...``, ``Moving fort.21 to ...``), no progress:
that is only in the ``.out`` file, after `` NEXT SEEDS:`` lines, as rows of six
numbers (primaries done, still to do, ...), ending with `` All cases handled by
Feeder`` and `` * ====== End of FLUKA ... run ====== *`` (the lines YAPTIDE's
FLUKA monitor reads).

From the fixed-format input it reads TITLE, START WHAT(1) (primaries),
RANDOMIZ WHAT(2) (seed) and USRBIN card pairs (binning type, quantity code or
name, output unit, x/y/z max; then x/y/z min and bins), and writes each
binary unit (negative WHAT(3)) as FLUKA's unformatted USRBIN file: Fortran
records (4-byte length, payload, 4-byte length) holding the run header
(title, time, weight, ncase, mcase, nbatch), then per detector an 86-byte
header and its float32 values, per primary (GeV/g for DOSE), x fastest.

Test hooks: ``FAKE_FLUKA_STEP_SECONDS`` (sleep per progress row, default 0.05);
``FAKE_FLUKA_FAIL=1`` -> exit 1 half-way, as rfluka does when FLUKA stops.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STEPS = 10
VERSION = "4-4.0"
#: Generalised particle / quantity codes the stand-in knows by name.
CODES = {"DOSE": 228, "ENERGY": 208, "ALL-PART": 201, "PROTON": 1, "NEUTRON": 8,
         "PHOTON": 7}


@dataclass
class Usrbin:
    name: str
    kind: int
    score: int
    unit: int
    lows: tuple[float, float, float]
    highs: tuple[float, float, float]
    bins: tuple[int, int, int]


def what(line: str, index: int) -> str:
    return line[10 * index: 10 * index + 10].strip()


def number(line: str, index: int, default: float = 0.0) -> float:
    text = what(line, index)
    return float(text) if text else default


def keyword(line: str) -> str:
    if not line.strip() or line.startswith(("*", "!", "#")):
        return ""
    return line[:10].strip().upper()


def read_input(path: Path) -> tuple[str, int, int, list[Usrbin]]:
    """Title, primaries, seed and USRBIN detectors of a fixed-format input."""
    lines = path.read_text().splitlines()
    title, primaries, seed = "", 0, 54217137
    detectors: list[Usrbin] = []
    pending: list[str] = []
    for i, line in enumerate(lines):
        card = keyword(line)
        if card == "TITLE" and i + 1 < len(lines):
            title = lines[i + 1].strip()
        elif card == "START":
            primaries = int(number(line, 1))
        elif card == "RANDOMIZ":
            seed = int(number(line, 2, 54217137))
        elif card == "USRBIN" and line[70:].strip() != "&":
            pending = [line]
        elif card == "USRBIN" and pending:
            first, score = pending[0], what(pending[0], 2)
            detectors.append(Usrbin(
                name=first[70:80].strip(), kind=int(number(first, 1)),
                score=CODES[score.upper()] if score.upper() in CODES else int(float(score)),
                unit=int(number(first, 3)),
                highs=(number(first, 4), number(first, 5), number(first, 6)),
                lows=(number(line, 1), number(line, 2), number(line, 3)),
                bins=(int(number(line, 4, 1)), int(number(line, 5, 1)),
                      int(number(line, 6, 1)))))
            pending = []
    return title, primaries, seed, detectors


def record(payload: bytes) -> bytes:
    """One Fortran unformatted sequential record."""
    return struct.pack("=i", len(payload)) + payload + struct.pack("=i", len(payload))


def usrbin_bytes(title: str, ncase: int, detectors: list[tuple[Usrbin, list[float]]]) -> bytes:
    """A binary USRBIN file as FLUKA writes it (the layout flair's ``Usrbin`` reads)."""
    stamp = time.strftime("%d/%m/%y %H:%M:%S", time.gmtime(0))
    out = record(struct.pack("=80s32sfiii", title.encode().ljust(80), stamp.encode().ljust(32),
                             float(ncase), ncase, 0, 1))
    for number_, (det, values) in enumerate(detectors, 1):
        widths = [(hi - lo) / n for lo, hi, n in zip(det.lows, det.highs, det.bins,
                                                       strict=True)]
        out += record(struct.pack(
            "=i10siiffifffifffififff", number_, det.name.encode().ljust(10), det.kind,
            det.score, det.lows[0], det.highs[0], det.bins[0], widths[0],
            det.lows[1], det.highs[1], det.bins[1], widths[1],
            det.lows[2], det.highs[2], det.bins[2], widths[2], 0, 0.0, 0.0, 0.0))
        out += record(struct.pack(f"={len(values)}f", *values))
    return out


def values_for(det: Usrbin, rng: random.Random, primaries: int) -> list[float]:
    """A depth profile per primary (GeV/g for DOSE), x fastest, noise ~ 1/sqrt(primaries)."""
    nx, ny, nz = det.bins
    lo, hi = det.lows[2], det.highs[2]
    peak = lo + 0.75 * (hi - lo)
    out = []
    for iz in range(nz):
        z = lo + (iz + 0.5) * (hi - lo) / nz
        clean = 0.0 if z > peak + 0.5 else 1e-3 * (1.0 + 3.0 * math.exp(-((z - peak) ** 2) / 0.8))
        out += [clean * (1.0 + rng.gauss(0.0, 1.0) / math.sqrt(max(primaries, 1)))
                for _ in range(nx * ny)]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "-M" or argv[1] != "1":
        print("usage: fake_rfluka.py -M 1 <input>.inp (one cycle)", file=sys.stderr)
        return 64
    given = Path(argv[2])
    inp = given if given.suffix == ".inp" else given.with_suffix(".inp")
    if not inp.exists():
        print(f"Input file {inp} does not exist", file=sys.stderr)
        return 1
    cycle = f"{inp.stem}001"
    here = Path.cwd()
    run = here / f"fluka_{os.getpid()}"
    run.mkdir()
    step_seconds = float(os.environ.get("FAKE_FLUKA_STEP_SECONDS", "0.05"))
    print("$TARGET_MACHINE = Linux")
    print(f"$FLUPRO = {Path(__file__).parent}")
    print(f"Running fluka in {run}", flush=True)
    print("\n======================= Running FLUKA for cycle # 1 =======================\n",
          flush=True)
    title, primaries, seed, detectors = read_input(inp)
    rng = random.Random(seed)
    with (run / f"{cycle}.out").open("w") as out:
        out.write(f"1 ****  FLUKA {VERSION} (stand-in for tests)  ****\n {title}\n")
        out.write(" Total time used for initialization:     0.1 s\n")
        out.write(f"1NUMBER OF BEAM NUMBER OF RUN     1    {primaries}\n")
        out.flush()
        done = 0
        for step in range(1, STEPS + 1):
            time.sleep(step_seconds)
            if os.environ.get("FAKE_FLUKA_FAIL") == "1" and step > STEPS // 2:
                out.write(" *** FLUKA stopped: stand-in failure ***\n")
                print("FLUKA stopped abnormally", file=sys.stderr, flush=True)
                return 1
            out.write(f" NEXT SEEDS:    {seed:X}       0       0       0       0       0\n")
            shown = max(done, 1)
            row = (f"{shown:>11}{primaries - shown:>22}{primaries - shown:>22}"
                   f"{'1.8515483E-04':>22}{'1.0000000E+30':>22}{44182 * step:>18}")
            out.write(row + "\n")
            out.flush()
            done = primaries * step // STEPS
        out.write(f"{primaries:>11}{0:>22}{0:>22}{'1.8515483E-04':>22}{'1.0000000E+30':>22}"
                  f"{0:>18}\n")
        out.write(" All cases handled by Feeder\n")
        out.write(f" * ======                    End of FLUKA {VERSION} run"
                  "                    ====== *\n")
    (run / f"{cycle}.err").write_text("")
    (run / f"{cycle}.log").write_text(f"FLUKA {VERSION} stand-in\n")
    units: dict[int, list[tuple[Usrbin, list[float]]]] = {}
    for det in detectors:
        if det.unit < 0:
            units.setdefault(-det.unit, []).append((det, values_for(det, rng, primaries)))
    for unit, dets in sorted(units.items()):
        (run / f"fort.{unit}").write_bytes(usrbin_bytes(title, primaries, dets))
    print("Removing links")
    print("Saving output and random number seed")
    for name in (f"{cycle}.out", f"{cycle}.err", f"{cycle}.log"):
        shutil.move(run / name, here / name)
    print("Saving additional files generated")
    for unit in sorted(units):
        target = here / f"{cycle}_fort.{unit}"
        print(f"     Moving fort.{unit} to {target}")
        shutil.move(run / f"fort.{unit}", target)
    shutil.rmtree(run)
    print("End of FLUKA run", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr, flush=True)
        sys.exit(130)
