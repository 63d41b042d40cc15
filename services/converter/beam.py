"""The beam and the physics settings -> beam.dat.

Units: SHIELD-HIT12A takes TMAX0 in MeV for protons, neutrons, pions, kaons
and muons and in MeV/nucleon for deuterons, tritons, helium and heavy ions.
The editor says which it gives (``energyUnit`` ``MeV`` or ``MeV/nucl``); a
total energy in MeV for an ion is divided by its nucleon number (the spread
too). Without ``energyUnit`` (older projects) the energy is taken as already
in SHIELD-HIT12A's unit. Direction becomes BEAMDIR's polar angle from +z and
azimuth in [0, 360) degrees. The beam shape (``sigma``) follows BEAMSIGMA's
sign conventions: Gaussian sigmas (both > 0) or a pencil beam (both 0), a
flat rectangle of half-widths (both < 0), a flat disc of radius |y| (x > 0,
y < 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.converter.errors import ConversionError
from services.converter.numbers import free
from services.converter.reader import Node
from services.converter.targets import PARTICLES, Target

#: Seed written into beam.dat; every run sets its own with ``-N <seed>``.
RNDSEED = 89736501
MAX_PRIMARIES = 2**53
MAX_ENERGY = 1.0e6  # MeV (per nucleon): far above any transport model's range
MAX_DIVERGENCE = 1.0e4  # mrad

_STRAGGLING = {"no straggling": 0, "Gaussian": 1, "Vavilov": 2}
_SCATTERING = {"no scattering": 0, "Gaussian": 1, "Moliere": 2}
_SAFE_FILE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
RESERVED_FILES = frozenset({"beam.dat", "geo.dat", "mat.dat", "detect.dat"})


@dataclass(frozen=True)
class Beam:
    """The cards of beam.dat, in the order they are written."""

    cards: list[tuple[str, list[str], str]]
    primaries: int
    #: Extra files the beam needs (a USECBEAM source file): name -> text.
    files: dict[str, str]

    def beam_dat(self) -> str:
        """beam.dat: one keyword card per line, ``!`` comments."""
        lines = []
        for keyword, args, comment in self.cards:
            text = f"{keyword:<10}{' '.join(args)}"
            lines.append(f"{text:<34}! {comment}" if comment else text)
        return "\n".join(lines) + "\n"


def _particle(beam: Node, target: Target) -> tuple[int, int | None, int | None, str]:
    """(JPART0, A, Z, name); A and Z only for heavy ions."""
    particle = beam.key("particle")
    id_node = particle.key("id")
    code = id_node.integer()
    if code not in PARTICLES:
        id_node.fail(f"{code} is not a SHIELD-HIT12A particle code "
                     f"(known: {', '.join(str(c) for c in PARTICLES)})")
    name = PARTICLES[code][0]
    if code not in target.particles:
        id_node.fail(target.refuse(f"the primary particle {name} (JPART0 {code})"))
    if code != 25:
        return code, None, None, name
    a = particle.key("a").integer(low=1, high=300)
    z = particle.key("z").integer(low=1, high=120)
    if z > a:
        particle.key("z").fail(f"the charge Z={z} cannot exceed the nucleon number A={a}")
    if target.heavy_ions is not None and (a, z) not in target.heavy_ions:
        known = ", ".join(f"A={x} Z={y}" for x, y in sorted(target.heavy_ions))
        particle.fail(target.refuse(f"the ion A={a} Z={z}") + f"; it knows {known}")
    return code, a, z, f"ion A={a} Z={z}"


def _energy(beam: Node, code: int, a: int | None) -> tuple[float, float]:
    energy = beam.key("energy").number(above=0.0, high=MAX_ENERGY)
    spread_node = beam.get("energySpread")
    spread = spread_node.number(low=0.0, high=MAX_ENERGY) if spread_node else 0.0
    unit_node = beam.get("energyUnit")
    if unit_node is None:
        return energy, spread
    unit = unit_node.choice({"MeV": "MeV", "MeV/nucl": "MeV/nucl"})
    nucleons = a if code == 25 else PARTICLES[code][1]
    if nucleons is None:  # the particle is measured in MeV
        if unit == "MeV/nucl" and code not in (1, 2, 7):
            unit_node.fail(f"MeV/nucl means nothing for a {PARTICLES[code][0]}; use MeV")
        return energy, spread
    if unit == "MeV":
        return energy / nucleons, spread / nucleons
    return energy, spread


def _direction(beam: Node) -> tuple[float, float]:
    node = beam.key("direction")
    x, y, z = node.vector3(limit=1e12)
    r = math.sqrt(x * x + y * y + z * z)
    if r == 0:
        node.fail("must not be the zero vector")
    theta = math.degrees(math.acos(max(-1.0, min(1.0, z / r))))
    if math.hypot(x, y) <= 1e-12 * r:
        return theta, 0.0
    phi = math.degrees(math.atan2(y, x)) % 360.0
    return theta, 0.0 if phi >= 360.0 else phi


def _sigma(beam: Node) -> tuple[float, float, str]:
    sigma = beam.get("sigma")
    if sigma is None:
        return 0.0, 0.0, "pencil beam"
    kind = sigma.key("type").choice({"Gaussian": "Gaussian", "Flat square": "Flat square",
                                     "Flat circular": "Flat circular"})
    if kind == "Flat circular":
        # The editor keeps the disc's radius in y; a positive x marks the disc form
        # (SHIELD-HIT12A wants x > 0 there), and the radius itself is as good as any.
        radius = sigma.key("y").length()
        return radius, -radius, "flat disc, radius |y| cm"
    x_node, y_node = sigma.key("x"), sigma.key("y")
    if kind == "Flat square":
        return -x_node.length(), -y_node.length(), "flat rectangle, half-widths |x| |y| cm"
    x, y = x_node.length(allow_zero=True), y_node.length(allow_zero=True)
    if (x == 0) != (y == 0):
        (x_node if x == 0 else y_node).fail(
            "a Gaussian beam needs both sigmas > 0 (or both 0 for a pencil beam)")
    return x, y, "Gaussian sigmas cm" if x else "pencil beam"


def _sad(beam: Node, target: Target) -> list[str] | None:
    sad = beam.get("sad")
    if sad is None:
        return None
    type_node = sad.key("type")
    kind = type_node.choice({"none": "none", "single": "single", "double": "double"})
    if kind == "none":
        return None
    if not target.beam_sad:
        type_node.fail(target.refuse("a source-to-axis distance (BEAMSAD)"))
    x = sad.key("x").length()
    if kind == "single":
        return [free(x)]
    return [free(x), free(sad.key("y").length())]


def _divergence(beam: Node, target: Target) -> list[str] | None:
    divergence = beam.get("divergence")
    if divergence is None:
        return None
    x_node, y_node = divergence.get("x"), divergence.get("y")
    x = x_node.number(low=0.0, high=MAX_DIVERGENCE) if x_node else 0.0
    y = y_node.number(low=0.0, high=MAX_DIVERGENCE) if y_node else 0.0
    focus_node = divergence.get("distanceToFocal")
    focus = focus_node.number(low=-1e6, high=1e6) if focus_node else 0.0
    if x == 0 and y == 0:
        return None
    if focus != 0:
        assert focus_node is not None
        if not target.divergence_focus:
            focus_node.fail(target.refuse("a divergence focus distance"))
        return [free(x), free(y), free(focus)]
    return [free(x), free(y)]


def _source_file(beam: Node, target: Target) -> tuple[str, str] | None:
    kind_node = beam.get("sourceType") or beam.get("beamSourceType")
    if kind_node is None:
        return None
    kind = kind_node.choice({"simple": "simple", "file": "file"})
    if kind == "simple":
        return None
    if not target.beam_source_file:
        kind_node.fail(target.refuse("a beam source file (USECBEAM)"))
    source = beam.key("sourceFile")
    name_node = source.key("name")
    name = name_node.string(max_length=100)
    if not set(name) <= _SAFE_FILE or name in RESERVED_FILES or name.startswith("."):
        name_node.fail("must be a plain file name (letters, digits, _ . -) other than the "
                       "four SHIELD-HIT12A input files")
    text = source.key("value").string(max_length=10_000_000, allow_empty=True)
    return name, text


def _physics(root: Node) -> tuple[float, int, int, int]:
    """(DELTAE, STRAGG, MSCAT, NUCRE); the editor's defaults when absent."""
    physic = root.get("physic")
    if physic is None:
        return 0.03, 2, 2, 1
    loss = physic.get("energyLoss")
    delta = loss.number(above=0.0, high=1.0) if loss else 0.03
    stragg_node = physic.get("energyModelStraggling")
    stragg = stragg_node.choice(_STRAGGLING) if stragg_node else 2
    mscat_node = physic.get("multipleScattering")
    mscat = mscat_node.choice(_SCATTERING) if mscat_node else 2
    nucre_node = physic.get("enableNuclearReactions")
    nucre = int(nucre_node.boolean()) if nucre_node else 1
    return delta, stragg, mscat, nucre


def read_beam(root: Node, target: Target) -> Beam:
    """beam.dat's cards from ``beam`` and ``physic``.

    Raises:
        ConversionError: a malformed or unsupported part of the beam.
    """
    beam = root.key("beam")
    primaries = beam.key("numberOfParticles").integer(low=1, high=MAX_PRIMARIES)
    code, a, z, name = _particle(beam, target)
    energy, spread = _energy(beam, code, a)
    x, y, zpos = beam.key("position").vector3()
    theta, phi = _direction(beam)
    sx, sy, shape = _sigma(beam)
    delta, stragg, mscat, nucre = _physics(root)
    cards: list[tuple[str, list[str], str]] = [
        ("RNDSEED", [str(RNDSEED)], "seed (each run sets its own with -N)"),
        ("JPART0", [str(code)], name),
    ]
    if a is not None and z is not None:
        cards.append(("HIPROJ", [str(a), str(z)], "A Z of the ion"))
    per = "MeV" if PARTICLES[code][1] is None else "MeV/nucleon"
    cards.append(("TMAX0", [free(energy), free(spread)], f"energy and spread ({per})"))
    low_node, high_node = beam.get("energyLowCutoff"), beam.get("energyHighCutoff")
    if (low_node is None) != (high_node is None):
        missing = "energyHighCutoff" if high_node is None else "energyLowCutoff"
        raise ConversionError(beam.child_path(missing),
                              "is missing: TCUT0 needs both energy cut-offs")
    if low_node is not None and high_node is not None:
        low = low_node.number(low=0.0, high=MAX_ENERGY)
        high = high_node.number(above=low, high=MAX_ENERGY)
        cards.append(("TCUT0", [free(low), free(high)], "primary energy cut-offs"))
    cards += [
        ("NSTAT", [str(primaries), "0"], "primaries, save at the end"),
        ("STRAGG", [str(stragg)], "straggling: 0 off, 1 Gauss, 2 Vavilov"),
        ("MSCAT", [str(mscat)], "multiple scattering: 0 off, 1 Gauss, 2 Moliere"),
        ("NUCRE", [str(nucre)], "nuclear reactions: 0 off, 1 on"),
        ("BEAMPOS", [free(x), free(y), free(zpos)], "start position (cm)"),
        ("BEAMDIR", [free(theta), free(phi)], "polar angle, azimuth (deg)"),
        ("BEAMSIGMA", [free(sx), free(sy)], shape),
    ]
    sad = _sad(beam, target)
    if sad is not None:
        cards.append(("BEAMSAD", sad, "source-to-axis distance (cm)"))
    divergence = _divergence(beam, target)
    if divergence is not None:
        cards.append(("BEAMDIV", divergence, "divergence (mrad) [focus (cm)]"))
    cards.append(("DELTAE", [free(delta)], "max relative energy loss per step"))
    files: dict[str, str] = {}
    source = _source_file(beam, target)
    if source is not None:
        cards.append(("USECBEAM", [source[0]], "beam source file"))
        files[source[0]] = source[1]
    return Beam(cards=cards, primaries=primaries, files=files)
