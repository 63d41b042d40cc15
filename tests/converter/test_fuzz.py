"""Fuzzed projects: the converter either converts or raises its one error, with a real path.

Valid fixture projects are mutated at random places (keys deleted, values
replaced by other JSON values, numbers made huge, tiny, negative, NaN or
infinite, lists emptied or repeated). Whatever comes out, nothing but a
ConversionError may escape; its path must lead into the mutated project (its
parent exists there); and a conversion that succeeds must give files the
strict reader accepts, with NSTAT equal to the primaries.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.converter import ConversionError, convert
from tests.converter import cards
from tests.converter.fixtures import NAMES, get, project, steps

json_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
                | st.sampled_from([0, -1, 1e308, -1e308, 10**400, 1e-320, 2**63, "", "union",
                                   "Cyl", "BoxGeometry", "f-water", "m-water", "MeV/nucl"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["uuid", "x", "type", "name",
                                                              "parameters", "value"]),
                                             inner, max_size=3), max_leaves=6)


def paths(doc: Any, path: str = "input_json") -> list[str]:
    found = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key.isidentifier():
                found += paths(value, f"{path}.{key}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += paths(value, f"{path}[{i}]")
    return found


def mutate(doc: dict[str, Any], path: str, kind: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    parts = steps(path)
    if not parts:
        return doc
    parent = doc
    for part in parts[:-1]:
        parent = parent[part]  # type: ignore[index]
    last = parts[-1]
    current = parent[last]  # type: ignore[index]
    if kind == "drop":
        del parent[last]  # type: ignore[arg-type]
    elif kind == "scale" and isinstance(current, int | float) and not isinstance(current, bool):
        parent[last] = current * value if isinstance(value, int | float) else -current  # type: ignore[index]
    elif kind == "repeat" and isinstance(current, list) and current:
        current.append(copy.deepcopy(current[0]))
    elif kind == "empty":
        parent[last] = type(current)() if isinstance(current, list | dict | str) else None  # type: ignore[index]
    else:
        parent[last] = value  # type: ignore[index]
    return doc


def check_error(error: ConversionError, doc: dict[str, Any]) -> None:
    assert error.path.startswith("input_json"), error
    assert error.reason, error
    parts = steps(error.path)
    # The parent of the offending part exists in the project (the part itself may be the
    # missing key the error is about).
    parent: Any = doc
    for part in parts[:-1]:
        assert isinstance(parent, dict | list), error
        parent = parent[part]  # type: ignore[index]


def check_files(conversion: Any) -> None:
    files = conversion.files
    beam = cards.beam_cards(files["beam.dat"])
    assert beam["NSTAT"] == [str(conversion.primaries), "0"]
    assert all(math.isfinite(float(v)) for card in ("TMAX0", "BEAMPOS", "BEAMDIR", "BEAMSIGMA")
               for v in beam[card])
    cards.geo(files["geo.dat"])
    cards.media(files["mat.dat"])
    outputs = [b for b in cards.detect(files["detect.dat"]) if b.kind == "Output"]
    assert [o.one("Filename")[0] for o in outputs] == [f"{n}.bdo" for n in conversion.outputs]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_projects(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES), label="fixture")
    target = data.draw(st.sampled_from(["shieldhit", "builtin"]), label="target")
    doc = project(name)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        where = data.draw(st.sampled_from(paths(doc)), label="path")
        kind = data.draw(st.sampled_from(["drop", "replace", "scale", "repeat", "empty"]),
                         label="kind")
        value = data.draw(json_values, label="value")
        doc = mutate(doc, where, kind, value)
    try:
        conversion = convert(doc, target)
    except ConversionError as error:
        event("refused")
        check_error(error, doc)
    else:
        event("converted")
        check_files(conversion)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=json_values, target=st.sampled_from(["shieldhit", "builtin"]))
def test_random_json(doc: Any, target: str) -> None:
    try:
        convert(doc, target)
    except ConversionError as error:
        assert error.path.startswith("input_json")


def test_mutation_helpers_reach_deep_paths() -> None:
    doc = project("zones")
    where = "input_json.zoneManager.zones[5].unionOperations[0][2].mode"
    assert where in paths(doc)
    assert get(mutate(doc, where, "replace", "xor"), where) == "xor"
