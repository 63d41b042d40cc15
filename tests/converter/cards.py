"""A strict reader of the files the converter writes, for the tests to check them card by card.

Written apart from the converter (it shares no code with it), and stricter
than SHIELD-HIT12A needs to be: geo.dat is read by its fixed columns, every
geo.dat number must carry a decimal point (Fortran's F edit descriptors
would scale one without), and anything unexpected is an AssertionError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PARAMS = {"RPP": 6, "BOX": 12, "RCC": 7, "SPH": 4}


def _code(line: str) -> str:
    return line.split("!", 1)[0].strip()


def beam_cards(text: str) -> dict[str, list[str]]:
    """beam.dat: keyword -> its arguments (each keyword at most once)."""
    cards: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not _code(line) or line.lstrip().startswith(("*", "#")):
            continue
        keyword, *args = _code(line).split()
        assert keyword not in cards, f"{keyword} twice in beam.dat"
        cards[keyword] = args
    return cards


def numbers(args: list[str]) -> list[float]:
    return [float(a) for a in args]


def _field(text: str) -> float:
    text = text.strip()
    assert text, "empty geo.dat field"
    assert "." in text, f"geo.dat number {text!r} has no decimal point"
    value = float(text)
    assert math.isfinite(value)
    return value


@dataclass
class Geo:
    title: str
    bodies: list[tuple[str, list[float]]] = field(default_factory=list)
    #: zone number -> OR groups of signed body numbers
    zones: dict[int, list[list[int]]] = field(default_factory=dict)
    #: zone number -> medium number
    media: dict[int, int] = field(default_factory=dict)


def geo(text: str) -> Geo:
    lines = text.splitlines()
    head = lines[0]
    assert int(head[0:5]) == 0 and int(head[5:10]) == 0 and head[10:20] == " " * 10, head
    result = Geo(title=head[20:])
    i = 1
    while lines[i] != "  END":
        line = lines[i]
        assert line[0:2] == "  " and line[2:5].strip() in PARAMS, line
        kind, number = line[2:5].strip(), int(line[5:10])
        assert number == len(result.bodies) + 1, f"body {number} out of order"
        values: list[float] = []
        while True:
            body = lines[i][10:]
            assert len(body) % 10 == 0 and len(body) <= 60, f"bad field widths: {lines[i]!r}"
            values += [_field(body[k:k + 10]) for k in range(0, len(body), 10)]
            if len(values) >= PARAMS[kind]:
                break
            i += 1
            assert lines[i][:10] == " " * 10, f"expected a continuation: {lines[i]!r}"
        assert len(values) == PARAMS[kind], (kind, values)
        result.bodies.append((kind, values))
        i += 1
    i += 1
    current: list[list[int]] | None = None
    while lines[i] != "  END":
        line = lines[i]
        if line[:10] == " " * 10:
            assert current is not None, "continuation before the first zone"
        else:
            assert line[0:2] == "  " and line[2:5].isdigit() and line[5:10] == " " * 5, line
            current = []
            result.zones[int(line[2:5])] = current
        rest = line[10:]
        assert len(rest) % 7 == 0, f"zone fields are 7 wide: {line!r}"
        for k in range(0, len(rest), 7):
            op, body = rest[k:k + 2], rest[k + 2:k + 7]
            assert op in ("  ", "OR"), line
            assert body.strip()[0] in "+-", f"unsigned body in {line!r}"
            number = int(body)
            assert 1 <= abs(number) <= len(result.bodies), line
            if op == "OR":
                assert current, f"OR opens a zone: {line!r}"
                current.append([])
            elif not current:
                current.append([])
            current[-1].append(number)
        i += 1
    listed: list[int] = []
    for line in lines[i + 1:]:
        assert len(line) % 5 == 0 and len(line) <= 70, f"bad zone/medium row {line!r}"
        listed += [int(line[k:k + 5]) for k in range(0, len(line), 5)]
    half = len(listed) // 2
    assert listed[:half] == sorted(result.zones), "the zone list must name every zone"
    result.media = dict(zip(listed[:half], listed[half:], strict=True))
    return result


def media(text: str) -> dict[int, tuple[int, float | None]]:
    """mat.dat: medium number -> (ICRU number, RHO or None)."""
    found: dict[int, tuple[int, float | None]] = {}
    block: dict[str, str] = {}
    for line in text.splitlines():
        if not _code(line):
            continue
        keyword, *args = _code(line).split()
        if keyword == "END":
            found[int(block["MEDIUM"])] = (int(block["ICRU"]),
                                           float(block["RHO"]) if "RHO" in block else None)
            block = {}
            continue
        assert keyword in ("MEDIUM", "ICRU", "RHO") and len(args) == 1, line
        block[keyword] = args[0]
    assert not block, "a medium without END"
    return found


@dataclass
class Block:
    kind: str            # Geometry, Filter, Settings, Output
    args: list[str]      # e.g. ["Cyl"] for "Geometry Cyl"
    lines: list[tuple[str, list[str]]]

    def one(self, key: str) -> list[str]:
        found = [args for k, args in self.lines if k == key]
        assert len(found) == 1, (key, self.lines)
        return found[0]

    def all(self, key: str) -> list[list[str]]:
        return [args for k, args in self.lines if k == key]


def detect(text: str) -> list[Block]:
    blocks: list[Block] = []
    for line in text.splitlines():
        code = _code(line)
        if not code:
            continue
        keyword, *args = code.split()
        if not line.startswith(" "):
            assert keyword in ("Geometry", "Filter", "Settings", "Output"), line
            blocks.append(Block(keyword, args, []))
        else:
            assert blocks, line
            blocks[-1].lines.append((keyword, args))
    return blocks


def by_name(blocks: list[Block], kind: str) -> dict[str, Block]:
    found = {}
    for b in blocks:
        if b.kind == kind:
            key = b.one("Filename")[0] if kind == "Output" else b.one("Name")[0]
            assert key not in found
            found[key] = b
    return found
