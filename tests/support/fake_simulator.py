#!/usr/bin/env python3
"""A stand-in for the SHIELD-HIT12A binary, for the tests (standard library only).

Command line as the real one: ``fake_simulator.py -N <offset> <workdir>``,
``offset`` in 1..9999 (the file suffix has four digits). It reads NSTAT,
RNDSEED (and the test card FAIL) from ``<workdir>/beam.dat`` and the
``Geometry`` (Cyl, Mesh) and ``Output`` blocks of ``detect.dat``, prints
SHIELD-HIT-style lines (``Requested number of primaries NSTAT``, ``Primary
particle no. <k> ETR: ...``, ``Run time: ...``) to stdout and to
``shieldhit_<NNNN>.log``, and writes one ``<Filename stem>_<NNNN>.bdo`` per
Output block in the bdo2019 token format that pymchelper reads (the subset of
tokens described in ``reference/physics.md`` §4). Dose and fluence pages hold
cumulative sums over the primaries, as SH12A writes them (page_normalized 2),
LET and average energy per-primary values (page_normalized 3). The numbers are
a depth profile whose noise depends on (RNDSEED, offset) and on the number of
primaries, so a task always gives the same numbers and a merge can be checked.

Test hooks:

* ``beam.dat`` line ``FAIL`` -> exit 2 half-way; ``FAIL <offset> ...`` -> only for those offsets;
* ``beam.dat`` line ``HANG`` (or ``HANG <offset> ...``) -> no progress after the first step, and
  no end (a stuck run, for time limits and cancels);
* ``FAKE_SIM_STEP_SECONDS`` -> sleep per progress step (default 0.05; 10 steps);
* ``FAKE_SIM_CHILD=1`` -> start a helper child in the same process group (it only sleeps);
* ``FAKE_SIM_IGNORE_SIGINT=1`` -> ignore SIGINT, so only SIGKILL stops it;
* ``FAKE_SIM_KEEP_GOING=1`` -> carry on (writing its log file only) when its output is
  closed, as a simulator that logs to a file does when its parent is gone.
"""

from __future__ import annotations

import math
import os
import random
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STEPS = 10
VERSION = "1.1.0-stand-in"

#: Quantity keyword -> (detector type id, page_normalized, unit) in the bdo2019 tags.
QUANTITIES = {
    "dose": (5, 2, "MeV/g"), "dosegy": (39, 2, "Gy"), "fluence": (2, 2, "/cm^2"),
    "energy": (1, 2, "MeV"),
    "dlet": (6, 3, "keV/um"), "tlet": (7, 3, "keV/um"), "avgenergy": (8, 3, "MeV/nucl"),
}
#: Unit ids of sh_units.h: cm, radians.
CM, RADIAN = 10, 51


@dataclass
class Geometry:
    kind: str  # "CYL" or "MSH"
    name: str = ""
    start: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    stop: list[float] = field(default_factory=lambda: [1.0, 2 * math.pi, 1.0])
    bins: list[int] = field(default_factory=lambda: [1, 1, 1])


@dataclass
class Output:
    filename: str = ""
    geo: str = ""
    quantities: list[str] = field(default_factory=list)


def tokens_of(line: str) -> list[str]:
    return line.split("!", 1)[0].split("#", 1)[0].split()


def read_beam(workdir: Path) -> tuple[int, int, list[int] | None, list[int] | None]:
    """NSTAT, RNDSEED, and the offsets that must fail, and hang (``[]``: all, ``None``: none)."""
    nstat, rndseed = 0, 89736501
    fail: list[int] | None = None
    hang: list[int] | None = None
    for line in (workdir / "beam.dat").read_text().splitlines():
        tokens = tokens_of(line)
        if not tokens:
            continue
        if tokens[0].upper() == "NSTAT" and len(tokens) > 1:
            nstat = int(float(tokens[1]))
        elif tokens[0].upper() == "RNDSEED" and len(tokens) > 1:
            rndseed = int(tokens[1])
        elif tokens[0] == "FAIL":
            fail = [int(t) for t in tokens[1:]]
        elif tokens[0] == "HANG":
            hang = [int(t) for t in tokens[1:]]
    return nstat, rndseed, fail, hang


def read_detect(workdir: Path) -> tuple[dict[str, Geometry], list[Output]]:
    """The Geometry (Cyl, Mesh) and Output blocks of detect.dat."""
    geometries: dict[str, Geometry] = {}
    outputs: list[Output] = []
    block: Geometry | Output | None = None
    path = workdir / "detect.dat"
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        tokens = tokens_of(line)
        if not tokens:
            continue
        key = tokens[0].lower()
        if key == "geometry":
            kind = {"cyl": "CYL", "mesh": "MSH"}.get(tokens[1].lower() if len(tokens) > 1 else "")
            if kind is None:
                raise SystemExit(f"ERROR: detect.dat geometry {' '.join(tokens[1:])!r} is not "
                                 "supported by this stand-in (Cyl, Mesh)")
            block = Geometry(kind)
        elif key == "output":
            block = Output()
            outputs.append(block)
        elif key == "filter":
            block = None
        elif isinstance(block, Geometry) and key == "name":
            block.name = tokens[1]
            geometries[block.name] = block
        elif isinstance(block, Geometry) and key in ("r", "x", "y", "z"):
            axis = {"r": 0, "x": 0, "y": 1, "z": 2}[key]
            block.start[axis], block.stop[axis] = float(tokens[1]), float(tokens[2])
            block.bins[axis] = int(tokens[3])
        elif isinstance(block, Output) and key == "filename":
            block.filename = tokens[1]
        elif isinstance(block, Output) and key == "geo":
            block.geo = tokens[1]
        elif isinstance(block, Output) and key == "quantity":
            if tokens[1].lower() not in QUANTITIES:
                raise SystemExit(f"ERROR: quantity {tokens[1]!r} is not supported by this "
                                 f"stand-in ({', '.join(QUANTITIES)})")
            block.quantities.append(tokens[1].lower())
    for output in outputs:
        if output.geo not in geometries:
            raise SystemExit(f"ERROR: output {output.filename} uses unknown geometry "
                             f"{output.geo!r}")
    return geometries, outputs


# --- the bdo2019 token stream --------------------------------------------------------------

_PACK = {"<i4": "i", "<i8": "q", "<f8": "d"}


def token(tag: int, dtype: str, values: list[int] | list[float]) -> bytes:
    """One token: tag (u8), numpy dtype string (8 bytes), element count (u8), payload."""
    payload = struct.pack(f"<{len(values)}{_PACK[dtype]}", *values)
    return struct.pack("<Q", tag) + dtype.encode().ljust(8, b"\0") \
        + struct.pack("<Q", len(values)) + payload


def text_token(tag: int, text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", tag) + f"|S{len(raw) + 1}".encode().ljust(8, b"\0") \
        + struct.pack("<Q", 1) + raw + b"\0"


def bdo_bytes(geometry: Geometry, quantities: list[str], pages: list[list[float]],
              nstat: int, energy_mev: float = 150.0) -> bytes:
    """A bdo2019 file: header, run and beam tokens, the mesh, then one block per page."""
    out = b"xSH12A" + b"II" + VERSION.encode()[:16].ljust(16, b"\0")
    out += text_token(0x00, f"SHIELD-HIT12A {VERSION}")
    out += text_token(0x02, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(0)))
    out += token(0x05, "<i4", [2])                      # format: bdo2019
    out += token(0xAA00, "<i8", [nstat])                # rt_nstat
    out += token(0xCB00, "<i4", [2])                    # jpart0: proton
    out += token(0xCB0F, "<f8", [energy_mev])           # tmax0mev
    out += text_token(0xE000, geometry.kind)            # geometry_type
    out += text_token(0xE001, geometry.name)            # geometry_name
    out += token(0xE002, "<f8", geometry.start)         # geo_p_start
    out += token(0xE003, "<f8", geometry.stop)          # geo_q_stop
    out += token(0xE004, "<i8", geometry.bins)          # geo_n_bins
    units = [CM, RADIAN, CM] if geometry.kind == "CYL" else [CM, CM, CM]
    out += token(0xE00A, "<i4", units)                  # geo_unit_ids
    out += token(0xEE02, "<i4", [len(quantities)])      # number_of_pages
    for number, (quantity, values) in enumerate(zip(quantities, pages, strict=True)):
        detector_type, normalized, unit = QUANTITIES[quantity]
        out += token(0xDD30, "<i4", [detector_type])    # detector_type: starts the page
        out += token(0xDD31, "<i4", [number])           # page_number
        out += token(0xDD32, "<i4", [normalized])       # page_normalized
        out += text_token(0xDDBC, unit)                 # detector_unit
        out += token(0xDDBB, "<f8", values)             # data_block, Fortran order
    return out


def bin_centres(geometry: Geometry, axis: int) -> list[float]:
    lo, hi, n = geometry.start[axis], geometry.stop[axis], geometry.bins[axis]
    return [lo + (i + 0.5) * (hi - lo) / n for i in range(n)]


def per_primary(quantity: str, z: float, rng: random.Random, primaries: int) -> float:
    """A clean depth profile per primary, with noise shrinking as 1/sqrt(primaries)."""
    peak = 15.0
    if quantity in ("dose", "dosegy", "energy"):
        clean = 0.0 if z > peak + 0.5 else 1.0 + 3.0 * math.exp(-((z - peak) ** 2) / 0.8)
    elif quantity == "fluence":
        clean = max(0.0, 1.0 - z / (peak + 0.5))
    else:  # LET, average energy: rise towards the peak
        clean = 0.0 if z > peak + 0.5 else 1.0 / max(0.05, 1.0 - z / (peak + 1.0))
    return clean * (1.0 + rng.gauss(0.0, 1.0) / math.sqrt(max(primaries, 1)))


def pages_for(geometry: Geometry, quantities: list[str], rng: random.Random,
              nstat: int) -> list[list[float]]:
    """Each page's data block: Fortran order (first axis fastest), sums for normalized 2."""
    zs = bin_centres(geometry, 2)
    nx, ny, _ = geometry.bins
    pages = []
    for quantity in quantities:
        scale = nstat if QUANTITIES[quantity][1] == 2 else 1
        pages.append([per_primary(quantity, z, rng, nstat) * scale
                      for z in zs for _ in range(nx * ny)])
    return pages


def write_outputs(workdir: Path, offset: int, rndseed: int, nstat: int) -> None:
    geometries, outputs = read_detect(workdir)
    rng = random.Random(f"{rndseed}:{offset}")
    for output in outputs:
        geometry = geometries[output.geo]
        stem = Path(output.filename).stem
        data = bdo_bytes(geometry, output.quantities,
                         pages_for(geometry, output.quantities, rng, nstat), nstat)
        (workdir / f"{stem}_{offset:04d}.bdo").write_bytes(data)


# --- the run -------------------------------------------------------------------------------


def helper() -> int:
    """A child that only waits to be killed (it ignores nothing)."""
    while True:
        time.sleep(1)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--helper":
        return helper()
    if len(argv) != 3 or argv[0] != "-N" or not argv[1].isdigit():
        print("usage: fake_simulator.py -N <seed offset> <workdir>", file=sys.stderr)
        return 64
    offset, workdir = int(argv[1]), Path(argv[2])
    if not 1 <= offset <= 9999:
        print(f"ERROR: seed offset -N {offset} out of range 1..9999", file=sys.stderr)
        return 64
    if os.environ.get("FAKE_SIM_IGNORE_SIGINT") == "1":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get("FAKE_SIM_CHILD") == "1":
        subprocess.Popen([sys.executable, __file__, "--helper", str(workdir)])
    step_seconds = float(os.environ.get("FAKE_SIM_STEP_SECONDS", "0.05"))
    nstat, rndseed, fail, hang = read_beam(workdir)
    must_fail = fail is not None and (not fail or offset in fail)
    must_hang = hang is not None and (not hang or offset in hang)
    log = (workdir / f"shieldhit_{offset:04d}.log").open("w")

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
    say(f"SHIELD-HIT12A {VERSION}")
    say(f"Random seed RNDSEED                      : {rndseed}")
    say(f"Random seed offset (-N)                  : {offset}")
    say(f"Requested number of primaries NSTAT      :  {nstat}")
    say("Starting transport")
    steps = min(STEPS, nstat) or 1
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        if must_fail and step > steps // 2:
            print(f"ERROR: FAIL card in beam.dat (offset {offset})", file=sys.stderr,
                  flush=True)
            return 2
        done = nstat * step // steps
        left = round(step_seconds * (steps - step))
        say(f"Primary particle no. {done:>10} ETR: {left // 3600:>2} hour(s) "
            f"{left % 3600 // 60:>2} minute(s) {left % 60:>2} second(s)")
        while must_hang:
            time.sleep(1)
    write_outputs(workdir, offset, rndseed, nstat)
    say(f"Saved all {len(read_detect(workdir)[1])} estimator(s)")
    took = round(time.monotonic() - started)
    say(f"Run time: {took // 3600} hour(s) {took % 3600 // 60} minute(s) {took % 60} second(s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr, flush=True)
        sys.exit(130)
