"""The primary particles the engine transports (``JPART0``/``HIPROJ`` of ``beam.dat``)."""

from __future__ import annotations

from dataclasses import dataclass

from services.engine.constants import PROTON_MASS_MEV


@dataclass(frozen=True)
class Projectile:
    """A primary ion: nucleons, charge, rest energy (nuclear mass, MeV) and SHIELD-HIT code."""

    name: str
    a: int
    z: int
    mass: float
    jpart: int

    @property
    def mass_per_nucleon(self) -> float:
        return self.mass / self.a


PROTON = Projectile("proton", 1, 1, PROTON_MASS_MEV, 2)
#: 4He nuclear mass (CODATA 2018 alpha-particle mass energy equivalent).
HELIUM4 = Projectile("4He", 4, 2, 3727.3794066, 24)
#: 12C nuclear mass: 12 u minus six electron masses (electron binding energies, ~1 keV, dropped).
CARBON12 = Projectile("12C", 12, 6, 12 * 931.49410242 - 6 * 0.51099895, 25)

#: (A, Z) -> projectile for ``JPART0 25`` with ``HIPROJ A Z``.
HEAVY_IONS: dict[tuple[int, int], Projectile] = {(4, 2): HELIUM4, (12, 6): CARBON12}
