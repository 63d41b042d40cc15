"""``mat.dat``: media as ``MEDIUM n`` / ``ICRU id`` / [``RHO density``] / ``END`` blocks."""

from __future__ import annotations

from services.engine.input.cards import Card, read_cards
from services.engine.input.model import Medium
from services.engine.materials import BLACK_HOLE, MATERIALS, VACUUM

FILE = "mat.dat"


def _finish(start: Card, icru: Card | None, rho: Card | None) -> Medium:
    number = start.integer(0, "the medium number")
    if icru is None:
        raise start.error(f"medium {number} has no ICRU card")
    material_id = icru.integer(0, "the ICRU material number")
    material = MATERIALS.get(material_id)
    if material is None:
        raise icru.error(f"ICRU material {material_id} is not known to the built-in engine "
                         f"(known: {', '.join(str(k) for k in sorted(MATERIALS))})")
    density = material.density
    if rho is not None:
        density = rho.number(0, "the density (g/cm^3)")
        if density <= 0:
            raise rho.error(f"the density must be positive, got {density:g}")
    return Medium(number, material, density)


def parse_materials(text: str) -> dict[int, Medium]:
    """Parse ``mat.dat`` into media by number.

    Raises:
        InputError: a card outside the subset (LOADDEDX, compositions...), an unknown
            ICRU number, a block without END, or a medium defined twice.
    """
    media: dict[int, Medium] = {}
    start: Card | None = None
    icru: Card | None = None
    rho: Card | None = None
    for card in read_cards(FILE, text):
        key = card.key
        if key == "MEDIUM":
            if start is not None:
                raise card.error(f"medium {start.args[0] if start.args else '?'} (line "
                                 f"{start.line}) has no END before this MEDIUM")
            card.count(1)
            number = card.integer(0, "the medium number")
            if number in (BLACK_HOLE, VACUUM) or not 0 < number < 1000:
                raise card.error(f"medium numbers are 1 to 999 (0 is the black hole and 1000 "
                                 f"vacuum, which need no MEDIUM), got {number}")
            if number in media:
                raise card.error(f"medium {number} is defined twice")
            start, icru, rho = card, None, None
        elif key in ("ICRU", "RHO", "END"):
            if start is None:
                raise card.error("outside a MEDIUM ... END block")
            if key == "END":
                card.count(0)
                medium = _finish(start, icru, rho)
                media[medium.number] = medium
                start = None
                continue
            card.count(1)
            if (icru if key == "ICRU" else rho) is not None:
                raise card.error(f"given twice in medium {start.args[0]}")
            if key == "ICRU":
                icru = card
            else:
                rho = card
        else:
            raise card.error("card not supported by the built-in engine (supported: MEDIUM, "
                             "ICRU, RHO, END)")
    if start is not None:
        raise start.error("this MEDIUM block has no END")
    return media
