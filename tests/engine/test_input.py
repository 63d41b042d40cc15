"""The input parser (the subset) and the command line's answers to inputs outside it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from services.engine.input import InputError, parse_inputs
from services.engine.input.model import BodyKind, GeometryKind, QuantityKind, SpotShape
from services.engine.particles import CARBON12, HELIUM4, PROTON
from tests.engine.helpers import (
    WATER_BOX,
    beam,
    depth_dose_detect,
    files,
    run_cli,
    write_inputs,
)

GOOD = files(beam(150.0, 100), depth_dose_detect(20.0, 100))

#: The converter's default detect.dat (YAPTIDE), minus its differential scoring; it writes
#: "Quantity Dose " with a trailing blank (here "~").
CONVERTER_DETECT = """Geometry Cyl
    Name CylZ_Mesh
    R 0 5 1
    Z 0 20 400

Geometry Mesh
    Name YZ_Mesh
    X -0.25 0.25 1
    Y -2 2 80
    Z 0 20 400

Filter
    Name Protons
    Z == 1
    A == 1
Filter
    Name Secondary_protons
    Z == 1
    A == 1
    GEN >= 1
Output
    Filename z_profile.bdo
    Geo CylZ_Mesh
    Quantity Dose~
    Quantity Fluence Protons
    Quantity Fluence Secondary_protons
Output
    Filename yz_profile.bdo
    Geo YZ_Mesh
    Quantity Dose~
    Quantity dLET Protons
    Quantity tLET Protons
    Quantity AvgEnergy Protons
""".replace("~", " ")

CONVERTER_BEAM = """
RNDSEED      \t89736501     ! Random seed
JPART0       \t2            ! Incident particle type (Proton)
! no heavy ion
TMAX0      \t150.0 1.5       ! Mean and spread (1 sigma) of primary particle kinetic energy [MeV]
TCUT0       0.0 1000.0  ! energy cutoffs [MeV]
NSTAT       10000    0       ! NSTAT, Step of saving
STRAGG          2            ! Straggling: 0-Off 1-Gauss, 2-Vavilov
MSCAT           2            ! Mult. scatt 0-Off 1-Gauss, 2-Moliere
NUCRE           1            ! Nucl.Reac. switcher: 1-ON, 0-OFF
BEAMPOS         0 0 0 ! Position of the beam
BEAMDIR         0.0 0.0 ! Direction of the beam
BEAMSIGMA       0 0  ! Beam extension
DELTAE          0.03   ! relative mean energy loss per transportation step
"""

#: Rotated box (touching 10-character fields), sphere, RPP and a zone with OR.
ODD_GEO = """    0    0          bodies of every kind
* a box whose fields touch: -12.345678 fills its 10 columns
  BOX    1-12.345678       0.0       0.0       2.0       0.0       0.0
                 0.0       3.0       0.0       0.0       0.0       4.0
  SPH    2       0.0       0.0      30.0       5.0
  RPP    3     -50.0      50.0     -50.0      50.0     -50.0      80.0
  RCC    4       0.0       0.0       0.0       1.0       1.0       1.0
                 2.0
  END
  001          +1OR   +2
  002          +3     -1     -2
                      -4
  003          +4     -1     -2
  END
    1    2    3
    1    1 1000
"""


def test_converter_output_parses() -> None:
    parsed = parse_inputs(files(CONVERTER_BEAM, CONVERTER_DETECT))
    b = parsed.beam
    assert (b.projectile, b.energy, b.energy_sigma, b.nstat) == (PROTON, 150.0, 1.5, 10000)
    assert b.energy_cut == (0.0, 1000.0) and b.delta_e == 0.03
    assert b.spot is SpotShape.PENCIL and b.direction == (0.0, 0.0, 1.0)
    assert b.straggling and b.scattering and b.nuclear
    z_profile, yz_profile = parsed.outputs
    assert z_profile.stem == "z_profile" and z_profile.geometry.kind is GeometryKind.CYL
    assert [q.kind for q in z_profile.quantities] == [QuantityKind.DOSE, QuantityKind.FLUENCE,
                                                      QuantityKind.FLUENCE]
    assert z_profile.quantities[2].filter is not None
    assert z_profile.quantities[2].filter.name == "Secondary_protons"
    assert yz_profile.geometry.axes[1].n == 80
    assert [q.kind for q in yz_profile.quantities][1:] == [
        QuantityKind.DLET, QuantityKind.TLET, QuantityKind.AVG_ENERGY]


def test_geometry_layout() -> None:
    parsed = parse_inputs(files(beam(100.0, 10), depth_dose_detect(10.0, 10), geo=ODD_GEO))
    bodies = {b.number: b for b in parsed.geometry.bodies}
    assert bodies[1].kind is BodyKind.BOX and bodies[1].params[0] == -12.345678
    assert bodies[1].params[3:] == (2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 4.0)
    assert bodies[4].params == (0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0)
    zones = {z.number: z for z in parsed.geometry.zones}
    assert zones[1].groups == ((1,), (2,))
    assert zones[2].groups == ((3, -1, -2, -4),)  # the continuation line joins the zone
    assert [z.medium for z in parsed.geometry.zones] == [1, 1, 1000]


def test_beam_variants() -> None:
    def parsed(text: str) -> object:
        return parse_inputs(files(text, depth_dose_detect(10.0, 10))).beam

    carbon = parse_inputs(files("JPART0 25\nHIPROJ 12 6\nTMAX0 290 0\nNSTAT 1e3\n",
                                depth_dose_detect(10.0, 10))).beam
    assert carbon.projectile is CARBON12 and carbon.nstat == 1000
    helium = parse_inputs(files("jpart0 24\ntmax0 100\nnstat 5\n",
                                depth_dose_detect(10.0, 10))).beam
    assert helium.projectile is HELIUM4
    tilted = parse_inputs(files("TMAX0 100\nNSTAT 5\nBEAMDIR 90 90\nBEAMSIGMA -1 -2\n"
                                "BEAMDIV 2 3 0\nDELTAE 0.5\n",
                                depth_dose_detect(10.0, 10))).beam
    assert tilted.direction == pytest.approx((0.0, 1.0, 0.0), abs=1e-12)
    assert tilted.spot is SpotShape.RECTANGLE and tilted.spot_size == (1.0, 2.0)
    assert tilted.divergence == pytest.approx((0.002, 0.003))
    assert tilted.delta_e == 0.05  # capped
    disc = parse_inputs(files("TMAX0 100\nNSTAT 5\nBEAMSIGMA 0 -1.5\n",
                              depth_dose_detect(10.0, 10))).beam
    assert disc.spot is SpotShape.DISC and disc.spot_size == (0.0, 1.5)
    gauss = parse_inputs(files("TMAX0 100\nNSTAT 5\nBEAMSIGMA 0.3 0.4\nSTRAGG 0\nMSCAT 0\n"
                               "NUCRE 0\n", depth_dose_detect(10.0, 10))).beam
    assert gauss.spot is SpotShape.GAUSSIAN and not (gauss.straggling or gauss.scattering
                                                      or gauss.nuclear)
    assert math.isclose(sum(d * d for d in gauss.direction), 1.0)


def replaced(name: str, text: str) -> dict[str, str]:
    return {**GOOD, name: text}


#: (files, file, line, card, a fragment of the message)
BAD = [
    (replaced("beam.dat", beam(150.0, 10, "USECBEAM sobp.dat\n")), "beam.dat", 5, "USECBEAM",
     "not supported"),
    (replaced("beam.dat", beam(150.0, 10, "BEAMSAD 100\n")), "beam.dat", 5, "BEAMSAD",
     "not supported"),
    (replaced("beam.dat", "JPART0 1\nTMAX0 100\nNSTAT 10\n"), "beam.dat", 1, "JPART0",
     "particle code 1"),
    (replaced("beam.dat", "JPART0 25\nHIPROJ 16 8\nTMAX0 100\nNSTAT 10\n"), "beam.dat", 2,
     "HIPROJ", "A=16 Z=8"),
    (replaced("beam.dat", "TMAX0 900\nNSTAT 10\n"), "beam.dat", 1, "TMAX0", "500"),
    (replaced("beam.dat", "TMAX0 100\nNSTAT 10\nNSTAT 20\n"), "beam.dat", 3, "NSTAT", "twice"),
    (replaced("beam.dat", "TMAX0 100\n"), "beam.dat", 0, "NSTAT", "missing"),
    (replaced("beam.dat", "TMAX0 100\nNSTAT 10\nBEAMDIV 1 1 50\n"), "beam.dat", 3, "BEAMDIV",
     "focus"),
    (replaced("geo.dat", WATER_BOX.replace("  RPP    2", "  TRC    2")), "geo.dat", 3, "TRC",
     "body type not supported"),
    (replaced("geo.dat", WATER_BOX.replace("-1\n  003", "-9\n  003")), "geo.dat", 7, "ZONE",
     "body 9"),
    (replaced("geo.dat", WATER_BOX.replace("    1 1000    0", "    1    7    0")), "geo.dat",
     11, "MEDIA", "medium 7"),
    (replaced("geo.dat", WATER_BOX.replace("   20.0       0.0      40.0",
                                           "   20.0       0.0      4x.0")), "geo.dat", 2,
     "RPP", "columns 61-70"),
    (replaced("mat.dat", "MEDIUM 1\nICRU 276\nLOADDEDX\nEND\n"), "mat.dat", 3, "LOADDEDX",
     "not supported"),
    (replaced("mat.dat", "MEDIUM 1\nICRU 999\nEND\n"), "mat.dat", 2, "ICRU", "999"),
    (replaced("mat.dat", "MEDIUM 1\nICRU 276\n"), "mat.dat", 1, "MEDIUM", "no END"),
    (replaced("detect.dat", depth_dose_detect(20.0, 100) + "    Diff1 0 160 640\n"),
     "detect.dat", 9, "DIFF1", "no differential"),
    (replaced("detect.dat", depth_dose_detect(20.0, 100).replace("Quantity Dose",
                                                                 "Quantity Alanine")),
     "detect.dat", 8, "QUANTITY", "Alanine"),
    (replaced("detect.dat", depth_dose_detect(20.0, 100).replace("Geo CylZ", "Geo Nope")),
     "detect.dat", 7, "GEO", "Nope"),
    (replaced("detect.dat", "Geometry Zone\n Name z\n Zone 1\n"), "detect.dat", 1,
     "GEOMETRY", "Zone"),
    ({k: v for k, v in GOOD.items() if k != "mat.dat"}, "mat.dat", 0, "FILE", "missing"),
]


@pytest.mark.parametrize(("inputs", "file", "line", "card", "fragment"), BAD)
def test_parser_names_file_line_and_card(inputs: dict[str, str], file: str, line: int,
                                         card: str, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_inputs(inputs)
    error = caught.value
    assert (error.file, error.line, error.card) == (file, line, card), str(error)
    assert fragment in error.message
    assert str(error).startswith(f"{file}:{line}: {card}: ")


@pytest.mark.parametrize(("inputs", "file", "line", "card", "fragment"),
                         [BAD[0], BAD[8], BAD[12], BAD[15]])
def test_command_line_exits_2_with_the_error(inputs: dict[str, str], file: str, line: int,
                                             card: str, fragment: str, tmp_path: Path) -> None:
    write_inputs(inputs, tmp_path)
    done = run_cli(tmp_path, 1)
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"ERROR: {file}:{line}: {card}: "), done.stderr
    assert fragment in done.stderr
    assert not list(tmp_path.glob("*.json"))


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    inputs = files(beam(100.0, 300), CONVERTER_DETECT.replace("Z 0 20 400", "Z 0 10 100"))
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_inputs(inputs, tmp_path / name)
        done = run_cli(tmp_path / name, seed)
        assert done.returncode == 0, done.stderr
        assert "Requested number of primaries NSTAT      :  300" in done.stdout
        assert "Primary particle no.        300 ETR:" in done.stdout
        assert done.stdout.rstrip().splitlines()[-1].startswith("Run time: ")
        runs[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.json"))}
    assert set(runs["a"]) == {"z_profile.json", "yz_profile.json"}
    assert runs["a"] == runs["b"]
    assert runs["a"]["z_profile.json"] != runs["c"]["z_profile.json"]
