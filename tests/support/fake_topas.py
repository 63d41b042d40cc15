#!/usr/bin/env python3
"""A stand-in for the TOPAS executable, for the tests (standard library only).

Command line as the real one: ``fake_topas.py <parameter file>``, run in the
directory of the parameter file. It reads the parameters it needs
(``type:Name = value`` lines of the file and of its ``includeFile``s):
``Ts/Seed``, ``So/<source>/NumberOfHistoriesInRun``,
``Ts/ShowHistoryCountAtInterval`` (TOPAS's default 100) and, for every scorer
``Sc/<name>/...``: Quantity, Component, OutputFile, OutputType (only "csv"
is written), X/Y/ZBins and Report (default "Sum"), with the scored box's
half-lengths ``Ge/<component>/HLX|HLY|HLZ``.

While it runs it prints, every interval, TOPAS's history count line
``Begin processing for Run: 0, History: <k>`` (``TsEventAction``). At the end
each scorer writes ``<OutputFile>.csv`` with TOPAS's header lines::

    # TOPAS Version: 3.9
    # Parameter File: topas_config.txt
    # Results for scorer: Dose
    # Scored in component: Phantom
    # X in 1 bin  of 20 cm
    # Y in 1 bin  of 20 cm
    # Z in 40 bins of 0.5 cm
    # DoseToMedium ( Gy ) : Sum   Mean   Standard_Deviation

then a row ``ix, iy, iz, <one value per reported statistic>`` per bin, z
fastest (a scorer with a single bin has no axis lines and no indices, as
TOPAS writes it). Values are a depth profile per history whose noise depends
on the seed and on the number of histories.

Test hook: ``FAKE_TOPAS_STEP_SECONDS`` (sleep per tenth of the histories, default 0.05).
"""

from __future__ import annotations

import math
import os
import random
import re
import sys
import time
from pathlib import Path

VERSION = "3.9"
PARAMETER = re.compile(r"^\s*(\w+):(\S+?)\s*=\s*(.*?)\s*(?:#.*)?$")
INCLUDE = re.compile(r"^\s*includeFile\s*=\s*(.+?)\s*(?:#.*)?$", re.IGNORECASE)
LENGTH_CM = {"mm": 0.1, "cm": 1.0, "m": 100.0, "um": 1e-4}
UNITS = {"DoseToMedium": "Gy", "DoseToWater": "Gy", "EnergyDeposit": "MeV",
         "Fluence": "/mm2"}


def read_parameters(path: Path, into: dict[str, tuple[str, str]]
                    ) -> dict[str, tuple[str, str]]:
    """Name in lower case -> (name, raw value); included files first, so the including
    file wins, as in TOPAS."""
    lines = path.read_text().splitlines()
    for line in lines:
        include = INCLUDE.match(line)
        if include:
            for name in include.group(1).split():
                read_parameters(path.parent / name, into)
    for line in lines:
        match = PARAMETER.match(line)
        if match and not line.lstrip().startswith("#"):
            into[match.group(2).lower()] = (match.group(2), match.group(3))
    return into


def strings(raw: str) -> list[str]:
    return re.findall(r'"([^"]*)"', raw)


def length_cm(raw: str) -> float:
    value, unit = raw.split()[:2]
    return float(value) * LENGTH_CM[unit]


def profile(z: float, depth: float, rng: random.Random, histories: int) -> float:
    peak = 0.75 * depth
    clean = 0.0 if z > peak + 0.5 else 1e-12 * (1.0 + 3.0 * math.exp(-((z - peak) ** 2) / 0.8))
    return clean * (1.0 + rng.gauss(0.0, 1.0) / math.sqrt(max(histories, 1)))


def write_scorer(name: str, params: dict[str, tuple[str, str]], parameter_file: str,
                 rng: random.Random, histories: int) -> None:
    def get(key: str, default: str = "") -> str:
        return params.get(f"sc/{name}/{key}".lower(), ("", default))[1]

    if strings(get("OutputType", '"csv"'))[0].lower() != "csv":
        return
    quantity = strings(get("Quantity"))[0]
    component = strings(get("Component"))[0]
    bins = [int(get(f"{axis}Bins", "1")) for axis in "XYZ"]
    half = [length_cm(params[f"ge/{component}/hl{axis}".lower()][1]) for axis in "xyz"]
    report = strings(get("Report", '1 "Sum"'))
    lines = [f"# TOPAS Version: {VERSION}", f"# Parameter File: {parameter_file}",
             f"# Results for scorer: {name}", f"# Scored in component: {component}"]
    binned = bins != [1, 1, 1]
    if binned:
        for axis, n, h in zip("XYZ", bins, half, strict=True):
            lines.append(f"# {axis} in {n} {'bin ' if n == 1 else 'bins'} of {2 * h / n:g} cm")
    unit = UNITS.get(quantity)
    lines.append(f"# {quantity}{f' ( {unit} )' if unit else ''} : " + "   ".join(report) + "   ")
    for ix in range(bins[0]):
        for iy in range(bins[1]):
            for iz in range(bins[2]):
                z = (iz + 0.5) * 2 * half[2] / bins[2]
                mean = profile(z, 2 * half[2], rng, histories)
                stats = {"sum": mean * histories, "mean": mean, "standard_deviation": 0.1 * mean,
                         "histories": histories, "count_in_bin": histories}
                values = ", ".join(f"{stats[r.lower()]:.16g}" for r in report)
                lines.append(f"{ix}, {iy}, {iz}, {values}" if binned else values)
    output = strings(get("OutputFile", f'"{name}"'))[0]
    Path(f"{output}.csv").write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: fake_topas.py <parameter file>", file=sys.stderr)
        return 64
    parameter_file = Path(argv[0])
    params = read_parameters(parameter_file, {})
    seed = int(params.get("ts/seed", ("", "1"))[1])
    histories = sum(int(v) for k, (_, v) in params.items()
                    if k.startswith("so/") and k.endswith("/numberofhistoriesinrun"))
    interval = int(params.get("ts/showhistorycountatinterval", ("", "100"))[1])
    step_seconds = float(os.environ.get("FAKE_TOPAS_STEP_SECONDS", "0.05"))
    print(f"TOPAS Version: {VERSION} (stand-in for tests)")
    print(f"Parameter file: {parameter_file}")
    print(f"Random seed: {seed}", flush=True)
    tenth = max(1, histories // 10)
    for history in range(histories):
        if history % tenth == 0:
            time.sleep(step_seconds)
        if interval and history % interval == 0:
            print(f"Begin processing for Run: 0, History: {history}", flush=True)
    rng = random.Random(seed)
    scorers = sorted(name.split("/")[1] for key, (name, _) in params.items()
                     if key.startswith("sc/") and key.endswith("/quantity"))
    for name in scorers:
        write_scorer(name, params, parameter_file.name, rng, histories)
    print(f"Elapsed times for this run:  User={0.1:.1f}s Real={0.1:.1f}s Sys=0s")
    print("TOPAS is exiting normally.", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr, flush=True)
        sys.exit(130)
