"""Figures, zones, the world zone and materials -> geo.dat and mat.dat.

Numbering: every figure becomes one body (two for a hollow cylinder) in
figure order, then the world body W and, unless the world itself is a black
hole, the black-hole wrapper B (W grown by 1 cm on every side). Zones are
numbered 1... in project order; the world zone (W minus every zone) and the
wrapper zone (B minus W, medium 0) follow. A zone is clipped to W unless
its extent provably lies inside W (:mod:`services.converter.bounds`), so
nothing reaches past the wrapper.

Media: 0 is the black hole, 1000 vacuum; every other (ICRU number, density
override) pair that a zone uses becomes ``MEDIUM n`` in mat.dat, numbered
in order of first use. An ICRU material without an override gets no ``RHO``
card: SHIELD-HIT12A knows its density.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.converter import boolean, bounds
from services.converter import geometry as g
from services.converter.numbers import fixed, free
from services.converter.reader import Node
from services.converter.targets import BLACK_HOLE, VACUUM, Target

MAX_BODIES = 99_999
MAX_ZONES = 999
MAX_DENSITY = 1000.0  # g/cm3
WRAPPER_MARGIN_CM = 1.0
_ZONE_FIELDS_PER_LINE = 9
_MEDIA_PER_LINE = 14
_FIELDS_PER_BODY_LINE = 6


@dataclass(frozen=True)
class Solid:
    """A figure's shape as the editor describes it."""

    kind: str  # "box", "cylinder" or "sphere"
    centre: g.Vector
    rotation: g.Vector
    size: g.Vector = (0.0, 0.0, 0.0)  # box edge lengths
    radius: float = 0.0
    inner_radius: float = 0.0
    height: float = 0.0

    def grown(self, margin: float) -> Solid:
        """The same solid, ``margin`` larger on every side (hollowness dropped)."""
        x, y, z = self.size
        return Solid(self.kind, self.centre, self.rotation,
                     (x + 2 * margin, y + 2 * margin, z + 2 * margin),
                     self.radius + margin, 0.0, self.height + 2 * margin)


_GEOMETRY_TYPES = {"BoxGeometry": "box", "HollowCylinderGeometry": "cylinder",
                   "CylinderGeometry": "cylinder", "SphereGeometry": "sphere"}


def read_solid(geometry: Node) -> Solid:
    """A figure's (or the world zone's) ``geometryData``.

    Raises:
        ConversionError: a missing or malformed part.
    """
    kind = geometry.key("geometryType").choice(_GEOMETRY_TYPES)
    centre = geometry.key("position").vector3()
    rotation_node = geometry.get("rotation")
    rotation = rotation_node.vector3(limit=1e6) if rotation_node else (0.0, 0.0, 0.0)
    params = geometry.key("parameters")
    params.obj()
    if kind == "box":
        size = (params.key("width").length(), params.key("height").length(),
                params.key("depth").length())
        return Solid(kind, centre, rotation, size=size)
    if kind == "sphere":
        return Solid(kind, centre, rotation, radius=params.key("radius").length())
    radius = params.key("radius").length()
    inner_node = params.get("innerRadius")
    inner = inner_node.length(allow_zero=True) if inner_node else 0.0
    if inner >= radius:
        assert inner_node is not None
        inner_node.fail(f"must be smaller than the radius ({radius:g})")
    return Solid(kind, centre, rotation, radius=radius, inner_radius=inner,
                 height=params.key("depth").length())


def _bodies_of(solid: Solid) -> list[g.Body]:
    if solid.kind == "box":
        return [g.box(solid.centre, solid.size, solid.rotation)]
    if solid.kind == "sphere":
        return [g.sphere(solid.centre, solid.radius)]
    outer = g.cylinder(solid.centre, solid.radius, solid.height, solid.rotation)
    if solid.inner_radius == 0:
        return [outer]
    return [outer, g.cylinder(solid.centre, solid.inner_radius, solid.height, solid.rotation)]


@dataclass(frozen=True)
class Medium:
    """What fills a zone: an ICRU material, maybe with its density overridden."""

    icru: int
    density: float | None = None


@dataclass
class Media:
    """The mat.dat media in order of first use; 0 and 1000 are not media of mat.dat."""

    numbers: dict[Medium, int] = field(default_factory=dict)

    def number(self, medium: Medium) -> int:
        """The medium number for geo.dat (0 black hole, 1000 vacuum, else 1...)."""
        if medium.icru in (BLACK_HOLE, VACUUM):
            return medium.icru
        return self.numbers.setdefault(medium, len(self.numbers) + 1)

    def mat_dat(self) -> str:
        """mat.dat: one ``MEDIUM / ICRU / [RHO] / END`` block per medium."""
        blocks = []
        for medium, number in self.numbers.items():
            lines = [f"MEDIUM {number}", f"ICRU {medium.icru}"]
            if medium.density is not None:
                lines.append(f"RHO {free(medium.density)}")
            lines.append("END")
            blocks.append("\n".join(lines))
        return "\n".join(blocks) + "\n" if blocks else ""


@dataclass(frozen=True)
class Material:
    """An entry of ``materialManager.materials``."""

    name: str
    icru: int
    icru_path: str


class Materials:
    """Material lookup by uuid, resolving zone overrides into media."""

    def __init__(self, root: Node, target: Target) -> None:
        self.target = target
        self.by_uuid: dict[str, Material] = {}
        manager = root.key("materialManager")
        for item in manager.key("materials").items():
            uuid_node = item.key("uuid")
            uuid = uuid_node.string()
            if uuid in self.by_uuid:
                uuid_node.fail(f"repeats the uuid {uuid!r} of another material")
            self.by_uuid[uuid] = self._material(item)

    @staticmethod
    def _material(item: Node) -> Material:
        name_node = item.get("name")
        name = name_node.string(max_length=500, allow_empty=True) if name_node else ""
        icru_node = item.key("icru")
        icru = icru_node.integer(low=0, high=VACUUM)
        return Material(name=name, icru=icru, icru_path=icru_node.path)

    def library_medium(self, uuid_node: Node) -> Medium:
        """The medium of a material of ``materialManager`` named by ``uuid_node``.

        Raises:
            ConversionError: an unknown material, or one the target lacks.
        """
        material = self.by_uuid.get(uuid_node.string())
        if material is None:
            uuid_node.fail("names no material of materialManager.materials")
        self._check_icru(material, uuid_node)
        return Medium(material.icru)

    def medium_of(self, owner: Node) -> Medium:
        """The medium of a zone (or the world zone): its material, its density override.

        Raises:
            ConversionError: an unknown material, a bad override, or a material the
                target lacks.
        """
        uuid_node = owner.key("materialUuid")
        uuid = uuid_node.string()
        custom = owner.get("customMaterial")
        if custom is not None and custom.get("uuid") is not None \
                and custom.key("uuid").value == uuid:
            material = self._material(custom)
        elif uuid in self.by_uuid:
            material = self.by_uuid[uuid]
        else:
            uuid_node.fail("names no material of materialManager.materials")
        self._check_icru(material, uuid_node)
        density: float | None = None
        overrides = owner.get("materialPropertiesOverrides")
        if overrides is not None:
            density_node = overrides.get("density")
            if density_node is not None:
                density = density_node.number(above=0.0, high=MAX_DENSITY)
                if material.icru in (BLACK_HOLE, VACUUM):
                    density_node.fail("a black hole or vacuum has no density to override")
        return Medium(material.icru, density)

    def _check_icru(self, material: Material, uuid_node: Node) -> None:
        icru = material.icru
        if icru in (BLACK_HOLE, VACUUM):
            return
        if icru not in self.target.icru:
            label = f"material {material.name[:60]!r} (ICRU {icru})" if material.name \
                else f"ICRU material {icru}"
            uuid_node.fail(f"{self.target.refuse(label)}; it knows {self.target.icru_known}")


@dataclass(frozen=True)
class Zone:
    """One zone line of geo.dat."""

    number: int
    terms: list[list[int]]
    medium: int


@dataclass
class Geometry:
    """Everything geo.dat and mat.dat say, and the zone numbers detectors refer to."""

    title: str
    bodies: list[g.Body]
    zones: list[Zone]
    media: Media
    materials: Materials
    #: zone uuid (including the world zone's) -> zone number
    zone_numbers: dict[str, int]

    def geo_dat(self) -> str:
        """geo.dat in SHIELD-HIT12A's fixed columns."""
        lines = [f"{0:>5}{0:>5}          {self.title}"]
        for number, b in enumerate(self.bodies, start=1):
            params = [fixed(v) for v in b.params]
            first, rest = params[:_FIELDS_PER_BODY_LINE], params[_FIELDS_PER_BODY_LINE:]
            lines.append(f"  {b.kind:<3}{number:>5}" + "".join(f"{p:>10}" for p in first))
            while rest:
                chunk, rest = rest[:_FIELDS_PER_BODY_LINE], rest[_FIELDS_PER_BODY_LINE:]
                lines.append(" " * 10 + "".join(f"{p:>10}" for p in chunk))
        lines.append("  END")
        for zone in self.zones:
            lines.extend(_zone_lines(zone))
        lines.append("  END")
        numbers = [z.number for z in self.zones]
        media = [z.medium for z in self.zones]
        for row in (*_rows(numbers), *_rows(media)):
            lines.append("".join(f"{n:>5}" for n in row))
        return "\n".join(lines) + "\n"


def _rows(values: Sequence[int]) -> list[Sequence[int]]:
    return [values[i:i + _MEDIA_PER_LINE] for i in range(0, len(values), _MEDIA_PER_LINE)]


def _zone_lines(zone: Zone) -> list[str]:
    fields: list[str] = []
    for i, term in enumerate(zone.terms):
        for j, n in enumerate(term):
            fields.append(("OR" if i > 0 and j == 0 else "  ") + f"{n:>+5}")
    lines = []
    start = 0
    while start < len(fields):
        end = min(start + _ZONE_FIELDS_PER_LINE, len(fields))
        # A continuation line never starts with OR (some readers take its first
        # token as a new zone's name); break one field earlier when it would.
        while end < len(fields) and end > start + 1 and fields[end].startswith("OR"):
            end -= 1
        label = f"  {zone.number:03d}     " if start == 0 else " " * 10
        lines.append(label + "".join(fields[start:end]))
        start = end
    return lines


class _Builder:
    """Collects bodies and zones while the project is read."""

    def __init__(self, root: Node, target: Target) -> None:
        self.root = root
        self.target = target
        self.bodies: list[g.Body] = []
        self.boxes: list[tuple[g.Vector, g.Vector]] = []
        self.figures: dict[str, boolean.Dnf] = {}
        self.materials = Materials(root, target)
        self.media = Media()

    def disjoint(self, a: int, b: int) -> bool:
        """Whether bodies ``a`` and ``b`` (numbers) provably share no point.

        Their bounding boxes are apart along some axis. Boxes that merely touch do
        not count: once geo.dat has rounded the numbers, touching may overlap.
        """
        (alo, ahi), (blo, bhi) = self.boxes[a - 1], self.boxes[b - 1]
        return any(ahi[i] < blo[i] or bhi[i] < alo[i] for i in range(3))

    def volume(self, n: int) -> float:
        lo, hi = self.boxes[n - 1]
        return (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])

    def add_solid(self, solid: Solid, where: Node) -> boolean.Dnf:
        bodies = _bodies_of(solid)
        if len(self.bodies) + len(bodies) > MAX_BODIES:
            where.fail(f"more than {MAX_BODIES} bodies")
        numbers = []
        for b in bodies:
            self.bodies.append(b)
            self.boxes.append(bounds.bounding_box(b))
            numbers.append(len(self.bodies))
        shape = boolean.body(numbers[0])
        if len(numbers) == 2:
            shape = boolean.difference(shape, boolean.body(numbers[1]))
        return shape

    def read_figures(self) -> None:
        manager = self.root.key("figureManager")
        for figure in manager.key("figures").items():
            uuid_node = figure.key("uuid")
            uuid = uuid_node.string()
            if uuid in self.figures:
                uuid_node.fail(f"repeats the uuid {uuid!r} of another figure")
            solid = read_solid(figure.key("geometryData"))
            self.figures[uuid] = self.add_solid(solid, figure)

    def zone_shape(self, zone: Node) -> boolean.Dnf:
        operations = zone.key("unionOperations")
        rows = operations.items()
        if not rows:
            operations.fail("is empty: a zone needs at least one figure")
        shape = boolean.EMPTY
        try:
            for row in rows:
                ops = row.items()
                if not ops:
                    row.fail("is an empty row of operations")
                acc = boolean.EMPTY
                for j, op in enumerate(ops):
                    mode_node = op.key("mode")
                    mode = mode_node.choice({"union": "union", "intersection": "intersection",
                                             "subtraction": "subtraction"})
                    if j == 0 and mode != "union":
                        mode_node.fail("the first operation of a row must be 'union'")
                    uuid_node = op.key("objectUuid")
                    figure = self.figures.get(uuid_node.string())
                    if figure is None:
                        uuid_node.fail("names no figure of figureManager.figures")
                    if mode == "union":
                        acc = boolean.union(acc, figure, self.disjoint)
                    elif mode == "intersection":
                        acc = boolean.intersection(acc, figure, self.disjoint)
                    else:
                        acc = boolean.difference(acc, figure, self.disjoint)
                shape = boolean.union(shape, acc, self.disjoint)
        except boolean.TooComplex:
            operations.fail(f"needs more than {boolean.MAX_TERMS} intersections in geo.dat; "
                            "simplify the zone")
        if not shape:
            operations.fail("describes an empty zone (everything in it is subtracted)")
        return shape

    def clip(self, shape: boolean.Dnf, world_number: int) -> boolean.Dnf:
        world = self.bodies[world_number - 1]
        clipped = set()
        for term in shape:
            proven = any(n > 0 and bounds.inside(self.bodies[n - 1], world) for n in term)
            clipped.add(term if proven else term | {world_number})
        return frozenset(clipped)

    def world(self, world_number: int, zones: list[boolean.Dnf]) -> boolean.Dnf:
        """The world body minus every zone.

        Subtracting the zones one by one gives the most compact zone line, but can
        grow exponentially (each zone of n bodies splits every term n ways). When it
        does, the world is cut instead along each zone's smallest body h ("hull"):
        the part outside every hull, plus for each hull what the zones leave of it,
        where zones far from h (disjoint boxes) no longer split anything.

        Raises:
            TooComplex: even so, more than boolean.MAX_TERMS terms.
        """
        try:
            result = boolean.body(world_number)
            for zone in zones:
                result = boolean.difference(result, zone, self.disjoint, limit=32)
            return result
        except boolean.TooComplex:
            pass
        hulls: list[int] = []
        for zone in zones:
            for term in zone:
                inside = [n for n in term if n > 0 and n != world_number]
                hull = min(inside, key=lambda n: (self.volume(n), n))
                if hull not in hulls:
                    hulls.append(hull)
        parts: set[boolean.Term] = {frozenset({world_number, *(-h for h in hulls)})}
        for hull in hulls:
            region = frozenset({frozenset({world_number, hull})})
            for zone in zones:
                region = boolean.difference(region, zone, self.disjoint)
            parts |= region
        return boolean.simplify(parts, self.disjoint)


def _title(root: Node) -> str:
    project = root.get("project")
    title_node = project.get("title") if project is not None else None
    if title_node is None or not isinstance(title_node.value, str):
        return "YAPTIDE project"
    printable = "".join(c if " " <= c <= "~" else "?" for c in title_node.value)
    title = " ".join(printable.split())[:60]
    return title or "YAPTIDE project"


def read_geometry(root: Node, target: Target) -> Geometry:
    """geo.dat's bodies and zones and mat.dat's media from the project.

    Raises:
        ConversionError: a malformed or unsupported part of the geometry.
    """
    builder = _Builder(root, target)
    builder.read_figures()
    manager = root.key("zoneManager")
    zone_nodes = manager.key("zones").items()
    world_node = manager.key("worldZone")
    if len(zone_nodes) + 2 > MAX_ZONES:
        manager.key("zones").fail(f"has more than {MAX_ZONES - 2} zones")
    shapes: list[tuple[Node, boolean.Dnf]] = []
    zone_numbers: dict[str, int] = {}
    for zone in zone_nodes:
        uuid_node = zone.key("uuid")
        uuid = uuid_node.string()
        if uuid in zone_numbers:
            uuid_node.fail(f"repeats the uuid {uuid!r} of another zone")
        zone_type = zone.get("type")
        if zone_type is not None and zone_type.value != "BooleanZone":
            zone_type.fail("only BooleanZone zones can be converted")
        zone_numbers[uuid] = len(zone_numbers) + 1
        shapes.append((zone, builder.zone_shape(zone)))

    world_solid = read_solid(world_node.key("geometryData"))
    if world_solid.inner_radius:
        world_node.key("geometryData").key("parameters").key("innerRadius").fail(
            "the world zone cannot be hollow")
    builder.add_solid(world_solid, world_node)
    world_number = len(builder.bodies)
    world_medium = builder.materials.medium_of(world_node)

    zones: list[Zone] = []
    clipped_shapes = []
    for zone, shape in shapes:
        medium = builder.materials.medium_of(zone)
        clipped = builder.clip(shape, world_number)
        clipped_shapes.append(clipped)
        zones.append(Zone(len(zones) + 1, boolean.ordered(clipped),
                          builder.media.number(medium)))
    try:
        world = builder.world(world_number, clipped_shapes)
    except boolean.TooComplex:
        world_node.fail(f"the world zone (what the other zones leave of it) needs more than "
                        f"{boolean.MAX_TERMS} intersections in geo.dat; simplify the zones")
    world_uuid = world_node.get("uuid")
    world_zone_number = len(zones) + 1
    world_medium_number = builder.media.number(world_medium)
    if world:
        zones.append(Zone(world_zone_number, boolean.ordered(world), world_medium_number))
        if world_uuid is not None and isinstance(world_uuid.value, str):
            zone_numbers.setdefault(world_uuid.value, world_zone_number)
    if world_medium_number != BLACK_HOLE:
        builder.add_solid(world_solid.grown(WRAPPER_MARGIN_CM), world_node)
        wrapper = len(builder.bodies)
        zones.append(Zone(len(zones) + 1, [[wrapper, -world_number]], BLACK_HOLE))
    return Geometry(title=_title(root), bodies=builder.bodies, zones=zones,
                    media=builder.media, materials=builder.materials,
                    zone_numbers=zone_numbers)
