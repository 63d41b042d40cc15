"""Fuzzed projects: the converter either converts or raises its one error, with a real path.

Valid fixture projects are mutated at random places (keys deleted, values
replaced by other JSON values, numbers made huge, tiny, negative, NaN or
infinite, lists emptied or repeated). Whatever comes out, nothing but a
ConversionError may escape; its path must lead into the mutated project (its
parent exists there); and a conversion that succeeds must give files the
strict reader accepts, with NSTAT equal to the primaries.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.converter import ConversionError, convert
from tests.converter import cards
from tests.converter.fixtures import NAMES, get, project, steps
from tests.converter.mutations import json_values, mutate, mutated, paths

ANY_VALUE = json_values(finite=False)


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
    target = data.draw(st.sampled_from(["shieldhit", "builtin"]), label="target")
    doc = mutated(data, NAMES, ANY_VALUE)
    try:
        conversion = convert(doc, target)
    except ConversionError as error:
        event("refused")
        check_error(error, doc)
    else:
        event("converted")
        check_files(conversion)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=ANY_VALUE, target=st.sampled_from(["shieldhit", "builtin"]))
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
