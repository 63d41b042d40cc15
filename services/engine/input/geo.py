"""``geo.dat``: combinatorial geometry in SHIELD-HIT12A's fixed-column layout.

Layout (columns are 1-based):

* title line: two I5 debug flags, then the title (leading blank lines are skipped);
* bodies: type in columns 3-5, number in 6-10, parameters in 10-character fields
  from column 11 (six per line); continuation lines leave columns 1-10 blank;
  the list ends with ``END``;
* zones: a label (e.g. ``001``) in columns 1-10, then signed body numbers; ``OR``
  starts a new intersection group (fields may be separated by blanks or touch
  ``OR``); continuation lines leave columns 1-10 blank; the list ends with ``END``;
* the zone -> medium map: all zone numbers, then all medium numbers (I5, 14 per line).

Lines starting with ``*`` are comments everywhere.
"""

from __future__ import annotations

import re

from services.engine.input.errors import InputError
from services.engine.input.model import BODY_PARAMETERS, Body, BodyKind, Geometry, Zone

FILE = "geo.dat"
FIELD = 10
FIELDS_FROM = 10
_ZONE_TOKEN = re.compile(r"OR|[+-]?\s*\d+", re.IGNORECASE)


def _lines(text: str) -> list[tuple[int, str]]:
    return [(n, line.rstrip("\r").expandtabs(8)) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("*")]


def _fields(number: int, card: str, line: str) -> list[float]:
    values = []
    rest = line[FIELDS_FROM:]
    for i in range(0, len(rest), FIELD):
        chunk = rest[i:i + FIELD].strip()
        if not chunk:
            continue
        try:
            values.append(float(chunk.replace("d", "e").replace("D", "e")))
        except ValueError:
            col = FIELDS_FROM + i + 1
            raise InputError(FILE, number, card,
                             f"columns {col}-{col + FIELD - 1} must hold a number, got "
                             f"{chunk!r} (parameters are 10-character fields from column 11)"
                             ) from None
    return values


def _check_body(kind: BodyKind, number: int, line: int, p: list[float]) -> None:
    def bad(what: str) -> InputError:
        return InputError(FILE, line, kind.value, f"body {number}: {what}")

    if kind is BodyKind.RPP and not (p[0] < p[1] and p[2] < p[3] and p[4] < p[5]):
        raise bad("needs xmin < xmax, ymin < ymax and zmin < zmax")
    if kind is BodyKind.RCC:
        if p[6] <= 0:
            raise bad(f"the radius must be positive, got {p[6]:g}")
        if p[3] == p[4] == p[5] == 0:
            raise bad("the height vector must not be zero")
    if kind is BodyKind.SPH and p[3] <= 0:
        raise bad(f"the radius must be positive, got {p[3]:g}")
    if kind is BodyKind.BOX:
        a, b, c = p[3:6], p[6:9], p[9:12]
        volume = (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                  + a[2] * (b[0] * c[1] - b[1] * c[0]))
        if abs(volume) < 1e-12:
            raise bad("the three edge vectors must span a volume")


def _bodies(lines: list[tuple[int, str]], start: int) -> tuple[list[Body], int]:
    bodies: list[Body] = []
    current: tuple[BodyKind, int, int, list[float]] | None = None

    def close() -> None:
        if current is None:
            return
        kind, body_number, line, params = current
        need = BODY_PARAMETERS[kind]
        if len(params) != need:
            raise InputError(FILE, line, kind.value,
                             f"body {body_number} needs {need} parameters, got {len(params)}")
        _check_body(kind, body_number, line, params)
        bodies.append(Body(kind, body_number, tuple(params), line))

    i = start
    while i < len(lines):
        number, line = lines[i]
        head = line[:FIELDS_FROM].strip()
        if head.upper() == "END":
            close()
            return bodies, i + 1
        if not head:
            if current is None:
                raise InputError(FILE, number, "BODY", "a continuation line with no body above")
            current[3].extend(_fields(number, current[0].value, line))
            i += 1
            continue
        close()
        kind_text = line[:5].strip().upper()
        try:
            kind = BodyKind(kind_text)
        except ValueError:
            raise InputError(FILE, number, kind_text or head,
                             "body type not supported by the built-in engine (supported: "
                             f"{', '.join(k.value for k in BodyKind)}; type in columns 3-5)"
                             ) from None
        try:
            body_number = int(line[5:10])
        except ValueError:
            raise InputError(FILE, number, kind.value,
                             f"the body number (columns 6-10) must be an integer, got "
                             f"{line[5:10].strip()!r}") from None
        if any(b.number == body_number for b in bodies):
            raise InputError(FILE, number, kind.value, f"body number {body_number} is defined "
                             "twice")
        current = (kind, body_number, number, _fields(number, kind.value, line))
        i += 1
    raise InputError(FILE, 0, "END", "the body list has no END line")


def _zones(lines: list[tuple[int, str]], start: int, bodies: dict[int, Body]
           ) -> tuple[list[tuple[int, list[list[int]], int]], int]:
    zones: list[tuple[int, list[list[int]], int]] = []
    i = start
    while i < len(lines):
        number, line = lines[i]
        head = line[:FIELDS_FROM].strip()
        if head.upper() == "END":
            return zones, i + 1
        rest = line[FIELDS_FROM:] if len(line) > FIELDS_FROM else ""
        if head:
            label = head.split()[0]
            rest = line[line.index(label) + len(label):]
            try:
                zone_number = int(label)
            except ValueError:
                raise InputError(FILE, number, "ZONE", f"the zone label must be a number, "
                                 f"got {label!r}") from None
            if any(z[0] == zone_number for z in zones):
                raise InputError(FILE, number, "ZONE", f"zone {zone_number} is defined twice")
            zones.append((zone_number, [[]], number))
        elif not zones:
            raise InputError(FILE, number, "ZONE", "a continuation line with no zone above")
        groups = zones[-1][1]
        leftover = _ZONE_TOKEN.sub(" ", rest).strip()
        if leftover:
            raise InputError(FILE, number, "ZONE", f"cannot read {leftover!r} (expected "
                             "signed body numbers and OR)")
        for token in _ZONE_TOKEN.findall(rest):
            if token.upper() == "OR":
                if groups[-1]:
                    groups.append([])
                continue
            body = int(token.replace(" ", ""))
            if abs(body) not in bodies or body == 0:
                raise InputError(FILE, number, "ZONE", f"zone {zones[-1][0]} uses body "
                                 f"{abs(body)}, which is not defined")
            groups[-1].append(body)
        i += 1
    raise InputError(FILE, 0, "END", "the zone list has no END line")


def parse_geometry(text: str) -> Geometry:
    """Parse ``geo.dat``.

    Raises:
        InputError: a body outside the subset, a malformed line, an unknown body in a
            zone, or a zone -> medium map that does not match the zones.
    """
    lines = _lines(text)
    if not lines:
        raise InputError(FILE, 0, "TITLE", "the file is empty")
    title = lines[0][1][20:].strip() if len(lines[0][1]) > 20 else ""
    bodies, i = _bodies(lines, 1)
    if not bodies:
        raise InputError(FILE, 0, "BODY", "no bodies are defined")
    by_number = {b.number: b for b in bodies}
    zone_parts, i = _zones(lines, i, by_number)
    if not zone_parts:
        raise InputError(FILE, 0, "ZONE", "no zones are defined")
    for zone_number, groups, line in zone_parts:
        if not groups[-1]:
            raise InputError(FILE, line, "ZONE", f"zone {zone_number} has an empty group "
                             "(nothing after OR, or no bodies)")
    numbers: list[tuple[int, int]] = []
    for number, text in lines[i:]:
        for token in text.split():
            try:
                numbers.append((int(token), number))
            except ValueError:
                raise InputError(FILE, number, "MEDIA", f"the zone -> medium map holds "
                                 f"integers only, got {token!r}") from None
    count = len(zone_parts)
    if len(numbers) != 2 * count:
        raise InputError(FILE, numbers[-1][1] if numbers else 0, "MEDIA",
                         f"the zone -> medium map needs {count} zone numbers and {count} "
                         f"medium numbers, got {len(numbers)} numbers")
    media = {zone: (medium, line) for (zone, _), (medium, line)
             in zip(numbers[:count], numbers[count:], strict=True)}
    known = {z[0] for z in zone_parts}
    for (zone, line) in numbers[:count]:
        if zone not in known:
            raise InputError(FILE, line, "MEDIA", f"zone {zone} in the medium map is not "
                             "defined")
    if len(media) != count:
        raise InputError(FILE, numbers[0][1], "MEDIA", "a zone appears twice in the medium map")
    zones = tuple(Zone(number, tuple(tuple(g) for g in groups), media[number][0], line,
                       media[number][1]) for number, groups, line in zone_parts)
    return Geometry(title, tuple(bodies), zones)
