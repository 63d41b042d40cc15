"""What a target cannot run, and what is malformed: one ConversionError naming the exact path.

Each row edits a fixture project (paths as the converter reports them) and
names the path and a fragment of the reason the converter must give.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.converter import ConversionError, convert
from tests.converter.fixtures import drop, project, put

DROP = object()

Edit = tuple[str, Any]

Z0 = "input_json.zoneManager.zones[0]"
O0 = "input_json.scoringManager.outputs[0]"
Q0 = f"{O0}.quantities[0]"
D0 = "input_json.detectorManager.detectors[0]"
F0 = "input_json.scoringManager.filters[0]"
BEAM = "input_json.beam"
MOD = {"uuid": "m", "diffType": "E", "lowerLimit": 1, "upperLimit": 10, "binsNumber": 9,
       "isLog": False}

# (case, fixture, target, edits, path, reason fragment)
CASES: list[tuple[str, str, str, list[Edit], str, str]] = [
    # what only SHIELD-HIT12A has
    ("neutrons", "water_phantom", "builtin", [(f"{BEAM}.particle", {"id": 1})],
     f"{BEAM}.particle.id", "neutron (JPART0 1) is not supported by the built-in engine"),
    ("oxygen ions", "beam_carbon", "builtin", [(f"{BEAM}.particle.a", 16),
                                               (f"{BEAM}.particle.z", 8)],
     f"{BEAM}.particle", "the ion A=16 Z=8 is not supported"),
    ("lead", "materials", "builtin", [(f"{Z0}.materialUuid", "m-lead")],
     f"{Z0}.materialUuid", "material 'LEAD' (ICRU 82) is not supported by the built-in"),
    ("AvgEnergy", "water_phantom", "builtin", [(f"{Q0}.keyword", "AvgEnergy")],
     f"{Q0}.keyword", "the quantity AvgEnergy is not supported"),
    ("AMASS filter", "water_phantom", "builtin", [(f"{F0}.rules[0].keyword", "AMASS")],
     f"{F0}.rules[0].keyword", "filtering on AMASS is not supported"),
    ("zone detector", "spheres", "builtin", [],
     f"{D0}.geometryData.geometryType", "a Zone detector is not supported"),
    ("all detector", "water_phantom", "builtin", [(f"{D0}.geometryData.geometryType", "All")],
     f"{D0}.geometryData.geometryType", "a All detector is not supported"),
    ("differential", "water_phantom", "builtin", [(f"{Q0}.modifiers", [MOD])],
     f"{Q0}.modifiers[0]", "differential scoring is not supported"),
    ("rescale", "water_phantom", "builtin", [(f"{Q0}.rescale", 2)],
     f"{Q0}.rescale", "the quantity setting rescale is not supported"),
    ("BEAMSAD", "water_phantom", "builtin", [(f"{BEAM}.sad", {"type": "single", "x": 100})],
     f"{BEAM}.sad.type", "BEAMSAD"),
    ("source file", "water_phantom", "builtin",
     [(f"{BEAM}.sourceType", "file"), (f"{BEAM}.sourceFile", {"name": "b.dat", "value": ""})],
     f"{BEAM}.sourceType", "USECBEAM"),
    ("focus", "water_phantom", "builtin",
     [(f"{BEAM}.divergence", {"x": 1, "y": 1, "distanceToFocal": 10})],
     f"{BEAM}.divergence.distanceToFocal", "focus distance is not supported"),
    # what neither target (or this converter) has
    ("trace", "water_phantom", "shieldhit", [(f"{O0}.trace", True)],
     f"{O0}.trace", "trace outputs cannot be converted"),
    ("modulator", "water_phantom", "shieldhit",
     [("input_json.specialComponentsManager.modulator", {"zone": "z-water"})],
     "input_json.specialComponentsManager.modulator", "modulators"),
    ("three axes", "water_phantom", "shieldhit", [(f"{Q0}.modifiers", [MOD, MOD, MOD])],
     f"{Q0}.modifiers[2]", "at most 2 differential axes"),
    ("not equal", "water_phantom", "shieldhit", [(f"{F0}.rules[0].operator", "!=")],
     f"{F0}.rules[0].operator", "'!' starts a comment"),
    ("off-axis Cyl", "water_phantom", "shieldhit", [(f"{D0}.geometryData.position", [1, 0, 10])],
     f"{D0}.geometryData.position", "around the z axis"),
    ("rotated detector", "water_phantom", "builtin",
     [(f"{D0}.geometryData.rotation", [0, 10, 0])],
     f"{D0}.geometryData.rotation", "cannot be rotated"),
    ("ICRU 500", "water_phantom", "shieldhit",
     [("input_json.materialManager.materials[1].icru", 500)],
     f"{Z0}.materialUuid", "ICRU 500) is not supported by SHIELD-HIT12A"),
    # malformed: references to nothing
    ("unknown material", "water_phantom", "shieldhit", [(f"{Z0}.materialUuid", "nope")],
     f"{Z0}.materialUuid", "names no material"),
    ("unknown figure", "water_phantom", "builtin",
     [(f"{Z0}.unionOperations[0][0].objectUuid", "nope")],
     f"{Z0}.unionOperations[0][0].objectUuid", "names no figure"),
    ("unknown detector", "water_phantom", "shieldhit", [(f"{O0}.detectorUuid", "nope")],
     f"{O0}.detectorUuid", "names no detector"),
    ("unknown filter", "water_phantom", "shieldhit",
     [(f"{O0}.quantities[1].filter", "nope")], f"{O0}.quantities[1].filter", "names no filter"),
    ("unknown zone", "spheres", "shieldhit",
     [(f"{D0}.geometryData.parameters.zoneUuid", "nope")],
     f"{D0}.geometryData.parameters.zoneUuid", "names no zone"),
    ("repeated figure uuid", "zones", "shieldhit",
     [("input_json.figureManager.figures[1].uuid", "f-a")],
     "input_json.figureManager.figures[1].uuid", "repeats the uuid"),
    # malformed: zones
    ("row starts with a subtraction", "water_phantom", "shieldhit",
     [(f"{Z0}.unionOperations[0][0].mode", "subtraction")],
     f"{Z0}.unionOperations[0][0].mode", "must be 'union'"),
    ("unknown operation", "water_phantom", "shieldhit",
     [(f"{Z0}.unionOperations[0][0].mode", "xor")],
     f"{Z0}.unionOperations[0][0].mode", "must be one of 'union'"),
    ("empty zone", "water_phantom", "shieldhit",
     [(f"{Z0}.unionOperations", [[{"mode": "union", "objectUuid": "f-water"},
                                  {"mode": "subtraction", "objectUuid": "f-water"}]])],
     f"{Z0}.unionOperations", "empty zone"),
    ("no rows", "water_phantom", "shieldhit", [(f"{Z0}.unionOperations", [])],
     f"{Z0}.unionOperations", "at least one figure"),
    ("hollow world", "water_phantom", "shieldhit",
     [("input_json.zoneManager.worldZone.geometryData",
       {"geometryType": "HollowCylinderGeometry", "position": [0, 0, 10],
        "parameters": {"radius": 8, "innerRadius": 1, "depth": 30}})],
     "input_json.zoneManager.worldZone.geometryData.parameters.innerRadius", "cannot be hollow"),
    ("no world", "water_phantom", "shieldhit", [("input_json.zoneManager.worldZone", DROP)],
     "input_json.zoneManager.worldZone", "is missing"),
    ("inner radius too large", "cylinders", "shieldhit",
     [("input_json.figureManager.figures[3].geometryData.parameters.innerRadius", 3)],
     "input_json.figureManager.figures[3].geometryData.parameters.innerRadius",
     "smaller than the radius"),
    ("negative size", "boxes", "shieldhit",
     [("input_json.figureManager.figures[0].geometryData.parameters.width", -1)],
     "input_json.figureManager.figures[0].geometryData.parameters.width",
     "must be greater than 0"),
    ("huge position", "boxes", "shieldhit",
     [("input_json.figureManager.figures[0].geometryData.position[2]", 1e300)],
     "input_json.figureManager.figures[0].geometryData.position[2]", "must be at most"),
    # malformed: scoring
    ("output name with a space", "water_phantom", "shieldhit", [(f"{O0}.name", "z profile")],
     f"{O0}.name", "no spaces"),
    ("repeated output name", "water_phantom", "shieldhit",
     [("input_json.scoringManager.outputs[1].name", "z_profile")],
     "input_json.scoringManager.outputs[1].name", "repeats the name"),
    ("no outputs", "water_phantom", "shieldhit", [("input_json.scoringManager.outputs", [])],
     "input_json.scoringManager.outputs", "scores nothing"),
    ("no quantities", "water_phantom", "shieldhit", [(f"{O0}.quantities", [])],
     f"{O0}.quantities", "at least one quantity"),
    ("unknown quantity", "water_phantom", "shieldhit", [(f"{Q0}.keyword", "Happiness")],
     f"{Q0}.keyword", "not a SHIELD-HIT12A detector quantity"),
    ("log from zero", "water_phantom", "shieldhit",
     [(f"{Q0}.modifiers", [{**MOD, "lowerLimit": 0, "isLog": True}])],
     f"{Q0}.modifiers[0].lowerLimit", "logarithmic"),
    ("fractional Z", "water_phantom", "shieldhit", [(f"{F0}.rules[0].value", 1.5)],
     f"{F0}.rules[0].value", "must be an integer"),
    ("zero bins", "water_phantom", "shieldhit",
     [(f"{D0}.geometryData.parameters.zSegments", 0)],
     f"{D0}.geometryData.parameters.zSegments", "at least 1"),
    # malformed: beam and physics
    ("no primaries", "water_phantom", "shieldhit", [(f"{BEAM}.numberOfParticles", 0)],
     f"{BEAM}.numberOfParticles", "at least 1"),
    ("primaries as text", "water_phantom", "builtin", [(f"{BEAM}.numberOfParticles", "many")],
     f"{BEAM}.numberOfParticles", "must be an integer"),
    ("negative energy", "water_phantom", "shieldhit", [(f"{BEAM}.energy", -5)],
     f"{BEAM}.energy", "greater than 0"),
    ("no direction", "water_phantom", "shieldhit", [(f"{BEAM}.direction", [0, 0, 0])],
     f"{BEAM}.direction", "zero vector"),
    ("unknown shape", "water_phantom", "shieldhit", [(f"{BEAM}.sigma.type", "Star")],
     f"{BEAM}.sigma.type", "must be one of 'Gaussian'"),
    ("half a Gaussian", "water_phantom", "shieldhit", [(f"{BEAM}.sigma.y", 0)],
     f"{BEAM}.sigma.y", "both sigmas"),
    ("pion per nucleon", "water_phantom", "shieldhit",
     [(f"{BEAM}.particle", {"id": 3}), (f"{BEAM}.energyUnit", "MeV/nucl")],
     f"{BEAM}.energyUnit", "MeV/nucl means nothing"),
    ("unknown particle", "water_phantom", "shieldhit", [(f"{BEAM}.particle.id", 99)],
     f"{BEAM}.particle.id", "not a SHIELD-HIT12A particle code"),
    ("no step", "water_phantom", "shieldhit", [("input_json.physic.energyLoss", 0)],
     "input_json.physic.energyLoss", "greater than 0"),
    ("unknown straggling", "water_phantom", "builtin",
     [("input_json.physic.energyModelStraggling", "Landau")],
     "input_json.physic.energyModelStraggling", "must be one of"),
    ("cut-offs reversed", "water_phantom", "shieldhit", [(f"{BEAM}.energyHighCutoff", 0)],
     f"{BEAM}.energyHighCutoff", "greater than 0"),
    ("one cut-off", "water_phantom", "builtin", [(f"{BEAM}.energyLowCutoff", DROP)],
     f"{BEAM}.energyLowCutoff", "TCUT0 needs both"),
]


@pytest.mark.parametrize(("fixture", "target", "edits", "path", "fragment"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_the_path(fixture: str, target: str, edits: list[Edit], path: str,
                               fragment: str) -> None:
    doc = project(fixture)
    for where, value in edits:
        doc = drop(doc, where) if value is DROP else put(doc, where, value)
    with pytest.raises(ConversionError) as info:
        convert(doc, target)
    assert info.value.path == path, info.value
    assert fragment in info.value.reason, info.value
    assert str(info.value) == f"{path}: {info.value.reason}"


def test_every_fixture_converts_for_shieldhit() -> None:
    for name in ("beam_carbon", "boxes", "cylinders", "materials", "quantities_builtin",
                 "quantities_shieldhit", "spheres", "water_phantom", "zones"):
        assert convert(project(name), "shieldhit").files["beam.dat"]


def test_unknown_target() -> None:
    with pytest.raises(ConversionError) as info:
        convert(project("water_phantom"), "fluka")
    assert info.value.path == "sim_type" and "no converter for 'fluka'" in info.value.reason


def test_paths_start_with_the_field_the_project_came_in() -> None:
    doc = put(project("water_phantom"), "input_json.beam.energy", "high")
    with pytest.raises(ConversionError) as info:
        convert(doc, "builtin", root="sim_data")
    assert info.value.path == "sim_data.beam.energy"


@pytest.mark.parametrize("value", [None, [], "project", 3])
def test_not_an_object(value: Any) -> None:
    with pytest.raises(ConversionError) as info:
        convert(value, "shieldhit")
    assert info.value.path == "input_json" and "must be an object" in info.value.reason
