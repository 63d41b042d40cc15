"""Round trips: convert each fixture project, read the files back card by card, compare numbers.

Each fixture covers one feature (``tests/converter/projects/*.json``). The
expected numbers are worked out here from the project, independently of the
converter (rotations through :func:`tests.converter.oracle.frame`). geo.dat
keeps about 7 significant digits in its 10-column fields, hence ``approx``.
Every geometry is also checked point by point: sampled points must fall in
the same single zone in geo.dat as in the project's own CSG.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from services.converter import ConversionError, convert
from tests.converter import cards, oracle
from tests.converter.fixtures import NAMES, project, put

REL = 2e-7


def approx(values: list[float] | np.ndarray) -> Any:
    return pytest.approx(list(values), rel=REL, abs=1e-6)


def files(name: str, target: str = "shieldhit",
          doc: dict[str, Any] | None = None) -> dict[str, str]:
    return convert(doc if doc is not None else project(name), target).files


# --- the end-to-end project: every file -----------------------------------------------------


@pytest.mark.parametrize("target", ["shieldhit", "builtin"])
def test_water_phantom_every_card(target: str) -> None:
    out = files("water_phantom", target)
    assert sorted(out) == ["beam.dat", "detect.dat", "geo.dat", "mat.dat"]
    beam = cards.beam_cards(out["beam.dat"])
    assert list(beam) == ["RNDSEED", "JPART0", "TMAX0", "TCUT0", "NSTAT", "STRAGG", "MSCAT",
                          "NUCRE", "BEAMPOS", "BEAMDIR", "BEAMSIGMA", "DELTAE"]
    assert beam["JPART0"] == ["2"]
    assert cards.numbers(beam["TMAX0"]) == [100.0, 1.0]
    assert cards.numbers(beam["TCUT0"]) == [0.0, 1000.0]
    assert beam["NSTAT"] == ["1000", "0"]
    assert (beam["STRAGG"], beam["MSCAT"], beam["NUCRE"]) == (["2"], ["2"], ["1"])
    assert cards.numbers(beam["BEAMPOS"]) == [0.0, 0.0, -1.0]
    assert cards.numbers(beam["BEAMDIR"]) == [0.0, 0.0]
    assert cards.numbers(beam["BEAMSIGMA"]) == [0.3, 0.3]
    assert cards.numbers(beam["DELTAE"]) == [0.03]

    geo = cards.geo(out["geo.dat"])
    assert geo.title == "Proton pencil beam in water"
    assert geo.bodies == [("RCC", [0, 0, 0, 0, 0, 20, 5]),
                          ("RPP", [-6, 6, -6, 6, -2, 22]),      # the world box
                          ("RPP", [-7, 7, -7, 7, -3, 23])]      # the black-hole wrapper
    assert geo.zones == {1: [[1]], 2: [[2, -1]], 3: [[3, -2]]}
    assert geo.media == {1: 1, 2: 1000, 3: 0}
    assert cards.media(out["mat.dat"]) == {1: (276, None)}

    blocks = cards.detect(out["detect.dat"])
    assert [b.kind for b in blocks] == ["Geometry", "Geometry", "Filter", "Output", "Output"]
    geometries = cards.by_name(blocks, "Geometry")
    assert geometries["CylZ"].args == ["Cyl"]
    assert cards.numbers(geometries["CylZ"].one("R")) == [0, 5, 1]
    assert cards.numbers(geometries["CylZ"].one("Z")) == [0, 20, 40]
    assert cards.numbers(geometries["EntrySlab"].one("Z")) == [0, 1, 1]
    (flt,) = cards.by_name(blocks, "Filter").values()
    assert flt.lines == [("Name", ["Primary_protons"]), ("Z", ["==", "1"]), ("A", ["==", "1"]),
                         ("GEN", ["==", "0"])]
    outputs = [b for b in blocks if b.kind == "Output"]
    assert [o.one("Filename") for o in outputs] == [["z_profile.bdo"], ["entrance.bdo"]]
    assert outputs[0].one("Geo") == ["CylZ"] and outputs[1].one("Geo") == ["EntrySlab"]
    assert outputs[0].all("Quantity") == [["Dose"], ["Fluence", "Primary_protons"]]
    assert outputs[1].all("Quantity") == [["DoseGy"]]
    conversion = convert(project("water_phantom"), target)
    assert conversion.outputs == ["z_profile", "entrance"] and conversion.primaries == 1000


# --- figures -----------------------------------------------------------------------------


def test_boxes_unrotated_quarter_turned_and_turned() -> None:
    geo = cards.geo(files("boxes")["geo.dat"])
    kinds = [k for k, _ in geo.bodies]
    assert kinds == ["RPP", "RPP", "BOX", "SPH", "SPH"]
    assert geo.bodies[0][1] == approx([-5, 5, -4, 4, 3, 7])
    # 6 x 2 x 3 turned a quarter about z: its 6 cm now run along y.
    assert geo.bodies[1][1] == approx([-1, 1, -3, 3, 10.5, 13.5])
    axes = oracle.frame([30, 20, 10])
    edges = [axes[:, i] * size for i, size in enumerate((4, 3, 2))]
    corner = np.array([0, 0, 20]) - sum(edges) / 2
    values = geo.bodies[2][1]
    assert values[:3] == approx(corner)
    for i, edge in enumerate(edges):
        assert values[3 + 3 * i: 6 + 3 * i] == approx(edge)
    assert geo.bodies[3][1] == [0, 0, 12, 20] and geo.bodies[4][1] == [0, 0, 12, 21]
    assert geo.zones == {1: [[1]], 2: [[2]], 3: [[3]], 4: [[4, -1, -2, -3]], 5: [[5, -4]]}
    assert geo.media == {1: 1, 2: 2, 3: 1, 4: 1000, 5: 0}
    assert cards.media(files("boxes")["mat.dat"]) == {1: (276, None), 2: (223, None)}


def test_cylinders_along_z_turned_and_hollow() -> None:
    geo = cards.geo(files("cylinders")["geo.dat"])
    assert [k for k, _ in geo.bodies] == ["RCC"] * 7
    assert geo.bodies[0][1] == approx([0, 0, 0, 0, 0, 10, 2])
    # Turned 90 degrees about x: the axis (local z) points along -y.
    assert geo.bodies[1][1] == approx([0, 14.5, 0, 0, -6, 0, 1])
    axis = oracle.frame([30, 45, 60])[:, 2] * 4
    base = np.array([6, -6, 6]) - axis / 2
    assert geo.bodies[2][1] == approx([*base, *axis, 1.5])
    # Hollow: outer minus inner, same base and axis.
    assert geo.bodies[3][1] == approx([0, 0, -10, 0, 0, 4, 3])
    assert geo.bodies[4][1] == approx([0, 0, -10, 0, 0, 4, 1])
    assert geo.zones[4] == [[4, -5]]
    # The world cylinder and its wrapper, 1 cm larger on every side.
    assert geo.bodies[5][1] == approx([0, 0, -20, 0, 0, 40, 18])
    assert geo.bodies[6][1] == approx([0, 0, -21, 0, 0, 42, 19])
    # The world keeps the hollow cylinder's hole: W - 1 - 2 - 3 - (4 - 5).
    assert sorted(map(sorted, geo.zones[5])) == [sorted([6, -1, -2, -3, -4]),
                                                 sorted([6, -1, -2, -3, 5])]


def test_spheres_ignore_rotation_and_zone_and_all_detectors() -> None:
    out = files("spheres")
    geo = cards.geo(out["geo.dat"])
    assert geo.bodies[:2] == [("SPH", [0, 0, 0, 6]), ("SPH", [1, 2, 3, 1.5])]
    assert geo.zones[1] == [[1, -2]] and geo.zones[2] == [[2]]
    geometries = cards.by_name(cards.detect(out["detect.dat"]), "Geometry")
    assert geometries["CoreZone"].args == ["Zone"]
    assert geometries["CoreZone"].one("Zone") == ["2"]
    assert geometries["Everything"].args == ["All"] and geometries["Everything"].lines == [
        ("Name", ["Everything"])]


def test_nested_zones() -> None:
    geo = cards.geo(files("zones")["geo.dat"])
    # bodies: 1 A, 2 B, 3 C, 4-6 shells, 7 D, 8 E, 9 world, 10 wrapper
    assert geo.zones[1] == [[1, -3], [2, -3]]          # (A - C) or (B - C)
    assert geo.zones[2] == [[1, 3], [2, 3]]            # C within A, or within B
    assert geo.zones[3] == [[4]]
    assert geo.zones[4] == [[5, -4]]                   # nested shells
    assert geo.zones[5] == [[6, -5]]
    assert geo.zones[6] == [[8], [7, -8]]              # (D - E) union E, left to right
    assert geo.zones[7] == [[9, -1, -2, -4, -5, -6, -7, -8]]
    assert geo.zones[8] == [[10, -9]]
    # C lies along x (turned 90 degrees about y), from x = -8 to 2.
    assert geo.bodies[2][1] == approx([-8, 0, 0, 10, 0, 0, 0.8])


@pytest.mark.parametrize("name", NAMES)
def test_zones_hold_the_same_points_as_the_project(name: str) -> None:
    doc = project(name)
    parsed = cards.geo(files(name, doc=doc)["geo.dat"])
    reached = oracle.compare(doc, parsed, points=3000)
    assert reached > 30, f"only {reached} sample points fell inside user zones"


# --- materials ----------------------------------------------------------------------------


def test_materials_overrides_vacuum_black_hole() -> None:
    out = files("materials")
    geo = cards.geo(out["geo.dat"])
    # zones: water, PMMA overridden (customMaterial), bone overridden, vacuum, black hole,
    # water again (same medium as the first), world (a black hole: no wrapper).
    assert geo.media == {1: 1, 2: 2, 3: 3, 4: 1000, 5: 0, 6: 1, 7: 0}
    assert len(geo.bodies) == 7
    assert cards.media(out["mat.dat"]) == {1: (276, None), 2: (223, 1.25), 3: (119, 1.5)}


def test_a_density_override_on_vacuum_is_refused() -> None:
    doc = put(project("materials"), "input_json.zoneManager.zones[3].materialPropertiesOverrides",
              {"density": 2})
    with pytest.raises(ConversionError) as info:
        convert(doc, "shieldhit")
    assert info.value.path == "input_json.zoneManager.zones[3].materialPropertiesOverrides.density"


# --- scoring ------------------------------------------------------------------------------


def test_every_shieldhit_quantity_filter_modifier_and_setting() -> None:
    doc = project("quantities_shieldhit")
    out = files("quantities_shieldhit", doc=doc)
    blocks = cards.detect(out["detect.dat"])
    (output,) = [b for b in blocks if b.kind == "Output"]
    lines = output.lines
    quantities = [args for key, args in lines if key == "Quantity"]
    keywords = [q["keyword"] for q in doc["scoringManager"]["outputs"][0]["quantities"]]
    assert [q[0] for q in quantities] == keywords
    filters = cards.by_name(blocks, "Filter")
    assert filters["Protons"].lines[1:] == [("Z", ["==", "1"]), ("A", ["==", "1"])]
    assert filters["Energetic_secondaries"].lines[1:] == [
        ("GEN", [">=", "1"]), ("E", [">", "10.5"]), ("ENUC", ["<=", "200.0"]),
        ("AMASS", ["<", "4000.25"]), ("NPRIM", [">", "2"]), ("ID", ["==", "2"]),
        ("EAMU", [">=", "0.5"]), ("AMU", ["<", "3.0"])]
    assert filters["Neutrons"].lines[1:] == [("ID", ["==", "1"])]
    # Differential axes follow their quantity.
    start = lines.index(("Quantity", ["Fluence", "Protons"]))
    assert lines[start + 1:start + 3] == [("Diff1", ["0.0", "160.0", "640"]),
                                          ("Diff1Type", ["E"])]
    start = lines.index(("Quantity", ["Fluence", "Energetic_secondaries"]))
    assert lines[start + 1:start + 5] == [("Diff1", ["0.1", "100.0", "30", "log"]),
                                          ("Diff1Type", ["E"]),
                                          ("Diff2", ["0.0", "90.0", "9"]),
                                          ("Diff2Type", ["ANGLE"])]
    settings = cards.by_name(blocks, "Settings")
    assert len(settings) == 3
    tail = quantities[-3:]
    assert tail[0][0] == "Dose" and len(tail[0]) == 2
    assert tail[1][:2] == ["DoseGy", "Protons"] and len(tail[1]) == 3
    s1, s2, s3 = (settings[q[-1]] for q in tail)
    assert cards.numbers(s1.one("Rescale")) == [2.5]
    assert cards.numbers(s1.one("Primaries")) == [1e9]
    assert s2.one("NKMedium") == ["WATER"] and cards.numbers(s2.one("Offset")) == [0.5]
    # Scoring in lead needs lead in mat.dat, though no zone is made of it.
    assert s3.one("Medium") == ["2"]
    assert cards.media(out["mat.dat"]) == {1: (276, None), 2: (82, None)}


def test_builtin_quantities_and_filters() -> None:
    blocks = cards.detect(files("quantities_builtin", "builtin")["detect.dat"])
    outputs = [b for b in blocks if b.kind == "Output"]
    assert outputs[0].all("Quantity") == [
        ["Dose"], ["DoseGy"], ["Fluence", "Primary_protons"], ["Energy"], ["dLET", "Fast"],
        ["tLET", "Protons_by_particle"]]
    assert outputs[1].one("Geo") == ["YZ"]
    mesh = cards.by_name(blocks, "Geometry")["YZ"]
    assert [cards.numbers(mesh.one(k)) for k in "XYZ"] == [[-0.5, 0.5, 1], [-5, 5, 10],
                                                           [0, 20, 20]]
    filters = cards.by_name(blocks, "Filter")
    assert filters["Fast"].lines[1:] == [("E", [">=", "50.0"]), ("ID", ["==", "2"])]
    assert filters["Protons_by_particle"].lines[1:] == [("ID", ["==", "2"])]


def test_unused_detectors_and_filters_are_not_written() -> None:
    doc = project("water_phantom")
    doc["scoringManager"]["outputs"].pop(1)
    doc["scoringManager"]["outputs"][0]["quantities"].pop(1)
    blocks = cards.detect(convert(doc, "builtin").files["detect.dat"])
    assert [(b.kind, b.one("Name")[0] if b.kind != "Output" else "") for b in blocks] == [
        ("Geometry", "CylZ"), ("Output", "")]


# --- beam ---------------------------------------------------------------------------------


def test_carbon_ions_in_mev_become_mev_per_nucleon() -> None:
    for target in ("shieldhit", "builtin"):
        beam = cards.beam_cards(files("beam_carbon", target)["beam.dat"])
        assert beam["JPART0"] == ["25"] and beam["HIPROJ"] == ["12", "6"]
        assert cards.numbers(beam["TMAX0"]) == [400.0, 2.0]
        # Sideways along -y: 90 degrees from z, azimuth 270.
        assert cards.numbers(beam["BEAMDIR"]) == approx([90, 270])
        assert cards.numbers(beam["BEAMPOS"]) == [0, 12, 0]
        assert cards.numbers(beam["BEAMSIGMA"]) == [-1.5, -0.5]


def beam_of(patch: dict[str, Any], target: str = "shieldhit",
            physic: dict[str, Any] | None = None) -> dict[str, list[str]]:
    doc = project("water_phantom")
    doc["beam"].update(patch)
    if physic is not None:
        doc["physic"] = physic
    return cards.beam_cards(convert(doc, target).files["beam.dat"])


@pytest.mark.parametrize(("direction", "theta", "phi"), [
    ([0, 0, 1], 0, 0), ([0, 0, -2], 180, 0), ([1, 0, 0], 90, 0), ([0, 1, 0], 90, 90),
    ([-1, 0, 0], 90, 180), ([1, -1, 0], 90, 315), ([1, 1, math.sqrt(2)], 45, 45),
    ([0, -1e-20, 1], 0, 0),
])
def test_beam_direction(direction: list[float], theta: float, phi: float) -> None:
    assert cards.numbers(beam_of({"direction": direction})["BEAMDIR"]) == approx([theta, phi])


@pytest.mark.parametrize(("sigma", "expected"), [
    ({"type": "Gaussian", "x": 0, "y": 0}, [0, 0]),
    ({"type": "Gaussian", "x": 0.5, "y": 0.25}, [0.5, 0.25]),
    ({"type": "Flat square", "x": 2, "y": 1}, [-2, -1]),
    ({"type": "Flat circular", "x": 0, "y": 3}, [3, -3]),
])
def test_beam_shape(sigma: dict[str, Any], expected: list[float]) -> None:
    for target in ("shieldhit", "builtin"):
        assert cards.numbers(beam_of({"sigma": sigma}, target)["BEAMSIGMA"]) == expected


def test_beam_sad_divergence_and_source_file_for_shieldhit() -> None:
    beam = beam_of({"sad": {"type": "single", "x": 200, "y": 0}})
    assert cards.numbers(beam["BEAMSAD"]) == [200]
    beam = beam_of({"sad": {"type": "double", "x": 200, "y": 180}})
    assert cards.numbers(beam["BEAMSAD"]) == [200, 180]
    beam = beam_of({"divergence": {"x": 2, "y": 3, "distanceToFocal": 0}})
    assert cards.numbers(beam["BEAMDIV"]) == [2, 3]
    beam = beam_of({"divergence": {"x": 2, "y": 3, "distanceToFocal": -50}})
    assert cards.numbers(beam["BEAMDIV"]) == [2, 3, -50]
    doc = project("water_phantom")
    doc["beam"].update({"sourceType": "file",
                        "sourceFile": {"name": "sobp.dat", "value": "* spots\n0.15 0 0 0 1 1 1\n"}})
    out = convert(doc, "shieldhit").files
    assert cards.beam_cards(out["beam.dat"])["USECBEAM"] == ["sobp.dat"]
    assert out["sobp.dat"] == "* spots\n0.15 0 0 0 1 1 1\n"


def test_beam_divergence_without_focus_for_builtin() -> None:
    beam = beam_of({"divergence": {"x": 2, "y": 3, "distanceToFocal": 0}}, "builtin")
    assert cards.numbers(beam["BEAMDIV"]) == [2, 3]


@pytest.mark.parametrize(("particle", "unit", "energy", "jpart", "tmax"), [
    ({"id": 24, "a": 4, "z": 2}, "MeV", 400, "24", 100),
    ({"id": 24, "a": 4, "z": 2}, "MeV/nucl", 100, "24", 100),
    ({"id": 25, "a": 4, "z": 2}, "MeV", 400, "25", 100),
    ({"id": 2, "a": 1, "z": 1}, "MeV/nucl", 150, "2", 150),
    ({"id": 21, "a": 2, "z": 1}, "MeV", 300, "21", 150),
    ({"id": 3}, "MeV", 300, "3", 300),
])
def test_beam_particles_and_energy_units(particle: dict[str, Any], unit: str, energy: float,
                                         jpart: str, tmax: float) -> None:
    beam = beam_of({"particle": particle, "energyUnit": unit, "energy": energy,
                    "energySpread": 0})
    assert beam["JPART0"] == [jpart]
    assert cards.numbers(beam["TMAX0"]) == [tmax, 0]
    assert ("HIPROJ" in beam) == (jpart == "25")


def test_beam_energy_without_unit_is_taken_as_shieldhit_unit() -> None:
    doc = project("beam_carbon")
    del doc["beam"]["energyUnit"]
    beam = cards.beam_cards(convert(doc, "shieldhit").files["beam.dat"])
    assert cards.numbers(beam["TMAX0"]) == [4800, 24]


@pytest.mark.parametrize(("physic", "expected"), [
    ({"energyLoss": 0.01, "enableNuclearReactions": False, "energyModelStraggling": "Gaussian",
      "multipleScattering": "Gaussian"}, {"DELTAE": 0.01, "NUCRE": 0, "STRAGG": 1, "MSCAT": 1}),
    ({"energyLoss": 0.5, "enableNuclearReactions": True,
      "energyModelStraggling": "no straggling", "multipleScattering": "no scattering"},
     {"DELTAE": 0.5, "NUCRE": 1, "STRAGG": 0, "MSCAT": 0}),
    ({}, {"DELTAE": 0.03, "NUCRE": 1, "STRAGG": 2, "MSCAT": 2}),
])
def test_physics_settings(physic: dict[str, Any], expected: dict[str, float]) -> None:
    beam = beam_of({}, physic=physic)
    assert {k: cards.numbers(beam[k])[0] for k in expected} == expected


def test_no_cutoffs_no_tcut0() -> None:
    doc = project("water_phantom")
    del doc["beam"]["energyLowCutoff"], doc["beam"]["energyHighCutoff"]
    assert "TCUT0" not in cards.beam_cards(convert(doc, "builtin").files["beam.dat"])


def test_primaries_are_the_beams_number_of_particles() -> None:
    doc = put(project("water_phantom"), "input_json.beam.numberOfParticles", 123456)
    conversion = convert(doc, "builtin")
    assert conversion.primaries == 123456
    assert cards.beam_cards(conversion.files["beam.dat"])["NSTAT"] == ["123456", "0"]


def test_long_zones_continue_on_the_next_line() -> None:
    doc = project("materials")
    # 12 figures: the world zone subtracts all of them, more than 9 fields.
    figures = doc["figureManager"]["figures"]
    zones = doc["zoneManager"]["zones"]
    for i in range(6, 12):
        figures.append({**figures[0], "uuid": f"f-{i}",
                        "geometryData": {**figures[0]["geometryData"],
                                         "position": [5.5, 0, i],
                                         "parameters": {"width": 0.5, "height": 0.5,
                                                        "depth": 0.5}}})
        zones.append({**zones[0], "uuid": f"z-{i}", "materialUuid": "m-water",
                      "unionOperations": [[{"mode": "union", "objectUuid": f"f-{i}"}]]})
    text = convert(doc, "shieldhit").files["geo.dat"]
    world = [line for line in text.splitlines() if line.startswith("  013")]
    assert len(world) == 1
    index = text.splitlines().index(world[0])
    continuation = text.splitlines()[index + 1]
    assert continuation.startswith(" " * 10) and continuation[10:].strip()
    geo = cards.geo(text)
    assert geo.zones[13] == [[13, *(-n for n in range(1, 13))]]
    oracle.compare(doc, geo, points=2000)


def lenses(count: int, spacing: float) -> dict[str, Any]:
    """``count`` lens-shaped zones (each the intersection of two spheres) along x."""
    doc = project("zones")
    figures, zones = [], []
    for i in range(count):
        x = (i - count / 2) * spacing
        for side, dx in (("l", -0.5), ("r", 0.5)):
            figures.append({"name": f"{side}{i}", "type": "SphereFigure", "uuid": f"f-{side}{i}",
                            "geometryData": {"geometryType": "SphereGeometry",
                                             "position": [x + dx, 0, 0], "rotation": [0, 0, 0],
                                             "parameters": {"radius": 0.8}}})
        zones.append({"uuid": f"z-{i}", "name": f"Lens{i}", "type": "BooleanZone",
                      "materialUuid": "m-water", "materialPropertiesOverrides": {},
                      "unionOperations": [[{"mode": "union", "objectUuid": f"f-l{i}"},
                                           {"mode": "intersection", "objectUuid": f"f-r{i}"}]]})
    doc["figureManager"]["figures"] = figures
    doc["zoneManager"]["zones"] = zones
    doc["zoneManager"]["worldZone"]["geometryData"] = {
        "geometryType": "BoxGeometry", "position": [0, 0, 0], "rotation": [0, 0, 0],
        "parameters": {"width": count * spacing + 4, "height": 4, "depth": 4}}
    doc["scoringManager"]["outputs"][0]["detectorUuid"] = "d-mesh"
    return doc


def test_many_intersection_zones_keep_the_world_zone_small() -> None:
    # Subtracting 12 lenses one by one would split the world into 2**12 terms.
    doc = lenses(12, spacing=3.0)
    geo = cards.geo(convert(doc, "shieldhit").files["geo.dat"])
    world = geo.zones[13]
    assert len(world) <= 13, world
    oracle.compare(doc, geo, points=3000)


def test_a_hopelessly_entangled_world_zone_is_refused() -> None:
    # Lenses that all overlap: no zone is far from another, nothing prunes the expansion.
    doc = lenses(12, spacing=0.01)
    with pytest.raises(ConversionError) as info:
        convert(doc, "shieldhit")
    assert info.value.path == "input_json.zoneManager.worldZone"
    assert "needs more than 256 intersections" in info.value.reason
