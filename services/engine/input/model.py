"""The typed model of an engine input: what the four files say, checked and resolved."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from services.engine.materials import Material
from services.engine.particles import Projectile

Vector = tuple[float, float, float]


class SpotShape(Enum):
    """How primaries are spread over the beam's cross-section (``BEAMSIGMA``)."""

    PENCIL = "pencil"
    GAUSSIAN = "gaussian"
    RECTANGLE = "rectangle"
    DISC = "disc"


@dataclass(frozen=True)
class Beam:
    """``beam.dat``. Energies are kinetic energies per nucleon (MeV/u; MeV for protons)."""

    projectile: Projectile
    energy: float
    energy_sigma: float
    energy_cut: tuple[float, float] | None
    nstat: int
    position: Vector
    direction: Vector
    spot: SpotShape
    #: Gaussian sigmas, rectangle half-widths, or (0, radius) for a disc (cm).
    spot_size: tuple[float, float]
    #: Gaussian divergence, 1 sigma per transverse plane (rad).
    divergence: tuple[float, float]
    straggling: bool
    scattering: bool
    nuclear: bool
    #: Largest fraction of its kinetic energy a primary may lose in one step.
    delta_e: float


class BodyKind(Enum):
    """The body types of the combinatorial geometry the engine supports."""

    RPP = "RPP"
    RCC = "RCC"
    SPH = "SPH"
    BOX = "BOX"


#: Number of parameters of each body type.
BODY_PARAMETERS = {BodyKind.RPP: 6, BodyKind.RCC: 7, BodyKind.SPH: 4, BodyKind.BOX: 12}


@dataclass(frozen=True)
class Body:
    """One body of ``geo.dat`` with its parameters (cm) and where it was defined."""

    kind: BodyKind
    number: int
    params: tuple[float, ...]
    line: int


@dataclass(frozen=True)
class Zone:
    """A zone: a union of intersections of signed body numbers, and its medium number."""

    number: int
    #: Each group is intersected; the groups are united (``OR``).
    groups: tuple[tuple[int, ...], ...]
    medium: int
    line: int
    #: The line of the zone -> medium map that gives this zone's medium.
    medium_line: int


@dataclass(frozen=True)
class Geometry:
    """``geo.dat``."""

    title: str
    bodies: tuple[Body, ...]
    zones: tuple[Zone, ...]


@dataclass(frozen=True)
class Medium:
    """A ``MEDIUM`` of ``mat.dat``: a material and the density it has here (g/cm^3)."""

    number: int
    material: Material
    density: float


class GeometryKind(Enum):
    """Scoring geometry types (``Geometry Cyl`` / ``Geometry Mesh``)."""

    CYL = "CYL"
    MESH = "MSH"


@dataclass(frozen=True)
class Axis:
    """A binned axis of a scoring geometry: ``n`` equal bins from ``low`` to ``high`` (cm)."""

    low: float
    high: float
    n: int

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.n

    def centres(self) -> list[float]:
        return [self.low + (i + 0.5) * self.width for i in range(self.n)]


@dataclass(frozen=True)
class ScoringGeometry:
    """A detector geometry. For CYL the axes are (R, PHI, Z) with one full-azimuth PHI bin."""

    name: str
    kind: GeometryKind
    axes: tuple[Axis, Axis, Axis]
    line: int

    @property
    def bins(self) -> int:
        return self.axes[0].n * self.axes[1].n * self.axes[2].n


FULL_AZIMUTH = Axis(0.0, 2 * math.pi, 1)


@dataclass(frozen=True)
class Rule:
    """One filter rule ``<key> <op> <value>`` (keys Z, A, GEN, ID, E)."""

    key: str
    op: str
    value: float


@dataclass(frozen=True)
class Filter:
    """A named filter: its rules are ANDed."""

    name: str
    rules: tuple[Rule, ...]


class QuantityKind(Enum):
    """Scored quantities, with their SHIELD-HIT12A detector type ids (pymchelper ``SHDetType``)."""

    ENERGY = 1
    FLUENCE = 2
    DOSE = 5
    DLET = 6
    TLET = 7
    AVG_ENERGY = 8
    DOSE_GY = 205


@dataclass(frozen=True)
class Quantity:
    """One ``Quantity`` line of an Output: what is scored, through which filter."""

    kind: QuantityKind
    filter: Filter | None
    line: int


@dataclass(frozen=True)
class Output:
    """An ``Output`` block: one estimator file ``<stem>.json`` with one page per quantity."""

    stem: str
    geometry: ScoringGeometry
    quantities: tuple[Quantity, ...]
    line: int


@dataclass(frozen=True)
class EngineInput:
    """Everything the engine needs to run, parsed from the four files."""

    beam: Beam
    geometry: Geometry
    media: dict[int, Medium]
    outputs: tuple[Output, ...]
