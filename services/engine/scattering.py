"""Multiple Coulomb scattering: the Highland formula, applied incrementally along the track.

Highland's formula (PDG form) for the rms projected angle after a thickness x
of a material of radiation length X0 is

    theta0 = 13.6 MeV / (p beta c) z sqrt(x/X0) [1 + 0.038 ln(x z^2 / (X0 beta^2))].

Its logarithmic term makes theta0^2 grow faster than x, so the sum of
per-step theta0^2 computed from each step's own length falls short of the
thick-target value (by ~20 % for 1 mm steps through 10 cm of water). The engine
therefore follows the thick-target form along each track, with energy loss
folded in as in the generalised Highland formula used for proton therapy
(Gottschalk, NIM B 74 (1993) 467; arXiv:0908.1413):

    theta0^2(x) = (13.6 MeV z)^2 [1 + 0.038 ln(X z^2 / beta^2)]^2 * sum ds / (X0 (p beta c)^2)

where X = sum ds/X0 is the thickness traversed in radiation lengths (summed
over materials) and beta the current speed. Each step draws the *increment*
theta0^2(after) - theta0^2(before) (never negative), in two independent
transverse planes, with the correlated lateral displacement of a step of
constant scattering power (Fermi-Eyges moments: <theta^2> = T s,
<y theta> = T s^2/2, <y^2> = T s^3/3):

    theta = sigma z1,   y = s sigma (z1/2 + z2/(2 sqrt 3)),   z1, z2 ~ N(0, 1).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from services.engine.constants import HIGHLAND_LOG, HIGHLAND_MEV

FloatArray = NDArray[np.float64]

SQRT12 = float(np.sqrt(12.0))


def p_beta_c(t_total: FloatArray, mass: float) -> FloatArray:
    """P beta c = (pc)^2 / E of an ion of kinetic energy ``t_total`` and rest energy ``mass``."""
    return t_total * (t_total + 2 * mass) / (t_total + mass)


def highland_theta2(z: int, inverse_pv2_path: FloatArray, radiation_lengths: FloatArray,
                    beta2: FloatArray) -> FloatArray:
    """theta0^2 of the generalised Highland formula (see the module docstring)."""
    log_arg = np.maximum(radiation_lengths * z * z / beta2, 1e-30)
    factor = np.maximum(1.0 + HIGHLAND_LOG * np.log(log_arg), 0.0)
    return (HIGHLAND_MEV * z) ** 2 * factor**2 * inverse_pv2_path


def rotate(u: FloatArray, *local: FloatArray) -> tuple[FloatArray, ...]:
    """Vectors given in the frame whose z axis is the unit vector ``u`` (rows), in the lab.

    The frame's x axis lies in the plane of u and the lab z axis (the rotation of
    CLHEP's ``Hep3Vector::rotateUz``); several sets of vectors share one frame.
    """
    ux, uy, uz = u[:, 0], u[:, 1], u[:, 2]
    perp = np.sqrt(ux * ux + uy * uy)
    along = perp <= 1e-12
    safe = np.where(along, 1.0, perp)
    # Columns of the rotation: images of the local x, y and z axes.
    ex = np.column_stack((ux * uz / safe, uy * uz / safe, -perp))
    ey = np.column_stack((-uy / safe, ux / safe, np.zeros(len(u))))
    if along.any():
        sign = np.where(uz[along] >= 0, 1.0, -1.0)
        ex[along] = np.column_stack((sign, np.zeros_like(sign), np.zeros_like(sign)))
        ey[along] = (0.0, 1.0, 0.0)
    return tuple(v[:, 0:1] * ex + v[:, 1:2] * ey + v[:, 2:3] * u for v in local)
