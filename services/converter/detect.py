"""Detectors, filters and scoring outputs -> detect.dat (keyword format of SH12A >= 1.0).

Each output becomes an ``Output`` block writing ``<output name>.bdo``; its
name is therefore the estimator's name in the results, which is how results
are matched back to the project's outputs. Output names must be usable as
file names; detector, filter and settings names are internal to detect.dat
and are made into unique single words.

Only the detectors and filters that some output uses are written (the others
are still checked for being well-formed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.converter.geo import Geometry
from services.converter.numbers import free
from services.converter.reader import Node
from services.converter.targets import (
    FILTER_OPERATORS,
    NK_MEDIA,
    SHIELDHIT_DIFF_TYPES,
    SHIELDHIT_FILTER_KEYS,
    SHIELDHIT_QUANTITIES,
    Target,
)

MAX_BINS_PER_AXIS = 100_000
MAX_BINS = 10_000_000
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_+-]{0,99}$")
_NOT_WORD = re.compile(r"[^A-Za-z0-9_]+")
_DETECTOR_TYPES = {"Cyl": "Cyl", "Mesh": "Mesh", "Zone": "Zone", "All": "All"}


def _word(name: object, fallback: str, taken: set[str]) -> str:
    """A unique single-word name for detect.dat made from the editor's name."""
    text = _NOT_WORD.sub("_", name if isinstance(name, str) else "").strip("_")[:40]
    base = text or fallback
    word, n = base, 1
    while word.lower() in taken:
        n += 1
        word = f"{base}_{n}"
    taken.add(word.lower())
    return word


@dataclass
class _Detector:
    name: str
    kind: str
    lines: list[str]
    kind_node: Node


@dataclass
class _Filter:
    name: str
    rules: list[tuple[str, str, str, Node]]


def _bins(node: Node) -> int:
    return node.integer(low=1, high=MAX_BINS_PER_AXIS)


def _check_unrotated(geometry: Node) -> None:
    rotation = geometry.get("rotation")
    if rotation is not None and any(v != 0 for v in rotation.vector3(limit=1e6)):
        rotation.fail("detectors cannot be rotated (their bins follow the x, y, z axes)")


def _read_detector(node: Node, zone_numbers: dict[str, int], names: set[str]) -> _Detector:
    geometry = node.key("geometryData")
    kind_node = geometry.key("geometryType")
    kind = kind_node.choice(_DETECTOR_TYPES)
    name = _word(node.obj().get("name"), "Detector", names)
    params = geometry.key("parameters") if kind in ("Cyl", "Mesh", "Zone") else None
    lines: list[str] = []
    if kind in ("Cyl", "Mesh"):
        assert params is not None
        _check_unrotated(geometry)
        position = geometry.key("position")
        x, y, z = position.vector3()
        depth = params.key("depth").length()
        if kind == "Cyl":
            if x != 0 or y != 0:
                position.fail("a Cyl detector is scored around the z axis: its x and y "
                              "must be 0")
            radius = params.key("radius").length()
            inner_node = params.get("innerRadius")
            inner = inner_node.length(allow_zero=True) if inner_node else 0.0
            if inner >= radius:
                assert inner_node is not None
                inner_node.fail(f"must be smaller than the radius ({radius:g})")
            n_r = _bins(params.key("radialSegments"))
            n_z = _bins(params.key("zSegments"))
            if n_r * n_z > MAX_BINS:
                params.fail(f"more than {MAX_BINS} bins")
            lines = [f"R {free(inner)} {free(radius)} {n_r}",
                     f"Z {free(z - depth / 2)} {free(z + depth / 2)} {n_z}"]
        else:
            width = params.key("width").length()
            height = params.key("height").length()
            counts = [_bins(params.key(k)) for k in ("xSegments", "ySegments", "zSegments")]
            if counts[0] * counts[1] * counts[2] > MAX_BINS:
                params.fail(f"more than {MAX_BINS} bins")
            lines = [f"X {free(x - width / 2)} {free(x + width / 2)} {counts[0]}",
                     f"Y {free(y - height / 2)} {free(y + height / 2)} {counts[1]}",
                     f"Z {free(z - depth / 2)} {free(z + depth / 2)} {counts[2]}"]
    elif kind == "Zone":
        assert params is not None
        zone_node = params.key("zoneUuid")
        number = zone_numbers.get(zone_node.string())
        if number is None:
            zone_node.fail("names no zone of zoneManager")
        lines = [f"Zone {number}"]
    return _Detector(name=name, kind=kind, lines=lines, kind_node=kind_node)


def _read_filter(node: Node, names: set[str]) -> _Filter:
    name = _word(node.obj().get("name"), "Filter", names)
    particle = node.get("particle")
    if particle is not None:
        id_node = particle.key("id")
        code = id_node.integer(low=1, high=100)
        return _Filter(name, [("ID", "==", str(code), id_node)])
    rules_node = node.key("rules")
    rules = []
    for rule in rules_node.items():
        key_node = rule.key("keyword")
        key = key_node.choice({k: k for k in SHIELDHIT_FILTER_KEYS})
        op_node = rule.key("operator")
        if op_node.value == "!=":
            op_node.fail("'!=' cannot be written in detect.dat ('!' starts a comment there); "
                         "express the rule with <, <=, > or >=")
        op = op_node.choice({o: o for o in FILTER_OPERATORS})
        value_node = rule.key("value")
        if SHIELDHIT_FILTER_KEYS[key]:
            value = str(value_node.integer(low=-1_000_000, high=1_000_000))
        else:
            value = free(value_node.number(low=-1e9, high=1e9))
        rules.append((key, op, value, key_node))
    if not rules:
        rules_node.fail("is empty: a filter needs at least one rule")
    return _Filter(name, rules)


def _check_filter(f: _Filter, target: Target) -> None:
    for key, _, _, key_node in f.rules:
        if key not in target.filter_keys:
            key_node.fail(target.refuse(f"filtering on {key}"))


_SETTINGS_KEYS = ("rescale", "offset", "primaries", "medium", "materialUuid")


@dataclass
class _Writer:
    """detect.dat's blocks, gathered while the outputs are read."""

    target: Target
    geometry: Geometry
    detectors: dict[str, _Detector]
    filters: dict[str, _Filter]
    names: set[str]
    used_detectors: list[str] = field(default_factory=list)
    used_filters: list[str] = field(default_factory=list)
    settings: list[list[str]] = field(default_factory=list)
    outputs: list[list[str]] = field(default_factory=list)

    def use_detector(self, uuid_node: Node) -> str:
        detector = self.detectors.get(uuid_node.string())
        if detector is None:
            uuid_node.fail("names no detector of detectorManager.detectors")
        if detector.kind not in self.target.detector_types:
            detector.kind_node.fail(self.target.refuse(f"a {detector.kind} detector"))
        if uuid_node.value not in self.used_detectors:
            self.used_detectors.append(str(uuid_node.value))
        return detector.name

    def use_filter(self, uuid_node: Node) -> str:
        found = self.filters.get(uuid_node.string())
        if found is None:
            uuid_node.fail("names no filter of scoringManager.filters")
        _check_filter(found, self.target)
        if uuid_node.value not in self.used_filters:
            self.used_filters.append(str(uuid_node.value))
        return found.name

    def quantity(self, node: Node, output_name: str, index: int) -> list[str]:
        keyword_node = node.key("keyword")
        keyword = keyword_node.string(max_length=40)
        if keyword not in SHIELDHIT_QUANTITIES:
            keyword_node.fail(f"{keyword!r} is not a SHIELD-HIT12A detector quantity")
        if keyword not in self.target.quantities:
            keyword_node.fail(self.target.refuse(f"the quantity {keyword}"))
        words = ["Quantity", keyword]
        filter_node = node.get("filter")
        if filter_node is not None:
            words.append(self.use_filter(filter_node))
        settings = self._settings(node, output_name, index)
        if settings is not None:
            words.append(settings)
        lines = [" ".join(words)]
        modifiers = node.get("modifiers")
        for i, modifier in enumerate(modifiers.items() if modifiers else []):
            if i >= self.target.max_modifiers:
                if self.target.max_modifiers == 0:
                    modifier.fail(self.target.refuse("differential scoring"))
                modifier.fail(f"at most {self.target.max_modifiers} differential axes "
                              "per quantity")
            lines += _diff(modifier, i + 1)
        return lines

    def _settings(self, node: Node, output_name: str, index: int) -> str | None:
        present = [k for k in _SETTINGS_KEYS if node.has(k)]
        if not present:
            return None
        if not self.target.quantity_settings:
            node.key(present[0]).fail(self.target.refuse(f"the quantity setting {present[0]}"))
        name = _word(f"{output_name}_{index}", "Settings", self.names)
        lines = ["Settings", f"Name {name}"]
        if node.has("rescale"):
            lines.append(f"Rescale {free(node.key('rescale').number(low=-1e30, high=1e30))}")
        if node.has("offset"):
            lines.append(f"Offset {free(node.key('offset').number(low=-1e30, high=1e30))}")
        if node.has("primaries"):
            lines.append(f"Primaries {free(node.key('primaries').number(above=0, high=1e30))}")
        if node.has("materialUuid"):
            medium = self.geometry.materials.library_medium(node.key("materialUuid"))
            lines.append(f"Medium {self.geometry.media.number(medium)}")
        if node.has("medium"):
            nk = node.key("medium").choice({m: m for m in sorted(NK_MEDIA)})
            lines.append(f"NKMedium {nk}")
        self.settings.append(lines)
        return name

    def output(self, node: Node, taken_outputs: set[str]) -> str:
        name_node = node.key("name")
        name = name_node.string(max_length=100)
        if not _OUTPUT_NAME.match(name):
            name_node.fail("becomes the file name <name>.bdo and the estimator name of the "
                           "results: use letters, digits, _ + - only (no spaces)")
        if name in taken_outputs:
            name_node.fail(f"repeats the name {name!r} of another output")
        taken_outputs.add(name)
        trace = node.get("trace")
        if trace is not None and trace.boolean():
            trace.fail("trace outputs cannot be converted")
        detector = self.use_detector(node.key("detectorUuid"))
        quantities_node = node.key("quantities")
        quantities = quantities_node.items()
        if not quantities:
            quantities_node.fail("is empty: an output needs at least one quantity")
        lines = ["Output", f"Filename {name}.bdo", f"Geo {detector}"]
        for i, quantity in enumerate(quantities):
            lines += self.quantity(quantity, name, i)
        self.outputs.append(lines)
        return name


def _diff(modifier: Node, axis: int) -> list[str]:
    kind = modifier.key("diffType").choice({d: d for d in sorted(SHIELDHIT_DIFF_TYPES)})
    low = modifier.key("lowerLimit").number(low=-1e9, high=1e9)
    high = modifier.key("upperLimit").number(above=low, high=1e9)
    bins = modifier.key("binsNumber").integer(low=1, high=MAX_BINS_PER_AXIS)
    log_node = modifier.get("isLog")
    log = log_node.boolean() if log_node else False
    if log and low <= 0:
        modifier.key("lowerLimit").fail("a logarithmic axis must start above 0")
    line = f"Diff{axis} {free(low)} {free(high)} {bins}" + (" log" if log else "")
    return [line, f"Diff{axis}Type {kind}"]


@dataclass(frozen=True)
class Scoring:
    """detect.dat, and the output names (= estimator names) in project order."""

    text: str
    outputs: list[str]


def _block(lines: list[str]) -> str:
    return "\n".join([lines[0], *(f"    {line}" for line in lines[1:])])


def read_scoring(root: Node, target: Target, geometry: Geometry) -> Scoring:
    """detect.dat from ``detectorManager`` and ``scoringManager``.

    Raises:
        ConversionError: a malformed or unsupported part of the scoring.
    """
    names: set[str] = set()
    detectors: dict[str, _Detector] = {}
    for node in root.key("detectorManager").key("detectors").items():
        uuid_node = node.key("uuid")
        uuid = uuid_node.string()
        if uuid in detectors:
            uuid_node.fail(f"repeats the uuid {uuid!r} of another detector")
        detectors[uuid] = _read_detector(node, geometry.zone_numbers, names)
    scoring = root.key("scoringManager")
    filters: dict[str, _Filter] = {}
    filters_node = scoring.get("filters")
    for node in filters_node.items() if filters_node else []:
        uuid_node = node.key("uuid")
        uuid = uuid_node.string()
        if uuid in filters:
            uuid_node.fail(f"repeats the uuid {uuid!r} of another filter")
        filters[uuid] = _read_filter(node, names)
    writer = _Writer(target, geometry, detectors, filters, names)
    outputs_node = scoring.key("outputs")
    outputs = outputs_node.items()
    if not outputs:
        outputs_node.fail("is empty: the project scores nothing")
    taken: set[str] = set()
    output_names = [writer.output(node, taken) for node in outputs]
    blocks = []
    for uuid in writer.used_detectors:
        d = detectors[uuid]
        blocks.append(_block([f"Geometry {d.kind}", f"Name {d.name}", *d.lines]))
    for uuid in writer.used_filters:
        f = filters[uuid]
        blocks.append(_block(["Filter", f"Name {f.name}",
                              *(f"{k} {op} {v}" for k, op, v, _ in f.rules)]))
    blocks += [_block(lines) for lines in writer.settings]
    blocks += [_block(lines) for lines in writer.outputs]
    return Scoring(text="\n\n".join(blocks) + "\n", outputs=output_names)

