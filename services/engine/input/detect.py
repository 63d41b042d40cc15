"""``detect.dat``: scoring geometries, filters and outputs (keyword format of SH12A >= 1.0)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.engine.input.cards import Card, read_cards
from services.engine.input.errors import InputError
from services.engine.input.model import (
    FULL_AZIMUTH,
    Axis,
    Filter,
    GeometryKind,
    Output,
    Quantity,
    QuantityKind,
    Rule,
    ScoringGeometry,
)

FILE = "detect.dat"

QUANTITIES = {"DOSE": QuantityKind.DOSE, "DOSEGY": QuantityKind.DOSE_GY,
              "FLUENCE": QuantityKind.FLUENCE, "ENERGY": QuantityKind.ENERGY,
              "DLET": QuantityKind.DLET, "TLET": QuantityKind.TLET,
              "AVGENERGY": QuantityKind.AVG_ENERGY}
FILTER_KEYS = ("Z", "A", "GEN", "ID", "E")
_RULE = re.compile(r"^([A-Za-z]+)\s*(==|=|!=|>=|<=|>|<)\s*(\S+)$")
_STEM = re.compile(r"^[A-Za-z0-9_.+-]+$")
MAX_BINS = 4_000_000
"""Bins of one scoring geometry at most (memory: a few arrays of this many floats)."""


@dataclass
class _Block:
    head: Card
    cards: list[Card] = field(default_factory=list)

    def one(self, key: str) -> Card | None:
        found = [c for c in self.cards if c.key == key]
        if len(found) > 1:
            raise found[1].error(f"given twice in this {self.head.keyword} block")
        return found[0] if found else None

    def name(self) -> str:
        card = self.one("NAME")
        if card is None:
            raise self.head.error(f"this {self.head.keyword} block has no Name")
        card.count(1)
        return card.args[0]


def _axis(card: Card, *, radial: bool = False) -> Axis:
    card.count(3)
    low, high = card.number(0, "the low edge"), card.number(1, "the high edge")
    n = card.integer(2, "the number of bins")
    if n < 1:
        raise card.error(f"the number of bins must be positive, got {n} (logarithmic "
                         "binning is not supported)")
    if high <= low:
        raise card.error(f"the high edge must be above the low edge, got {low:g} {high:g}")
    if radial and low < 0:
        raise card.error(f"the radius must not be negative, got {low:g}")
    return Axis(low, high, n)


def _geometry(block: _Block) -> ScoringGeometry:
    head = block.head
    head.count(1)
    kind = head.args[0].upper()
    if kind not in ("CYL", "MESH"):
        raise head.error(f"Geometry {head.args[0]} is not supported by the built-in engine "
                         "(supported: Cyl, Mesh)")
    names = ("R", "Z") if kind == "CYL" else ("X", "Y", "Z")
    for card in block.cards:
        if card.key not in ("NAME", *names):
            raise card.error(f"not supported in Geometry {head.args[0]} by the built-in "
                             f"engine (supported: Name, {', '.join(names)})")
    axes = {}
    for axis_name in names:
        line = block.one(axis_name)
        if line is None:
            raise head.error(f"Geometry {head.args[0]} needs a {axis_name} line")
        axes[axis_name] = _axis(line, radial=axis_name == "R")
    if kind == "CYL":
        geometry = ScoringGeometry(block.name(), GeometryKind.CYL,
                                   (axes["R"], FULL_AZIMUTH, axes["Z"]), head.line)
    else:
        geometry = ScoringGeometry(block.name(), GeometryKind.MESH,
                                   (axes["X"], axes["Y"], axes["Z"]), head.line)
    if geometry.bins > MAX_BINS:
        raise head.error(f"{geometry.bins} bins is more than the built-in engine scores "
                         f"({MAX_BINS})")
    return geometry


def _filter(block: _Block) -> Filter:
    block.head.count(0)
    rules = []
    for card in block.cards:
        if card.key == "NAME":
            continue
        match = _RULE.match(" ".join((card.keyword, *card.args)))
        if match is None or match.group(1).upper() not in FILTER_KEYS:
            raise card.error(f"filter rules are '<key> <op> <value>' with keys "
                             f"{', '.join(FILTER_KEYS)}")
        try:
            value = float(match.group(3))
        except ValueError:
            raise card.error(f"the value must be a number, got {match.group(3)!r}") from None
        op = "==" if match.group(2) == "=" else match.group(2)
        rules.append(Rule(match.group(1).upper(), op, value))
    return Filter(block.name(), tuple(rules))


def _output(block: _Block, geometries: dict[str, ScoringGeometry],
            filters: dict[str, Filter]) -> Output:
    block.head.count(0)
    for card in block.cards:
        if card.key not in ("FILENAME", "FILEFORMAT", "GEO", "QUANTITY"):
            raise card.error("not supported in Output by the built-in engine (supported: "
                             "Filename, Fileformat, Geo, Quantity; no differential scoring)")
    filename = block.one("FILENAME")
    if filename is None:
        raise block.head.error("this Output block has no Filename")
    filename.count(1)
    stem = filename.args[0]
    if stem.lower().endswith(".bdo"):
        stem = stem[:-4]
    if not _STEM.match(stem) or stem.startswith("."):
        raise filename.error(f"{filename.args[0]!r} cannot be a file name (letters, digits "
                             "and _ . + - only)")
    geo = block.one("GEO")
    if geo is None:
        raise block.head.error("this Output block has no Geo")
    geo.count(1)
    if geo.args[0] not in geometries:
        raise geo.error(f"no Geometry named {geo.args[0]!r} (defined: "
                        f"{', '.join(geometries) or 'none'})")
    quantities = []
    for card in block.cards:
        if card.key != "QUANTITY":
            continue
        card.count(1, 2)
        kind = QUANTITIES.get(card.args[0].upper())
        if kind is None:
            raise card.error(f"quantity {card.args[0]} is not supported by the built-in "
                             "engine (supported: Dose, DoseGy, Fluence, Energy, dLET, tLET, "
                             "AvgEnergy)")
        chosen = None
        if len(card.args) > 1:
            chosen = filters.get(card.args[1])
            if chosen is None:
                raise card.error(f"no Filter named {card.args[1]!r} (defined: "
                                 f"{', '.join(filters) or 'none'})")
        quantities.append(Quantity(kind, chosen, card.line))
    if not quantities:
        raise block.head.error("this Output block has no Quantity")
    return Output(stem, geometries[geo.args[0]], tuple(quantities), block.head.line)


def parse_detectors(text: str) -> tuple[Output, ...]:
    """Parse ``detect.dat`` into outputs (each referring to its geometry and filters).

    Raises:
        InputError: a block or keyword outside the subset, a missing or duplicate name,
            or a reference to an undefined geometry or filter.
    """
    blocks: list[_Block] = []
    for card in read_cards(FILE, text, inline=("!", "#"), leading=("*", "#")):
        if card.key in ("GEOMETRY", "FILTER", "OUTPUT"):
            blocks.append(_Block(card))
        elif card.key in ("SETTINGS",):
            raise card.error("Settings blocks are not supported by the built-in engine")
        elif not blocks:
            raise card.error("expected a Geometry, Filter or Output block")
        else:
            blocks[-1].cards.append(card)
    geometries: dict[str, ScoringGeometry] = {}
    filters: dict[str, Filter] = {}
    outputs: list[Output] = []
    for block in blocks:
        key = block.head.key
        if key == "GEOMETRY":
            geometry = _geometry(block)
            if geometry.name in geometries:
                raise block.head.error(f"a Geometry named {geometry.name!r} already exists")
            geometries[geometry.name] = geometry
        elif key == "FILTER":
            flt = _filter(block)
            if flt.name in filters:
                raise block.head.error(f"a Filter named {flt.name!r} already exists")
            filters[flt.name] = flt
    for block in blocks:
        if block.head.key == "OUTPUT":
            output = _output(block, geometries, filters)
            if any(o.stem == output.stem for o in outputs):
                raise block.head.error(f"two Outputs write {output.stem}")
            outputs.append(output)
    if not outputs:
        raise InputError(FILE, 0, "OUTPUT", "no Output block: the run would score nothing")
    return tuple(outputs)
