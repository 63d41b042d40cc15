"""``beam.dat``: the primary beam (see the package docstring for the cards supported)."""

from __future__ import annotations

import math

from services.engine.input.cards import Card, read_cards
from services.engine.input.errors import InputError
from services.engine.input.model import Beam, SpotShape
from services.engine.particles import HEAVY_IONS, HELIUM4, PROTON, Projectile

FILE = "beam.dat"

ENERGY_RANGE = (1.0, 500.0)
"""Kinetic energies per nucleon (MeV/u) the engine accepts for TMAX0."""
DELTAE_DEFAULT = 0.02
DELTAE_MAX = 0.05
"""DELTAE above this is capped: longer steps would spoil straggling and scattering."""

KNOWN = {"RNDSEED", "JPART0", "HIPROJ", "TMAX0", "TCUT0", "NSTAT", "BEAMPOS", "BEAMDIR",
         "BEAMSIGMA", "BEAMDIV", "STRAGG", "MSCAT", "NUCRE", "DELTAE", "DEMIN"}


def _switch(card: Card, allowed: tuple[int, ...]) -> bool:
    card.count(1)
    value = card.integer(0, "the switch")
    if value not in allowed:
        raise card.error(f"must be one of {', '.join(map(str, allowed))}, got {value}")
    return value != 0


def _projectile(jpart: Card | None, hiproj: Card | None) -> Projectile:
    if jpart is None:
        if hiproj is not None:
            raise hiproj.error("HIPROJ needs JPART0 25")
        return PROTON
    jpart.count(1)
    code = jpart.integer(0, "the particle code")
    if code == 2:
        chosen = PROTON
    elif code == 24:
        chosen = HELIUM4
    elif code == 25:
        if hiproj is None:
            raise jpart.error("JPART0 25 (heavy ion) needs a HIPROJ A Z card")
        hiproj.count(2)
        key = (hiproj.integer(0, "A"), hiproj.integer(1, "Z"))
        if key not in HEAVY_IONS:
            raise hiproj.error(f"ion A={key[0]} Z={key[1]} is not supported by the built-in "
                               "engine (supported: 4 2 for 4He, 12 6 for 12C)")
        return HEAVY_IONS[key]
    else:
        raise jpart.error(f"particle code {code} is not supported by the built-in engine "
                          "(supported: 2 proton, 24 4He, 25 with HIPROJ 4 2 or 12 6)")
    if hiproj is not None:
        raise hiproj.error("HIPROJ is only allowed with JPART0 25")
    return chosen


def _direction(card: Card | None) -> tuple[float, float, float]:
    if card is None:
        return (0.0, 0.0, 1.0)
    card.count(2)
    theta = card.number(0, "theta (deg)")
    phi = card.number(1, "phi (deg)")
    if not 0.0 <= theta <= 180.0:
        raise card.error(f"theta must be within 0..180 degrees, got {theta:g}")
    t, p = math.radians(theta), math.radians(phi)
    return (math.sin(t) * math.cos(p), math.sin(t) * math.sin(p), math.cos(t))


def _spot(card: Card | None) -> tuple[SpotShape, tuple[float, float]]:
    if card is None:
        return SpotShape.PENCIL, (0.0, 0.0)
    card.count(2)
    sx, sy = card.number(0, "sigma x (cm)"), card.number(1, "sigma y (cm)")
    if sx == 0 and sy == 0:
        return SpotShape.PENCIL, (0.0, 0.0)
    if sx > 0 and sy > 0:
        return SpotShape.GAUSSIAN, (sx, sy)
    if sx < 0 and sy < 0:
        return SpotShape.RECTANGLE, (-sx, -sy)
    if sx >= 0 > sy:
        return SpotShape.DISC, (0.0, -sy)
    raise card.error(f"sx={sx:g} sy={sy:g} is none of: both > 0 (Gaussian), 0 0 (pencil), "
                     "both < 0 (flat rectangle), sx >= 0 and sy < 0 (flat disc)")


def _energy(card: Card | None, cut: Card | None) -> tuple[float, float,
                                                           tuple[float, float] | None]:
    if card is None:
        raise InputError(FILE, 0, "TMAX0", "the beam energy card TMAX0 is missing")
    card.count(1, 2)
    energy = card.number(0, "the energy")
    sigma = card.number(1, "the energy spread") if len(card.args) > 1 else 0.0
    low, high = ENERGY_RANGE
    if not low <= energy <= high:
        raise card.error(f"the built-in engine runs {low:g} to {high:g} MeV/u, got {energy:g}"
                         + (" (a negative TMAX0 means momentum, not supported)"
                            if energy < 0 else ""))
    if sigma < 0:
        raise card.error(f"the energy spread must not be negative, got {sigma:g}")
    window = None
    if cut is not None:
        cut.count(2)
        window = (cut.number(0, "the low cut"), cut.number(1, "the high cut"))
        if window[0] >= window[1]:
            raise cut.error(f"the low cut must be below the high cut, got {window}")
        # The sampled energy is redrawn until it falls in the window: it must be reachable.
        if sigma == 0:
            if not window[0] <= energy <= window[1]:
                raise cut.error(f"TMAX0 {energy:g} lies outside the cuts {window}")
        else:
            inside = 0.5 * (math.erf((window[1] - energy) / (sigma * math.sqrt(2)))
                            - math.erf((window[0] - energy) / (sigma * math.sqrt(2))))
            if inside < 1e-3:
                raise cut.error(f"only {inside:.2g} of the energy distribution lies inside "
                                "the cuts")
    if energy + 5 * sigma > high * 1.2:
        raise card.error(f"the energy spread reaches beyond {high * 1.2:g} MeV/u")
    return energy, sigma, window


def parse_beam(text: str) -> Beam:
    """Parse ``beam.dat``.

    Raises:
        InputError: a card outside the subset, given twice, or with bad arguments.
    """
    cards: dict[str, Card] = {}
    for card in read_cards(FILE, text):
        if card.key not in KNOWN:
            raise card.error("card not supported by the built-in engine (supported: "
                             f"{', '.join(sorted(KNOWN))})")
        if card.key in cards:
            raise card.error(f"given twice (first on line {cards[card.key].line})")
        cards[card.key] = card
    projectile = _projectile(cards.get("JPART0"), cards.get("HIPROJ"))
    energy, sigma, window = _energy(cards.get("TMAX0"), cards.get("TCUT0"))
    nstat_card = cards.get("NSTAT")
    if nstat_card is None:
        raise InputError(FILE, 0, "NSTAT", "the number of primaries NSTAT is missing")
    nstat_card.count(1, 2)
    nstat = nstat_card.integer(0, "the number of primaries")
    if nstat < 1:
        raise nstat_card.error(f"the number of primaries must be positive, got {nstat}")
    if "RNDSEED" in cards:
        cards["RNDSEED"].count(1)
        cards["RNDSEED"].integer(0, "the seed")
    position = (0.0, 0.0, 0.0)
    if "BEAMPOS" in cards:
        pos = cards["BEAMPOS"]
        pos.count(3)
        position = (pos.number(0, "x"), pos.number(1, "y"), pos.number(2, "z"))
    spot, size = _spot(cards.get("BEAMSIGMA"))
    divergence = (0.0, 0.0)
    if "BEAMDIV" in cards:
        div = cards["BEAMDIV"]
        div.count(2, 3)
        dx, dy = div.number(0, "divergence x (mrad)"), div.number(1, "divergence y (mrad)")
        if dx < 0 or dy < 0:
            raise div.error("the divergence must not be negative")
        if len(div.args) > 2 and div.number(2, "the focus") != 0:
            raise div.error("a beam focus is not supported by the built-in engine (use 0)")
        divergence = (dx * 1e-3, dy * 1e-3)
    delta_e = DELTAE_DEFAULT
    if "DELTAE" in cards:
        de = cards["DELTAE"]
        de.count(1)
        delta_e = de.number(0, "the relative energy loss per step")
        if not 0 < delta_e < 1:
            raise de.error(f"must be between 0 and 1, got {delta_e:g}")
        delta_e = min(delta_e, DELTAE_MAX)
    if "DEMIN" in cards:
        cards["DEMIN"].count(1)
        cards["DEMIN"].number(0, "the minimum energy step")
    switches = {key: _switch(cards[key], allowed) if key in cards else True
                for key, allowed in (("STRAGG", (0, 1, 2)), ("MSCAT", (0, 1, 2)),
                                     ("NUCRE", (0, 1)))}
    return Beam(projectile=projectile, energy=energy, energy_sigma=sigma, energy_cut=window,
                nstat=nstat, position=position, direction=_direction(cards.get("BEAMDIR")),
                spot=spot, spot_size=size, divergence=divergence,
                straggling=switches["STRAGG"], scattering=switches["MSCAT"],
                nuclear=switches["NUCRE"], delta_e=delta_e)
