"""The committed project fixtures, and editing them by the JSON paths the converter reports."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

PROJECTS = Path(__file__).parent / "projects"
NAMES = sorted(p.stem for p in PROJECTS.glob("*.json"))
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


@cache
def _raw(name: str) -> str:
    return (PROJECTS / f"{name}.json").read_text()


def project(name: str) -> dict[str, Any]:
    """A fresh copy of a fixture project."""
    return dict(json.loads(_raw(name)))


def steps(path: str) -> list[str | int]:
    """``input_json.zones[2].uuid`` -> ``["zones", 2, "uuid"]`` (the root name dropped)."""
    root, _, rest = path.partition(".")
    rest = "." + rest if rest else ""
    if "[" in root:
        root, bracket = root.split("[", 1)
        rest = "[" + bracket + rest
    found: list[str | int] = []
    pos = 0
    for match in _STEP.finditer(rest):
        assert match.start() == pos, f"cannot read path {path!r}"
        found.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    assert pos == len(rest), f"cannot read path {path!r}"
    return found


def _parent(doc: Any, path: str) -> tuple[Any, str | int]:
    parts = steps(path)
    for part in parts[:-1]:
        doc = doc[part]
    return doc, parts[-1]


def get(doc: Any, path: str) -> Any:
    parent, last = _parent(doc, path)
    return parent[last]


def put(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the value at ``path`` replaced."""
    doc = copy.deepcopy(doc)
    parent, last = _parent(doc, path)
    parent[last] = value
    return doc


def drop(doc: dict[str, Any], path: str) -> dict[str, Any]:
    """A copy of ``doc`` without the member (or list element) at ``path``."""
    doc = copy.deepcopy(doc)
    parent, last = _parent(doc, path)
    del parent[last]
    return doc
