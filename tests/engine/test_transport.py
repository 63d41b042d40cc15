"""Whole-run properties: energy conservation, lateral spread, statistics of merged runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.engine.nuclear import LOCAL_FRACTION
from services.simulators.merge import TaskResult, merge_results
from tests.engine.helpers import (
    beam,
    depth_dose_detect,
    distal_r80,
    estimator,
    files,
    page_arrays,
    pstar,
    pstar_range,
    run_in_process,
)

#: A 10 cm water slab (wide) in vacuum, wrapped in the black hole: protons pass through.
SLAB = """    0    0          10 cm water slab
  RPP    1     -25.0      25.0     -25.0      25.0       0.0      10.0
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
#: An Energy detector a little larger than the slab (scoring points lie on the steps).
SLAB_ENERGY = ("Geometry Mesh\n Name all\n X -26 26 1\n Y -26 26 1\n Z -0.5 10.5 11\n"
               "Output\n Filename energy.bdo\n Geo all\n Quantity Energy\n")


@pytest.mark.parametrize("nuclear", [False, True])
def test_energy_is_conserved(nuclear: bool, tmp_path: Path) -> None:
    """Scored deposit + escaping energy (+ nuclear secondaries not transported) = beam."""
    extra = "" if nuclear else "NUCRE 0\n"
    summary = run_in_process(files(beam(150.0, 2000, extra), SLAB_ENERGY, geo=SLAB),
                             tmp_path, seed=5)
    balance = summary.balance
    per_primary = summary.primaries
    scored = sum(estimator(tmp_path, "energy")["pages"][0]["data"]["values"])  # MeV/primary
    escaped = balance.escaped / per_primary
    lost = balance.nuclear_not_transported / per_primary
    assert balance.beam / per_primary == pytest.approx(150.0)
    assert scored + escaped + lost == pytest.approx(150.0, rel=0.01)
    assert scored == pytest.approx(balance.deposited / per_primary, rel=1e-9)
    # Independent check of the split: protons leave the slab with the PSTAR residual
    # energy E(R0 - 10 cm); with nuclear removal only the survivors do.
    reference = pstar("WATER_LIQUID")
    grid = np.geomspace(1.0, 150.0, 3000)
    residual = float(np.interp(pstar_range(150.0) - 10.0,
                               reference.calculate_csda_ranges(grid), grid))
    if not nuclear:
        assert lost == 0.0
        assert escaped == pytest.approx(residual, rel=0.02)
    else:
        survivors = escaped / residual
        assert 0.87 < survivors < 0.94  # ~0.9 %/cm over 10 cm
        # The removed primaries' energy is split as documented.
        assert lost > 0
        removed = lost / (1 - LOCAL_FRACTION)
        assert removed == pytest.approx((1 - survivors) * 100.0, rel=0.35)


def test_everything_stops_in_a_thick_phantom(tmp_path: Path) -> None:
    """Without nuclear removal a 150 MeV beam deposits all its energy in 40 cm of water."""
    summary = run_in_process(files(beam(150.0, 1000, "NUCRE 0\n"),
                                   depth_dose_detect(20.0, 100)), tmp_path, seed=9)
    assert summary.balance.escaped == 0.0
    assert summary.balance.deposited == pytest.approx(summary.balance.beam, rel=1e-9)


def highland_sigma_x(energy: float, depth: float) -> float:
    """Lateral rms of a pencil beam at ``depth`` in water from the Highland formula alone.

    theta0^2(z) is the generalised Highland formula with the energy along the path
    from PSTAR ranges; the scattering power T = d theta0^2 / dz is folded with the
    lever arm (Fermi-Eyges): sigma_x^2 = integral T(z') (depth - z')^2 dz'.
    """
    reference = pstar("WATER_LIQUID")
    mass = 938.272
    x0 = 36.08  # radiation length of water, g/cm^2 (PDG)
    grid = np.geomspace(0.5, energy, 4000)
    ranges = reference.calculate_csda_ranges(grid)
    z = np.linspace(0.0, depth, 4001)
    e = np.interp(pstar_range(energy) - z, ranges, grid)
    pv = e * (e + 2 * mass) / (e + mass)
    beta2 = 1 - (mass / (e + mass)) ** 2
    inverse = np.concatenate(([0.0], np.cumsum(0.5 * (pv[1:] ** -2 + pv[:-1] ** -2)
                                               * np.diff(z) / x0)))
    log_term = 1 + 0.038 * np.log(np.maximum(z, 1e-9) / x0 / beta2)
    theta2 = 13.6**2 * log_term**2 * inverse
    power = np.gradient(theta2, z)
    return float(np.sqrt(np.trapezoid(power * (depth - z) ** 2, z)))


@pytest.mark.parametrize(("energy", "depth"), [(150.0, 10.0), (70.0, 3.0)])
def test_lateral_spread_follows_highland(energy: float, depth: float, tmp_path: Path) -> None:
    detect = (f"Geometry Mesh\n Name m\n X -3 3 300\n Y -20 20 1\n"
              f" Z {depth - 0.05} {depth + 0.05} 1\n"
              "Output\n Filename lat.bdo\n Geo m\n Quantity Fluence\n")
    run_in_process(files(beam(energy, 3000, "NUCRE 0\n"), detect), tmp_path, seed=21)
    x, fluence = page_arrays(estimator(tmp_path, "lat"))
    sigma = float(np.sqrt((fluence * x * x).sum() / fluence.sum()))
    expected = highland_sigma_x(energy, depth)
    assert sigma == pytest.approx(expected, rel=0.10), (sigma, expected)
    assert abs((fluence * x).sum() / fluence.sum()) < 0.2 * sigma  # centred on the axis


def test_merged_halves_agree_with_one_run(tmp_path: Path) -> None:
    """Two runs of N/2 with different seeds, merged by the runner's merge, match one of N."""
    inputs = files(beam(150.0, 4000), depth_dose_detect(17.0, 85))
    single = run_in_process(inputs, tmp_path / "single", seed=1)
    halves = [run_in_process(files(beam(150.0, 2000), depth_dose_detect(17.0, 85)),
                             tmp_path / f"half{seed}", seed=seed) for seed in (2, 3)]
    assert single.primaries == 4000 and all(h.primaries == 2000 for h in halves)
    one = estimator(tmp_path / "single", "dd")
    parts = [estimator(tmp_path / f"half{seed}", "dd") for seed in (2, 3)]
    merged = merge_results([TaskResult(2000, {"estimators": [p]}) for p in parts])
    page = merged["estimators"][0]["pages"][0]
    m = np.asarray(page["data"]["values"])
    a, b = (np.asarray(p["pages"][0]["data"]["values"]) for p in parts)
    assert np.allclose(m, (a + b) / 2)
    assert not np.array_equal(a, b)  # different seeds, different histories
    s = np.asarray(one["pages"][0]["data"]["values"])
    se_single = np.asarray(one["pages"][0]["data"]["error"])
    se_a, se_b = (np.asarray(p["pages"][0]["data"]["error"]) for p in parts)
    se_merged = np.sqrt(se_a**2 + se_b**2) / 2
    scored = s > 0
    z = (m[scored] - s[scored]) / np.sqrt(se_single[scored] ** 2 + se_merged[scored] ** 2)
    assert scored.sum() > 70
    assert np.mean(np.abs(z) < 3) >= 0.95, z
    assert np.mean(z**2) < 2.0, z  # the errors are the right size, not just large
    assert np.mean(z**2) > 0.3, z


def test_geometry_from_the_editor_converter(tmp_path: Path) -> None:
    """The YAPTIDE converter's default project (water cylinder, vacuum, black hole)."""
    geo = ("\n    0    0          Proton pencil beam in water\n"
           "  RCC    1       0.0       0.0       0.0       0.0       0.0      20.0\n"
           "                 5.0\n"
           "  RCC    2       0.0       0.0      -0.5       0.0       0.0      22.0\n"
           "                 5.5\n"
           "  RCC    3       0.0       0.0      -1.5       0.0       0.0      24.0\n"
           "                 6.0\n"
           "  END\n  001          +1\n  002          +2     -1\n  003          -2     +3     -1\n"
           "  END\n    1    2    3\n    1 1000    0\n")
    summary = run_in_process(files(beam(150.0, 1000), depth_dose_detect(20.0, 200, 5.0),
                                   geo=geo), tmp_path, seed=4)
    z, dose = page_arrays(estimator(tmp_path, "dd"))
    assert abs(z[np.argmax(dose)] - 15.5) < 0.6
    # Scattered protons leave the 5 cm radius cylinder rarely; none is lost silently.
    b = summary.balance
    assert b.deposited + b.escaped + b.nuclear_not_transported == pytest.approx(b.beam)


#: Water from z = 0 with a 2 cm compact-bone slab (a BOX) at z = 5-7 cm; the beam starts
#: 5 cm upstream in vacuum.
BONE_SLAB = """    0    0          bone slab in water, beam from vacuum
  RPP    1     -20.0      20.0     -20.0      20.0       0.0      40.0
  BOX    2     -20.0     -20.0       5.0      40.0       0.0       0.0
                 0.0      40.0       0.0       0.0       0.0       2.0
  RPP    3     -30.0      30.0     -30.0      30.0     -10.0      50.0
  RPP    4     -40.0      40.0     -40.0      40.0     -20.0      60.0
  END
  001          +1     -2
  002          +2
  003          +3     -1
  004          +4     -3
  END
    1    2    3    4
    1    2 1000    0
"""
WATER_AND_BONE = "MEDIUM 1\nICRU 276\nEND\nMEDIUM 2\nICRU 119\nEND\n"


def test_bone_slab_shifts_the_bragg_peak_by_its_water_equivalent(tmp_path: Path) -> None:
    detect = depth_dose_detect(18.0, 360) + (
        "Geometry Cyl\n Name coarse\n R 0 20 1\n Z 4.5 5.5 2\n"
        "Output\n Filename let.bdo\n Geo coarse\n Quantity tLET\n")
    water = run_in_process(files(beam(150.0, 1500, "BEAMPOS 0 0 -5\n"), detect), tmp_path / "w",
                           seed=8)
    bone = run_in_process(files(beam(150.0, 1500, "BEAMPOS 0 0 -5\n"), detect, geo=BONE_SLAB,
                                mat=WATER_AND_BONE), tmp_path / "b", seed=8)
    z, dose_water = page_arrays(estimator(tmp_path / "w", "dd"))
    _, dose_bone = page_arrays(estimator(tmp_path / "b", "dd"))
    # PSTAR: water-equivalent thickness of 2 cm of compact bone (rho 1.85) near 130 MeV.
    energies = np.array([120.0, 130.0, 140.0])
    ratio = float(np.mean(pstar("BONE_COMPACT_ICRU").calculate_electronic_stopping_powers(
        energies) / pstar("WATER_LIQUID").calculate_electronic_stopping_powers(energies)))
    shift = 2.0 * (1.85 * ratio - 1.0)
    assert distal_r80(z, dose_water) - distal_r80(z, dose_bone) == pytest.approx(shift, abs=0.1)
    # Across the water -> bone surface the LET (MeV/cm) jumps by rho S_bone/S_water.
    last_water, first_bone = estimator(tmp_path / "b", "let")["pages"][0]["data"]["values"]
    assert first_bone / last_water == pytest.approx(1.85 * ratio, rel=0.03)
    for summary in (water, bone):
        b = summary.balance
        assert b.deposited + b.escaped + b.nuclear_not_transported == pytest.approx(b.beam)


def test_absolute_fluence_and_dose_at_the_entrance(tmp_path: Path) -> None:
    """Per primary: fluence = 1 / area of the scoring disc, dose = S/rho x fluence."""
    detect = ("Geometry Cyl\n Name disc\n R 0 10 1\n Z 0 0.2 1\n"
              "Geometry Mesh\n Name square\n X -5 5 1\n Y -5 5 1\n Z 0 0.2 1\n"
              "Output\n Filename disc.bdo\n Geo disc\n Quantity Fluence\n Quantity Dose\n"
              "Output\n Filename square.bdo\n Geo square\n Quantity Fluence\n"
              " Quantity DoseGy\n")
    run_in_process(files(beam(150.0, 2000), detect), tmp_path, seed=6)
    disc = [p["data"] for p in estimator(tmp_path, "disc")["pages"]]
    square = [p["data"] for p in estimator(tmp_path, "square")["pages"]]
    stopping = float(pstar("WATER_LIQUID").calculate_electronic_stopping_powers(
        np.array([149.5]))[0])

    def agrees(data: dict[str, list[float]], expected: float) -> bool:
        """Within 3 of the engine's own standard errors (and 1 % for the physics)."""
        value, error = data["values"][0], data["error"][0]
        return abs(value - expected) < 3 * error + 0.01 * expected

    assert agrees(disc[0], 1 / (np.pi * 100.0))  # fluence: 1 / disc area
    assert agrees(square[0], 1 / 100.0)
    assert agrees(disc[1], stopping / (np.pi * 100.0))  # dose: S/rho x fluence, MeV/g
    assert agrees(square[1], stopping / 100.0 * 1.602176634e-10)  # in Gy
    assert disc[0]["error"][0] < 0.02 * disc[0]["values"][0]
