"""Removal of primaries by nuclear (non-elastic) interactions.

The engine transports primaries only. A primary that undergoes a non-elastic
nuclear interaction is removed; its kinetic energy at that point is split:

* :data:`LOCAL_FRACTION` of it is deposited at the interaction point. This is the
  share carried by charged secondaries (secondary protons, deuterons, alphas,
  recoils); their ranges (up to a few cm for secondary protons) are neglected.
* the rest is carried away by neutral secondaries (neutrons, gammas) and
  binding energy, and is tallied as "nuclear, not transported" in the energy
  balance.

The split follows the energy budget of non-elastic proton-oxygen events at
therapy energies (about 60-65 % to charged secondaries, 35-40 % to neutrons,
gammas and binding; Paganetti, Phys. Med. Biol. 47 (2002) 747; ICRU Report 63).
For ions the same split is used; it misplaces the dose of forward projectile
fragments (no fragmentation tail behind the Bragg peak of 12C).

Cross-sections (per nucleus) are the geometric formulas of Sihver et al.,
Phys. Rev. C 47 (1993) 1225, energy-independent above a few tens of MeV/u:

* proton on nucleus A_t:  sigma = pi r0^2 [1 + A_t^(1/3) - b0 (1 + A_t^(-1/3))]^2,
  b0 = 2.247 - 0.915 (1 + A_t^(-1/3));
* nucleus A_p on A_t:    sigma = pi r0^2 [A_p^(1/3) + A_t^(1/3) - b0 (A_p^(-1/3) + A_t^(-1/3))]^2,
  b0 = 1.581 - 0.876 (A_p^(-1/3) + A_t^(-1/3)); r0 = 1.36 fm;

times a Coulomb-barrier factor (1 - B/E_cm) (zero below the barrier),
B = 1.44 MeV fm Z_p Z_t / (1.3 fm (A_p^(1/3) + A_t^(1/3))). A proton on
hydrogen has no non-elastic channel below the pion threshold (~290 MeV), so
p-p is zero; an ion on hydrogen uses the proton-on-nucleus formula with the
roles swapped. For water this gives 273 mb on oxygen and a removal rate of
0.86-0.90 %/cm for protons of 50-250 MeV (measured non-elastic cross-sections for
p + 16O are ~300 mb; Bortfeld's fit to depth-dose data uses ~1.2 %/cm including
elastic nuclear scattering, which the engine does not remove).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from services.engine.constants import ATOMIC_MASS_UNIT_MEV, MILLIBARN_CM2
from services.engine.materials import Material
from services.engine.particles import Projectile

FloatArray = NDArray[np.float64]

LOCAL_FRACTION = 0.62
"""Share of a removed primary's kinetic energy deposited at the interaction point."""

R0_FM = 1.36
"""Sihver's radius parameter (fm)."""


def sihver_cross_section_mb(a_p: int, a_t: float) -> float:
    """The high-energy geometric non-elastic cross-section (mb) of Sihver et al. 1993."""
    projectile, target = float(a_p), float(a_t)
    if a_p == 1 or target < 1.5:  # proton projectile, or an ion on hydrogen (roles swapped)
        heavy = target if a_p == 1 else projectile
        inv = 1.0 + 1.0 / math.cbrt(heavy)
        b0 = 2.247 - 0.915 * inv
        radius = 1.0 + math.cbrt(heavy) - b0 * inv
    else:
        inv = 1.0 / math.cbrt(projectile) + 1.0 / math.cbrt(target)
        b0 = 1.581 - 0.876 * inv
        radius = math.cbrt(projectile) + math.cbrt(target) - b0 * inv
    return math.pi * (R0_FM * radius) ** 2 * 10.0  # fm^2 -> mb


def coulomb_barrier_mev(projectile: Projectile, z_t: int, a_t: float) -> float:
    """Height of the Coulomb barrier in the centre-of-mass frame (MeV)."""
    radii = math.cbrt(projectile.a) + math.cbrt(a_t)
    return 1.44 * projectile.z * z_t / (1.3 * radii)


def macroscopic_cross_section(t_per_u: FloatArray, projectile: Projectile,
                              material: Material) -> FloatArray:
    """Removal cross-section per gram (cm^2/g) at kinetic energy ``t_per_u`` (MeV/u)."""
    t_lab = projectile.a * t_per_u
    total = np.zeros_like(t_per_u)
    for element, nuclei in material.nuclei_per_gram():
        a_t = element.a
        if projectile.z == 1 and projectile.a == 1 and element.z == 1:
            continue  # p-p: elastic only below the pion threshold (the engine's range)
        m_p = projectile.mass
        m_t = a_t * ATOMIC_MASS_UNIT_MEV
        # Non-relativistic share of the kinetic energy in the centre-of-mass frame.
        e_cm = t_lab * m_t / (m_p + m_t)
        barrier = coulomb_barrier_mev(projectile, element.z, a_t)
        factor = np.clip(1.0 - barrier / np.maximum(e_cm, 1e-9), 0.0, 1.0)
        sigma = sihver_cross_section_mb(projectile.a, a_t) * factor
        total = total + nuclei * sigma * MILLIBARN_CM2
    return total
