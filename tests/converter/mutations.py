"""Random edits of valid projects, for the fuzz tests of the converter and of the API."""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import strategies as st

from tests.converter.fixtures import project, steps

_KEYS = st.sampled_from(["uuid", "x", "type", "name", "parameters", "value"])
_SPECIAL = st.sampled_from([0, -1, 1e308, -1e308, 10**40, 1e-320, 2**63, "", "union", "Cyl",
                            "BoxGeometry", "f-water", "m-water", "MeV/nucl"])


def json_values(*, finite: bool) -> st.SearchStrategy[Any]:
    """Random JSON-like values; with ``finite`` only what JSON can carry (no NaN, no inf)."""
    scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
               | st.floats(allow_nan=not finite, allow_infinity=not finite)
               | st.text(max_size=12) | _SPECIAL)
    if not finite:
        scalars = scalars | st.just(10**400)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(_KEYS, inner, max_size=3), max_leaves=6)


KINDS = ("drop", "replace", "scale", "repeat", "empty")


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
        try:
            scaled = current * value if isinstance(value, int | float) else -current
        except OverflowError:  # a float times an int beyond floats: use the int itself
            scaled = value
        if isinstance(scaled, float) and not math.isfinite(scaled):
            scaled = value  # a product beyond floats (inf) is no JSON: the value itself
        parent[last] = scaled  # type: ignore[index]
    elif kind == "repeat" and isinstance(current, list) and current:
        current.append(copy.deepcopy(current[0]))
    elif kind == "empty":
        parent[last] = type(current)() if isinstance(current, list | dict | str) else None  # type: ignore[index]
    else:
        parent[last] = value  # type: ignore[index]
    return doc


def mutated(data: st.DataObject, names: list[str], values: st.SearchStrategy[Any],
            most: int = 4) -> dict[str, Any]:
    """A fixture project with 1 to ``most`` random edits, drawn from ``data``."""
    doc = project(data.draw(st.sampled_from(names), label="fixture"))
    for _ in range(data.draw(st.integers(1, most), label="edits")):
        where = data.draw(st.sampled_from(paths(doc)), label="path")
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        doc = mutate(doc, where, kind, data.draw(values, label="value"))
    return doc
