"""Geant4: an application binary run as ``<exe> run.mac``, scoring with command-based meshes.

Geant4 is a toolkit, not a program: the operator configures an application
built against it (``SIMJOBS_SIM_GEANT4_EXE``) that, like the Geant4 examples,
takes a macro file as its only argument and enables command-based scoring
(``G4ScoringManager::GetScoringManager()`` in its ``main``). YAPTIDE's
converter writes ``run.mac`` and ``geometry.gdml`` for such an application.

Input. ``run.mac``, or the job's only ``*.mac`` written under that name, is
the main macro; other files (GDML geometry, further macros) as they come.

* ``/run/beamOn N`` (exactly one, in the main macro) is the number of
  primaries; the task's share is written there.
* ``/random/setSeeds s1 s2`` is put just before it (any other is dropped):
  ``s1`` = 1 + seed mod (2**31 - 1) and ``s2`` a second number derived from the
  seed, both positive 31-bit, as some engines require non-zero seeds.
* ``/run/printProgress K`` (K = a hundredth of the histories) likewise, so
  Geant4 prints ``--> Event <k> starts.`` as the run goes (a multi-threaded
  run's workers print ``G4WT<n> > --> Event <k> starts with initial seeds
  (...).``, with event numbers shared by all threads); ``k`` counts from 0.

Outputs: the documented layout. Every ``/score/dumpQuantityToFile <mesh>
<quantity> <file>`` (or ``/score/dumpAllQuantitiesToFile <mesh> <file>``) after
the beamOn writes Geant4's command-based scoring CSV::

    # mesh name: <mesh>
    # primitive scorer name: <quantity>
    # iX, iY, iZ, total(value) [<unit>], total(val^2), entry
    <ix>,<iy>,<iz>,<sum over events>,<sum of squares>,<entries>

with ``iz`` varying fastest. The mesh must be a ``/score/create/boxMesh``
(half-sizes from ``/score/mesh/boxSize``, bins from ``/score/mesh/nBin``,
centre from ``/score/mesh/translate/xyz``), read from the same macro. Each
mesh becomes one estimator named after it, each dumped quantity one page:
values per primary (the sum divided by N, unit ``<unit>/prim``), flattened with
X fastest like every other estimator, axes ``Position (X|Y|Z)`` in cm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from services.simulators.base import Progress, main_input, renamed_main
from services.simulators.errors import BadInput, CollectError
from services.simulators.estimators import json_values

#: The main macro's name in the work directory (and the converter's).
MAIN_MACRO = "run.mac"
_MAIN = {"suffix": ".mac", "preferred": MAIN_MACRO, "simulator": "Geant4"}

#: Geant4 length units accepted in scoring commands, in cm.
LENGTH_UNITS = {"nm": 1e-7, "um": 1e-4, "mm": 0.1, "cm": 1.0, "m": 100.0, "km": 1e5}

#: ``G4WT<n> > `` prefixes what a worker thread of a multi-threaded run prints.
_PROGRESS = re.compile(r"^(?:G4WT\d+ > )?--> Event (\d+) starts\b")
_VALUE_UNIT = re.compile(r"total\(value\)\s*(?:\[([^\]]*)\])?")


def _commands(macro: str) -> list[tuple[int, list[str]]]:
    """(line index, tokens) of every command line of a macro (``#`` starts a comment)."""
    found = []
    for i, line in enumerate(macro.splitlines()):
        tokens = line.split("#", 1)[0].split()
        if tokens and tokens[0].startswith("/"):
            found.append((i, tokens))
    return found


def beam_on(macro: str) -> tuple[int, int]:
    """(line index, N) of the macro's one ``/run/beamOn N``.

    Raises:
        BadInput: no beamOn, several, or N not a non-negative integer.
    """
    runs = [(i, tokens) for i, tokens in _commands(macro) if tokens[0] == "/run/beamOn"]
    if not runs:
        raise BadInput("the Geant4 macro has no /run/beamOn command")
    if len(runs) > 1:
        raise BadInput(f"the Geant4 macro has {len(runs)} /run/beamOn commands; one run "
                       "per job can be split over tasks")
    ((index, tokens),) = runs
    if len(tokens) < 2 or not tokens[1].isdigit():
        raise BadInput(f"/run/beamOn needs a number of events, got {' '.join(tokens)[:60]!r}")
    return index, int(tokens[1])


def geant4_seeds(seed: int) -> tuple[int, int]:
    """The two positive seeds of ``/random/setSeeds`` for a task seed."""
    return 1 + seed % (2**31 - 1), 1 + (seed * 2_654_435_761) % (2**31 - 1)


@dataclass
class Mesh:
    """A command-based scoring box mesh, as its macro commands define it (lengths in cm)."""

    name: str
    half: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bins: tuple[int, int, int] = (1, 1, 1)
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quantities: dict[str, str] = field(default_factory=dict)  # name -> unit given


def _length(values: list[str], unit: str, command: str) -> tuple[float, float, float]:
    if len(values) != 3 or unit not in LENGTH_UNITS:
        raise BadInput(f"{command} needs three numbers and a length unit "
                       f"({', '.join(LENGTH_UNITS)})")
    try:
        x, y, z = (float(v) * LENGTH_UNITS[unit] for v in values)
    except ValueError:
        raise BadInput(f"{command}: {' '.join(values)!r} are not numbers") from None
    return x, y, z


def scoring(macro: str) -> tuple[dict[str, Mesh], list[tuple[str, str | None, str]]]:
    """The macro's meshes and its dumps (mesh, quantity or None for all, file name).

    Raises:
        BadInput: a mesh that is not a box, or a scoring command that cannot be read.
    """
    meshes: dict[str, Mesh] = {}
    dumps: list[tuple[str, str | None, str]] = []
    current: Mesh | None = None
    for _, tokens in _commands(macro):
        command, args = tokens[0], tokens[1:]
        if command == "/score/create/boxMesh" and args:
            current = meshes[args[0]] = Mesh(args[0])
        elif command.startswith("/score/create/"):
            raise BadInput(f"{command}: only box meshes (/score/create/boxMesh) can be "
                           "collected")
        elif current is not None and command == "/score/mesh/boxSize":
            current.half = _length(args[:3], args[3] if len(args) > 3 else "mm", command)
        elif current is not None and command == "/score/mesh/translate/xyz":
            current.centre = _length(args[:3], args[3] if len(args) > 3 else "mm", command)
        elif current is not None and command == "/score/mesh/nBin":
            if len(args) < 3 or not all(a.isdigit() and int(a) > 0 for a in args[:3]):
                raise BadInput(f"/score/mesh/nBin needs three positive integers, got {args}")
            current.bins = (int(args[0]), int(args[1]), int(args[2]))
        elif current is not None and command.startswith("/score/quantity/") and args:
            current.quantities[args[0]] = args[1] if len(args) > 1 else ""
        elif command == "/score/close":
            current = None
        elif command == "/score/dumpQuantityToFile" and len(args) >= 3:
            dumps.append((args[0], args[1], args[2]))
        elif command == "/score/dumpAllQuantitiesToFile" and len(args) >= 2:
            dumps.append((args[0], None, args[1]))
    return meshes, dumps


def read_scoring_csv(path: Path, bins: tuple[int, int, int]
                     ) -> dict[str, tuple[str, np.ndarray]]:
    """Quantity name -> (unit, sums in C order of (nx, ny, nz)) of one scoring dump.

    Raises:
        CollectError: the file is missing or not in the layout above.
    """
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CollectError(f"Geant4 scoring output {path.name} cannot be read: {exc}") from exc
    blocks: dict[str, tuple[str, np.ndarray]] = {}
    quantity: str | None = None
    unit = ""
    for number, line in enumerate(lines, 1):
        if line.startswith("# primitive scorer name:"):
            quantity = line.split(":", 1)[1].strip()
            unit = ""
            blocks[quantity] = (unit, np.zeros(bins))
        elif line.startswith("#"):
            found = _VALUE_UNIT.search(line)
            if found and quantity is not None:
                unit = found.group(1) or ""
                blocks[quantity] = (unit, blocks[quantity][1])
        elif line.strip():
            if quantity is None:
                raise CollectError(f"{path.name}:{number}: data before a "
                                   "'# primitive scorer name:' line")
            try:
                cells = [c.strip() for c in line.split(",")]
                ix, iy, iz = (int(c) for c in cells[:3])
                blocks[quantity][1][ix, iy, iz] = float(cells[3])
            except (ValueError, IndexError) as exc:
                raise CollectError(f"{path.name}:{number}: not a scoring row "
                                   f"'ix,iy,iz,value,...' within {bins} bins: "
                                   f"{line[:80]!r}") from exc
    if not blocks:
        raise CollectError(f"Geant4 scoring output {path.name} has no "
                           "'# primitive scorer name:' block")
    return blocks


def _axes(mesh: Mesh) -> list[dict[str, Any]]:
    axes = []
    for name, half, n, centre in zip("XYZ", mesh.half, mesh.bins, mesh.centre, strict=True):
        if n > 1:
            width = 2 * half / n
            centres = centre - half + width * (np.arange(n) + 0.5)
            axes.append({"name": f"Position ({name})", "unit": "cm",
                         "values": json_values(centres)})
    return axes


@dataclass(frozen=True)
class Geant4:
    """A Geant4 application (module docstring)."""

    executable: str
    sim_type: str = "geant4"

    @staticmethod
    def input_primaries(input_files: Mapping[str, str]) -> int:
        """N of the main macro's ``/run/beamOn N``.

        Raises:
            BadInput: no main macro, or no single usable beamOn in it.
        """
        return beam_on(input_files[main_input(input_files, **_MAIN)])[1]

    def task_files(self, input_files: Mapping[str, str], primaries: int,
                   seed: int) -> dict[str, str]:
        files = renamed_main(input_files, main_input(input_files, **_MAIN), MAIN_MACRO)
        macro = files[MAIN_MACRO]
        scoring(macro)  # refuse meshes that cannot be collected before running
        index, _ = beam_on(macro)
        lines = macro.splitlines()
        extra = lines[index].split("#", 1)[0].split()[2:]  # beamOn's macro and nSelect
        dropped = {i for i, tokens in _commands(macro)
                   if tokens[0] in ("/random/setSeeds", "/run/printProgress")}
        first, second = geant4_seeds(seed)
        out = [line for i, line in enumerate(lines[:index]) if i not in dropped]
        out += [f"/random/setSeeds {first} {second}",
                f"/run/printProgress {max(1, primaries // 100)}",
                " ".join(["/run/beamOn", str(primaries), *extra])]
        out += [line for i, line in enumerate(lines[index + 1:], index + 1) if i not in dropped]
        files[MAIN_MACRO] = "\n".join(out) + "\n"
        return files

    def command(self, workdir: PurePath, seed: int) -> list[str]:
        return [self.executable, MAIN_MACRO]

    def parse_progress(self, line: str) -> Progress | None:
        match = _PROGRESS.match(line.strip())
        return Progress(int(match.group(1)), None, None) if match else None

    def collect(self, workdir: Path) -> dict[str, Any]:
        try:
            macro = (workdir / MAIN_MACRO).read_text()
            _, primaries = beam_on(macro)
            meshes, dumps = scoring(macro)
        except (OSError, BadInput) as exc:
            raise CollectError(f"the task's macro cannot be read back: {exc}") from exc
        if not dumps:
            raise CollectError("the Geant4 macro dumps no scoring mesh "
                               "(/score/dumpQuantityToFile)")
        pages: dict[str, list[dict[str, Any]]] = {}
        for mesh_name, wanted, file_name in dumps:
            mesh = meshes.get(mesh_name)
            if mesh is None:
                raise CollectError(f"the macro dumps mesh {mesh_name!r}, which it does not "
                                   "create with /score/create/boxMesh")
            blocks = read_scoring_csv(workdir / file_name, mesh.bins)
            names = list(blocks) if wanted is None else [wanted]
            for quantity in names:
                if quantity not in blocks:
                    raise CollectError(f"{file_name} has no block for quantity {quantity!r}")
                unit, sums = blocks[quantity]
                per_primary = sums.ravel(order="F") / max(primaries, 1)
                mesh_pages = pages.setdefault(mesh_name, [])
                page: dict[str, Any] = {
                    "metadata": {"page_number": str(len(mesh_pages)), "name": quantity,
                                 "unit": f"{unit}/prim", "file": file_name},
                    "dimensions": sum(n > 1 for n in mesh.bins),
                    "data": {"name": quantity, "unit": f"{unit}/prim",
                             "values": json_values(per_primary)},
                }
                for i, axis in enumerate(_axes(mesh), 1):
                    page[f"axis_dim{i}"] = axis
                mesh_pages.append(page)
        estimators = [{"name": name, "pages": mesh_pages,
                       "metadata": {"file_format": "geant4_scoring_csv", "geotyp": "BOX",
                                    "geo_name": name, "geo_units": "cm;cm;cm",
                                    "number_of_primaries": str(primaries),
                                    "page_count": str(len(mesh_pages))}}
                      for name, mesh_pages in pages.items()]
        return {"estimators": estimators}
