"""Sampling primaries from the beam of ``beam.dat``."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from services.engine.input.model import Beam, SpotShape
from services.engine.scattering import rotate

FloatArray = NDArray[np.float64]


def sample_energies(beam: Beam, n: int, rng: np.random.Generator) -> FloatArray:
    """Kinetic energies per nucleon: Gaussian around TMAX0, redrawn outside TCUT0 and <= 0."""
    low, high = beam.energy_cut if beam.energy_cut is not None else (0.0, np.inf)
    low = max(low, 0.0)
    energies = np.full(n, beam.energy)
    if beam.energy_sigma == 0:
        return energies
    todo = np.arange(n)
    while len(todo):  # the parser made sure at least 1e-3 of draws are accepted
        draw = rng.normal(beam.energy, beam.energy_sigma, len(todo))
        ok = (draw > low) & (draw <= high) & (draw > 0)
        energies[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return energies


def _spot(beam: Beam, n: int, rng: np.random.Generator) -> FloatArray:
    a, b = beam.spot_size
    if beam.spot is SpotShape.PENCIL:
        return np.zeros((n, 2))
    if beam.spot is SpotShape.GAUSSIAN:
        return np.stack((rng.normal(0, a, n), rng.normal(0, b, n)), axis=1)
    if beam.spot is SpotShape.RECTANGLE:
        return np.stack((rng.uniform(-a, a, n), rng.uniform(-b, b, n)), axis=1)
    radius = b * np.sqrt(rng.random(n))
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack((radius * np.cos(angle), radius * np.sin(angle)), axis=1)


def sample_primaries(beam: Beam, n: int, rng: np.random.Generator
                     ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(positions, unit directions, kinetic energies per nucleon) of ``n`` primaries.

    The spot and the divergence are taken in the plane across the beam
    direction (for BEAMDIR 0 0 that is the x-y plane).
    """
    axis = np.tile(np.asarray(beam.direction, dtype=float), (n, 1))
    offset = _spot(beam, n, rng)
    positions = np.asarray(beam.position, dtype=float) + rotate(
        axis, np.column_stack((offset, np.zeros(n))))[0]
    dx, dy = beam.divergence
    if dx or dy:
        tx = np.tan(rng.normal(0, dx, n)) if dx else np.zeros(n)
        ty = np.tan(rng.normal(0, dy, n)) if dy else np.zeros(n)
        local = np.column_stack((tx, ty, np.ones(n)))
        local /= np.linalg.norm(local, axis=1)[:, None]
        directions = rotate(axis, local)[0]
    else:
        directions = axis
    return positions, directions, sample_energies(beam, n, rng)
