"""Condensed-history transport of primaries, vectorised over particles.

One chunk of primaries is transported at once: every particle property is one
NumPy array, and each iteration takes one step for every live particle. A
step in a material is the shortest of

* the energy step: the path over which the mean (CSDA) energy falls by the
  fraction DELTAE, from the range table; below :data:`T_CUT` the final step
  runs out the residual CSDA range and deposits all that is left;
* the distance to the next nuclear interaction (a number of mean free paths
  drawn at birth from Exp(1), used up at the removal cross-section's rate);
* the distance to the next body surface (only looked up when the step is longer
  than the particle's safety, see :mod:`services.engine.geometry`).

Along the step the mean energy loss comes from the range table (exact CSDA for
any step length); energy-loss straggling adds a Gaussian of Bohr's variance
with its relativistic factor (the thick-absorber limit of Vavilov's theory, as
in ICRU Report 49 and Geant4's G4UniversalFluctuation for thick steps):

    Omega^2 = K m_e c^2 (Z/A) rho s z_eff^2 gamma^2 (1 - beta^2/2),

multiple scattering deflects and displaces the particle (Highland, see
:mod:`services.engine.scattering`), and the step is scored at a point drawn
uniformly along it (:mod:`services.engine.scoring`). Vacuum zones are crossed
in straight steps to the next surface; entering the black hole (medium 0) or
leaving every zone ends the particle and counts its energy as escaped.

The energy balance of every chunk closes exactly: the beam energy equals the
deposited energy (steps, final steps, local nuclear deposits) plus the escaped
energy plus the energy of nuclear secondaries that are not transported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from services.engine.constants import BETHE_K, ELECTRON_MASS_MEV
from services.engine.geometry import OUTSIDE, PUSH, ZoneGeometry
from services.engine.input.model import EngineInput
from services.engine.materials import BLACK_HOLE, VACUUM
from services.engine.nuclear import LOCAL_FRACTION, macroscopic_cross_section
from services.engine.scattering import SQRT12, highland_theta2, p_beta_c, rotate
from services.engine.scoring import Detector, StepRecord
from services.engine.source import sample_primaries
from services.engine.stopping import (
    TABLE_T_MIN,
    RangeTable,
    Tabulated,
    effective_charge,
    kinematics,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

T_CUT = 1.0
"""MeV/u: a primary below this runs out its residual CSDA range (< 25 um in water) in one step."""
VACUUM_STEP = 5.0
"""Longest straight step (cm) through vacuum, so fluence in vacuum is binned finely enough."""
MEDIUM_DEAD = -3
MEDIUM_VACUUM = -2
MEDIUM_BLACK_HOLE = -1
COMPACT_FRACTION = 0.1
"""Arrays are compacted once this fraction of their particles has ended."""
MAX_STRATA = 4
"""A step is scored at up to this many stratified points (one per bin width of its length)."""


@dataclass
class EnergyBalance:
    """Where the beam's energy went (MeV, summed over primaries)."""

    beam: float = 0.0
    deposited: float = 0.0
    escaped: float = 0.0
    nuclear_not_transported: float = 0.0

    def add(self, other: EnergyBalance) -> None:
        self.beam += other.beam
        self.deposited += other.deposited
        self.escaped += other.escaped
        self.nuclear_not_transported += other.nuclear_not_transported


@dataclass(frozen=True)
class MediumPhysics:
    """What a step needs to know about one medium (a material at a density)."""

    density: float
    table: RangeTable
    x0_cm: float
    z_over_a: float
    #: Removal cross-section per gram (cm^2/g) on the table's ln T grid.
    sigma: Tabulated


@dataclass
class _Particles:
    """The live particles of a chunk, one array per property."""

    x: FloatArray
    u: FloatArray
    t: FloatArray
    zone: IntArray
    medium: IntArray
    safety: FloatArray
    lambdas: FloatArray
    scatter_path: FloatArray
    scatter_x0: FloatArray
    theta2: FloatArray
    batch: IntArray
    alive: NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        self.alive = np.ones(len(self.t), dtype=bool)

    def kill(self, which: IntArray | NDArray[np.bool_]) -> None:
        self.alive[which] = False
        self.medium[which] = MEDIUM_DEAD

    def compact(self, force: bool = False) -> None:
        """Drop ended particles from the arrays (when enough have ended, or ``force``)."""
        keep = self.alive
        dead = len(keep) - int(np.count_nonzero(keep))
        if dead == 0 or (not force and dead < COMPACT_FRACTION * len(keep)):
            return
        for name in ("x", "u", "t", "zone", "medium", "safety", "lambdas", "scatter_path",
                     "scatter_x0", "theta2", "batch"):
            setattr(self, name, getattr(self, name)[keep])
        self.alive = np.ones(len(self.t), dtype=bool)


class Transport:
    """Transports chunks of primaries of one input through its geometry into detectors."""

    def __init__(self, engine_input: EngineInput, detectors: Sequence[Detector]) -> None:
        self.input = engine_input
        self.beam = engine_input.beam
        self.projectile = engine_input.beam.projectile
        self.detectors = list(detectors)
        self.geometry = ZoneGeometry(engine_input.geometry)
        #: The narrowest bin of any detector: steps longer than this are scored at several
        #: stratified points, so thin bins do not get all-or-nothing deposits.
        self.stratum = min((axis.width for d in self.detectors
                            for i, axis in enumerate(d.geometry.axes)
                            if axis.n > 1 or i != 1), default=np.inf)
        numbers = sorted(engine_input.media)
        index = {n: i for i, n in enumerate(numbers)}
        tables: dict[int, RangeTable] = {}
        self.media: list[MediumPhysics] = []
        for n in numbers:
            medium = engine_input.media[n]
            material = medium.material
            if material.icru not in tables:
                tables[material.icru] = RangeTable.build(self.projectile, material)
            table = tables[material.icru]
            sigma = macroscopic_cross_section(np.exp(table.ln_t), self.projectile, material)
            self.media.append(MediumPhysics(medium.density, table,
                                            material.radiation_length / medium.density,
                                            material.z_over_a, Tabulated.of(sigma)))
        codes = []
        for number in self.geometry.zone_media:
            if number == BLACK_HOLE:
                codes.append(MEDIUM_BLACK_HOLE)
            elif number == VACUUM:
                codes.append(MEDIUM_VACUUM)
            else:
                codes.append(index[number])
        self.zone_medium = np.asarray(codes, dtype=np.int64)

    # --- one chunk -------------------------------------------------------------------

    def run(self, n: int, batch: IntArray, rng: np.random.Generator) -> EnergyBalance:
        """Transport ``n`` primaries (``batch``: the statistics batch of each) to the end."""
        balance = EnergyBalance()
        x, u, t = sample_primaries(self.beam, n, rng)
        a = self.projectile.a
        balance.beam = float(a * t.sum())
        zone = self.geometry.locate(x)
        p = _Particles(x=x, u=u, t=t, zone=zone, medium=self._medium_of(zone),
                       safety=self.geometry.safety(x), lambdas=rng.exponential(1.0, n),
                       scatter_path=np.zeros(n), scatter_x0=np.zeros(n), theta2=np.zeros(n),
                       batch=batch.astype(np.int64))
        self._absorb(p, balance)
        p.compact(force=True)
        offset = -MEDIUM_DEAD
        while True:
            present = np.flatnonzero(np.bincount(p.medium + offset)) - offset
            codes = [int(c) for c in present if c != MEDIUM_DEAD]
            if not codes:
                break
            for code in codes:
                where = np.flatnonzero(p.medium == code)
                if code == MEDIUM_VACUUM:
                    self._vacuum_step(p, where, balance, rng)
                else:
                    self._material_step(p, where, code, balance, rng)
            self._absorb(p, balance)
            p.compact()
        for detector in self.detectors:
            detector.flush()
        return balance

    def _medium_of(self, zone: IntArray) -> IntArray:
        return np.where(zone == OUTSIDE, MEDIUM_BLACK_HOLE,
                        self.zone_medium[np.maximum(zone, 0)])

    def _absorb(self, p: _Particles, balance: EnergyBalance) -> None:
        """End particles in the black hole or outside every zone; their energy escapes."""
        gone = p.alive & (p.medium == MEDIUM_BLACK_HOLE)
        if gone.any():
            balance.escaped += float(self.projectile.a * p.t[gone].sum())
            p.kill(gone)

    def _relocate(self, p: _Particles, where: IntArray) -> None:
        if len(where) == 0:
            return
        zone = self.geometry.locate(p.x[where])
        p.zone[where] = zone
        p.medium[where] = self._medium_of(zone)
        p.safety[where] = self.geometry.safety(p.x[where])

    def _stratified(self, start: FloatArray, chord: FloatArray, step: FloatArray,
                    record: StepRecord, rng: np.random.Generator) -> StepRecord:
        """The steps of ``record`` scored at points drawn uniformly along their chords.

        A step k bin widths long (k <= MAX_STRATA) is split into k equal strata, each
        scored at a uniform point in it with 1/k of the step's weights: unbiased, like
        one uniform point, with much less variance in bins thinner than the step.
        """
        n = len(step)
        parts = np.clip(np.ceil(step / self.stratum), 1, MAX_STRATA).astype(np.int64)
        if n == 0 or int(parts.max()) == 1:
            return replace(record, point=start + chord * rng.random(n)[:, None])
        owner = np.repeat(np.arange(n), parts)
        first = np.cumsum(parts) - parts
        fraction = (np.arange(len(owner)) - first[owner] + rng.random(len(owner))) / parts[owner]
        share = 1.0 / parts[owner]
        return StepRecord(point=start[owner] + chord[owner] * fraction[:, None],
                          edep=record.edep[owner] * share,
                          edep_step=record.edep_step[owner] * share,
                          dose=record.dose[owner] * share, track=record.track[owner] * share,
                          let=record.let[owner], energy=record.energy[owner],
                          energy_per_u=record.energy_per_u[owner], batch=record.batch[owner])

    def _score(self, record: StepRecord) -> None:
        for detector in self.detectors:
            detector.add(record)

    # --- vacuum ----------------------------------------------------------------------

    def _vacuum_step(self, p: _Particles, where: IntArray, balance: EnergyBalance,
                     rng: np.random.Generator) -> None:
        x, u = p.x[where], p.u[where]
        distance = self.geometry.distance_to_surface(x, u)
        leaves = ~np.isfinite(distance)
        if leaves.any():  # nothing ahead: the particle leaves the world
            balance.escaped += float(self.projectile.a * p.t[where[leaves]].sum())
            p.kill(where[leaves])
        crossing = distance < VACUUM_STEP
        step = np.where(crossing, distance + PUSH, VACUUM_STEP)
        step[leaves] = 0.0
        t = p.t[where]
        moved = x + u * step[:, None]
        zeros = np.zeros(len(where))
        a = self.projectile.a
        self._score(self._stratified(x, moved - x, step, StepRecord(
            point=x, edep=zeros, edep_step=zeros, dose=zeros, track=step, let=zeros,
            energy=a * t, energy_per_u=t, batch=p.batch[where]), rng))
        p.x[where] = moved
        self._relocate(p, where[~leaves])  # the zone comes from the position, always

    # --- material --------------------------------------------------------------------

    def _material_step(self, p: _Particles, where: IntArray, code: int,
                       balance: EnergyBalance, rng: np.random.Generator) -> None:
        medium = self.media[code]
        beam = self.beam
        table = medium.table
        rho = medium.density
        a, z, mass = self.projectile.a, self.projectile.z, self.projectile.mass
        t = p.t[where]
        m = len(where)
        ln_t = np.log(t)
        cell = table.energy_grid.locate(ln_t)
        r = np.exp(table.ln_range.at(cell))
        t_low = t * (1.0 - beam.delta_e)
        final = t_low < T_CUT
        r_low = table.csda_range(np.maximum(t_low, TABLE_T_MIN))
        step = np.where(final, r, r - r_low) / rho
        nuclear = np.zeros(m, dtype=bool)
        if beam.nuclear:
            sigma = medium.sigma.at(cell) * rho
            with np.errstate(divide="ignore"):
                to_interaction = np.where(sigma > 0, p.lambdas[where] / sigma, np.inf)
            nuclear = to_interaction < step
            step = np.minimum(step, to_interaction)
        else:
            sigma = np.zeros(m)
        boundary = np.zeros(m, dtype=bool)
        check = step > p.safety[where]
        if check.any():
            looked = where[check]
            distance = self.geometry.distance_to_surface(p.x[looked], p.u[looked])
            hit = distance < step[check]
            boundary[check] = hit
            step[check] = np.where(hit, distance + PUSH, step[check])
        nuclear &= ~boundary
        final &= ~(boundary | nuclear)  # a cut-short final step is an ordinary one
        # Mean energy after the step, from the range table (exact CSDA).
        r_after = r - step * rho
        t_mean = np.where(final, 0.0,
                          table.energy_at_range(np.maximum(r_after, table.min_range)))
        t_mid = 0.5 * (t + t_mean)
        beta2, gamma = kinematics(t_mid, self.projectile)
        loss = a * (t - t_mean)
        normals = rng.standard_normal((5, m))
        if beam.straggling:
            z_eff = effective_charge(np.sqrt(beta2), z)
            variance = (BETHE_K * ELECTRON_MASS_MEV * medium.z_over_a * rho * step
                        * z_eff**2 * gamma**2 * (1.0 - 0.5 * beta2))
            loss = np.clip(loss + np.sqrt(variance) * normals[0], 0.0, a * t)
            loss = np.where(final, a * t, loss)
        t_after = t - loss / a
        ended = final | (t_after <= 0.0)
        t_after = np.where(ended, 0.0, t_after)
        # Multiple scattering.
        x_old, u_old = p.x[where], p.u[where]
        if beam.scattering:
            pv = p_beta_c(a * t_mid, mass)
            path = p.scatter_path[where] + step / (medium.x0_cm * pv * pv)
            thick = p.scatter_x0[where] + step / medium.x0_cm
            beta2_end = np.where(ended, beta2, kinematics(np.maximum(t_after, 1e-6),
                                                          self.projectile)[0])
            theta2 = highland_theta2(z, path, thick, beta2_end)
            sigma_theta = np.sqrt(np.maximum(theta2 - p.theta2[where], 0.0))
            p.scatter_path[where] = path
            p.scatter_x0[where] = thick
            p.theta2[where] = theta2
            theta_x = sigma_theta * normals[1]
            theta_y = sigma_theta * normals[3]
            lateral = np.where(boundary, 0.0, step * sigma_theta)
            shift = np.column_stack((lateral * (0.5 * normals[1] + normals[2] / SQRT12),
                                     lateral * (0.5 * normals[3] + normals[4] / SQRT12),
                                     step))
            turn = np.column_stack((theta_x, theta_y, np.ones(m)))
            turn /= np.sqrt(1.0 + theta_x**2 + theta_y**2)[:, None]
            displacement, p.u[where] = rotate(u_old, shift, turn)
        else:
            displacement = u_old * step[:, None]
        x_new = x_old + displacement
        p.x[where] = x_new
        # Scoring: the step at stratified uniform points along its chord, then nuclear
        # deposits. LET: the step's mean (CSDA) stopping power, the mean loss per length.
        let = a * (t - t_mean) / np.maximum(step, 1e-300)
        record = self._stratified(x_old, displacement, step, StepRecord(
            point=x_old, edep=loss, edep_step=loss, dose=loss / rho, track=step, let=let,
            energy=a * t_mid, energy_per_u=t_mid, batch=p.batch[where]), rng)
        balance.deposited += float(loss.sum())
        interacting = nuclear & ~ended
        if interacting.any():
            left = a * t_after[interacting]
            local = LOCAL_FRACTION * left
            balance.deposited += float(local.sum())
            balance.nuclear_not_transported += float((left - local).sum())
            k = int(interacting.sum())
            zeros = np.zeros(k)
            record = StepRecord(
                point=np.concatenate((record.point, x_new[interacting])),
                edep=np.concatenate((record.edep, local)),
                edep_step=np.concatenate((record.edep_step, zeros)),
                dose=np.concatenate((record.dose, local / rho)),
                track=np.concatenate((record.track, zeros)),
                let=np.concatenate((record.let, zeros)),
                energy=np.concatenate((record.energy, left)),
                energy_per_u=np.concatenate((record.energy_per_u, t_after[interacting])),
                batch=np.concatenate((record.batch, p.batch[where[interacting]])))
        self._score(record)
        p.t[where] = t_after
        if beam.nuclear:
            p.lambdas[where] -= sigma * step
        p.kill(where[ended | interacting])
        # Geometry: the safety shrinks by the distance moved. Where a surface was near (the
        # step was ray-cast) or the chord outgrew the safety, the zone is found again from
        # the position, so a surface grazed within EPS can never be crossed unnoticed.
        moved = np.sqrt(np.einsum("ij,ij->i", displacement, displacement))
        p.safety[where] -= moved
        again = boundary | check | (p.safety[where] < 0)
        self._relocate(p, where[again & ~ended & ~interacting])
