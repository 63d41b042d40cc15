#!/usr/bin/env python3
"""A stand-in for a Geant4 application, for the tests (standard library only).

Command line as a Geant4 example's: ``fake_geant4.py <macro>``, run in the
directory of the macro. It executes the macro's commands that matter here:
``/random/setSeeds``, ``/run/printProgress``, ``/run/beamOn N``, the
command-based scoring commands ``/score/create/boxMesh``,
``/score/mesh/boxSize``, ``/score/mesh/nBin``, ``/score/quantity/<kind> <name>
[unit]``, ``/score/close`` and, after the run, ``/score/dumpQuantityToFile <mesh>
<quantity> <file>`` and ``/score/dumpAllQuantitiesToFile <mesh> <file>``; other
commands are accepted and ignored, unknown scoring commands refused.

It prints Geant4's banner, ``--> Event <k> starts.`` every printProgress events
(``G4RunManager::GenerateEvent``) and the run summary, and the dumps write
Geant4's scoring CSV (``G4VScoreWriter``)::

    # mesh name: <mesh>
    # primitive scorer name: <quantity>
    # iX, iY, iZ, total(value) [<unit>], total(val^2), entry
    0,0,0,<sum over events>,<sum of squares>,<entries>

one row per bin, z fastest. Values are a depth profile (summed over the events)
whose noise depends on the seeds and the number of events.

Test hook: ``FAKE_G4_STEP_SECONDS`` (sleep per tenth of the events, default 0.05).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_UNITS = {"doseDeposit": "Gy", "energyDeposit": "MeV", "cellFlux": "percm2",
                 "passageCellFlux": "percm2", "cellCharge": "e+", "nOfStep": ""}


@dataclass
class Mesh:
    name: str
    bins: tuple[int, int, int] = (1, 1, 1)
    quantities: dict[str, str] = field(default_factory=dict)


def dump(mesh: Mesh, quantities: list[str], path: Path, rng: random.Random, events: int) -> None:
    nx, ny, nz = mesh.bins
    lines = [f"# mesh name: {mesh.name}"]
    for quantity in quantities:
        unit = mesh.quantities[quantity]
        lines += [f"# primitive scorer name: {quantity}",
                  f"# iX, iY, iZ, total(value) {f'[{unit}]' if unit else ''}, total(val^2), "
                  "entry"]
        peak = 0.75 * nz
        for ix in range(nx):
            for iy in range(ny):
                for iz in range(nz):
                    z = iz + 0.5
                    clean = 0.0 if z > peak + 0.5 else 2e-11 * (
                        1.0 + 3.0 * math.exp(-((z - peak) ** 2) / (0.02 * nz * nz)))
                    per_event = clean * (1.0 + rng.gauss(0.0, 1.0) / math.sqrt(max(events, 1)))
                    total = per_event * events
                    lines.append(f"{ix},{iy},{iz},{total:.16g},{total * per_event:.16g},"
                                 f"{events if total else 0}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: fake_geant4.py <macro>", file=sys.stderr)
        return 64
    step_seconds = float(os.environ.get("FAKE_G4_STEP_SECONDS", "0.05"))
    print("*" * 62)
    print(" Geant4 version Name: geant4-11-02-patch-01 (stand-in for tests)")
    print("                       Copyright : Geant4 Collaboration")
    print("*" * 62, flush=True)
    seeds = (1, 2)
    progress = 0
    events = 0
    meshes: dict[str, Mesh] = {}
    current: Mesh | None = None
    for number, line in enumerate(Path(argv[0]).read_text().splitlines(), 1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        command, args = tokens[0], tokens[1:]
        if command == "/random/setSeeds":
            seeds = (int(args[0]), int(args[1]))
        elif command == "/run/printProgress":
            progress = int(args[0])
        elif command == "/score/create/boxMesh":
            current = meshes[args[0]] = Mesh(args[0])
        elif command == "/score/mesh/nBin" and current is not None:
            current.bins = (int(args[0]), int(args[1]), int(args[2]))
        elif command.startswith("/score/quantity/") and current is not None:
            kind = command.rsplit("/", 1)[1]
            current.quantities[args[0]] = args[1] if len(args) > 1 else DEFAULT_UNITS[kind]
        elif command == "/score/close":
            current = None
        elif command == "/run/beamOn":
            events = int(args[0])
            print("### Run 0 starts.", flush=True)
            tenth = max(1, events // 10)
            for event in range(events):
                if event % tenth == 0:
                    time.sleep(step_seconds)
                if progress and event % progress == 0:
                    print(f"--> Event {event} starts.", flush=True)
            print(" Run terminated.\n Run Summary\n"
                  f"  Number of events processed : {events}\n  User=0.1s Real=0.1s Sys=0s",
                  flush=True)
        elif command in ("/score/dumpQuantityToFile", "/score/dumpAllQuantitiesToFile"):
            mesh = meshes[args[0]]
            wanted = [args[1]] if command == "/score/dumpQuantityToFile" else list(mesh.quantities)
            rng = random.Random(f"{seeds}:{args[0]}:{','.join(wanted)}")
            target = args[2] if command == "/score/dumpQuantityToFile" else args[1]
            dump(mesh, wanted, Path(target), rng, events)
        elif command.startswith("/score/") and command not in ("/score/mesh/boxSize",
                                                               "/score/mesh/translate/xyz"):
            print(f"command <{line.strip()}> not found (line {number})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr, flush=True)
        sys.exit(130)
