"""Scoring: binning what each step leaves behind into the detectors of ``detect.dat``.

Every step of every primary reports one *scoring point*, drawn uniformly along
the step's chord, carrying the step's energy deposit, its track length and the
stopping power at mid-step. Binning the whole step at a uniformly drawn point
is an unbiased estimator of the step's track length (and, for a constant
stopping power along the step, of its energy deposit) in every bin the step
crosses; steps are short (at most DELTAE of the energy) so the bias from dE/dx
varying along a step is negligible, and the variance it adds is small beside
that of the nuclear deposits.

Quantities (per primary unless stated; SHIELD-HIT12A definitions):

* Energy: deposited energy in the bin (MeV).
* Dose: sum of (deposit / density of the medium where it happened) / bin volume
  (MeV/g); DoseGy the same in Gy (x 1.602176634e-10).
* Fluence: track length / bin volume (cm^-2).
* dLET: dose-averaged LET, sum(L dE) / sum(dE) over the primaries' steps
  (deposits of nuclear secondaries are not included), L = electronic stopping
  power of the local medium at mid-step (MeV/cm); tLET: track-averaged,
  sum(L ds) / sum(ds); AvgEnergy: fluence-averaged kinetic energy per nucleon
  (MeV/u). These three are averages, not per primary.

Statistical errors of the per-primary quantities come from batches: primaries
are dealt round-robin into batches and the standard error is that of the
batch means weighted by primaries (the same estimator as the runner's merge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.engine.constants import MEV_PER_G_TO_GY
from services.engine.input.model import Filter, GeometryKind, Output, QuantityKind

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

FLUSH_ENTRIES = 2_000_000
"""Buffered (bin, weight) entries per sum before they are binned."""
DIRECT_BINS = 65_536
"""Up to this many bins x batches, each step is binned at once (no buffering)."""

#: The sums each quantity needs (numerator, denominator or None).
SUMS: dict[QuantityKind, tuple[str, str | None]] = {
    QuantityKind.ENERGY: ("edep", None),
    QuantityKind.DOSE: ("dose", None),
    QuantityKind.DOSE_GY: ("dose", None),
    QuantityKind.FLUENCE: ("track", None),
    QuantityKind.DLET: ("let_dose", "edep_step"),
    QuantityKind.TLET: ("let_track", "track"),
    QuantityKind.AVG_ENERGY: ("energy_track", "track"),
}
AVERAGED = {QuantityKind.DLET, QuantityKind.TLET, QuantityKind.AVG_ENERGY}


@dataclass
class StepRecord:
    """What a set of steps leaves for scoring (one entry per step)."""

    point: FloatArray
    #: Energy deposited (MeV), including local deposits of nuclear interactions.
    edep: FloatArray
    #: Energy lost by the primary itself in the step (MeV; no nuclear deposits).
    edep_step: FloatArray
    #: Deposit divided by the local density (MeV cm^3/g).
    dose: FloatArray
    track: FloatArray
    #: Linear electronic stopping power at mid-step (MeV/cm).
    let: FloatArray
    #: Kinetic energy at mid-step: total (MeV) and per nucleon (MeV/u).
    energy: FloatArray
    energy_per_u: FloatArray
    batch: IntArray


def _weights(name: str, r: StepRecord) -> FloatArray:
    if name == "edep":
        return r.edep
    if name == "edep_step":
        return r.edep_step
    if name == "dose":
        return r.dose
    if name == "track":
        return r.track
    if name == "let_dose":
        return r.let * r.edep_step
    if name == "let_track":
        return r.let * r.track
    if name == "energy_track":
        return r.energy_per_u * r.track
    raise KeyError(name)


_OPS = {"==": np.equal, "!=": np.not_equal, ">=": np.greater_equal, "<=": np.less_equal,
        ">": np.greater, "<": np.less}


@dataclass(frozen=True)
class Primary:
    """What a filter can ask of the (only) particle kind transported."""

    z: int
    a: int
    jpart: int


def filter_mask(flt: Filter | None, primary: Primary, energy: FloatArray) -> FloatArray | None:
    """1.0 where the filter passes, 0.0 where not (None: no filter, everything passes)."""
    if flt is None:
        return None
    keep = np.ones(len(energy), dtype=bool)
    static = {"Z": primary.z, "A": primary.a, "GEN": 0, "ID": primary.jpart}
    for rule in flt.rules:
        op = _OPS[rule.op]
        if rule.key == "E":
            keep &= op(energy, rule.value)
        elif not op(static[rule.key], rule.value):
            keep[:] = False
    return keep.astype(float)


class Detector:
    """One Output block: its geometry's bins, and the sums its quantities need."""

    def __init__(self, output: Output, batches: int, primary: Primary) -> None:
        self.output = output
        self.geometry = output.geometry
        self.batches = batches
        self.primary = primary
        self.nbins = self.geometry.bins
        self.keys = sorted({(name, q.filter.name if q.filter else "")
                            for q in output.quantities for name in SUMS[q.kind]
                            if name is not None})
        self.filters = {q.filter.name: q.filter for q in output.quantities if q.filter}
        self.sums = {key: np.zeros((batches, self.nbins)) for key in self.keys}
        self._buffer: dict[tuple[str, str], list[tuple[IntArray, FloatArray]]] = {
            key: [] for key in self.keys}
        self._buffered = 0

    def bin_index(self, point: FloatArray) -> IntArray:
        """Flat (Fortran-order) bin of each point, -1 outside the geometry."""
        a0, a1, a2 = self.geometry.axes
        n = len(point)
        index = np.zeros(n, dtype=np.int64)
        valid = np.ones(n, dtype=bool)
        if self.geometry.kind is GeometryKind.CYL:
            r2 = point[:, 0] ** 2 + point[:, 1] ** 2
            if a0.n == 1:
                valid &= (r2 >= a0.low**2) & (r2 < a0.high**2)
                coordinates = [(None, a0), (point[:, 2], a2)]
            else:
                coordinates = [(np.sqrt(r2), a0), (point[:, 2], a2)]
            strides = [1, a0.n]
        else:
            coordinates = [(point[:, 0], a0), (point[:, 1], a1), (point[:, 2], a2)]
            strides = [1, a0.n, a0.n * a1.n]
        for (values, axis), stride in zip(coordinates, strides, strict=True):
            if values is None:
                continue
            if axis.n == 1:
                valid &= (values >= axis.low) & (values < axis.high)
                continue
            i = np.floor((values - axis.low) * (1.0 / axis.width)).astype(np.int64)
            valid &= (i >= 0) & (i < axis.n)
            if stride == 1:
                index += i
            else:
                index += stride * i
        return np.where(valid, index, -1)

    def add(self, record: StepRecord) -> None:
        if len(record.edep) == 0:
            return
        index = self.bin_index(record.point)
        inside = index >= 0
        if not inside.any():
            return
        everywhere = bool(inside.all())
        flat = index if everywhere else index[inside]
        if self.batches > 1:
            flat = flat + self.nbins * (record.batch if everywhere else record.batch[inside])
        energy = record.energy if everywhere else record.energy[inside]
        masks: dict[str, FloatArray | None] = {"": None}
        for name, flt in self.filters.items():
            masks[name] = filter_mask(flt, self.primary, energy)
        direct = self.nbins * self.batches <= DIRECT_BINS
        for key in self.keys:
            weights = _weights(key[0], record)
            if not everywhere:
                weights = weights[inside]
            mask = masks[key[1]]
            if mask is not None:
                weights = weights * mask
            if direct:
                self.sums[key].ravel()[:] += np.bincount(
                    flat, weights, minlength=self.nbins * self.batches)
            else:
                self._buffer[key].append((flat, weights))
        if not direct:
            self._buffered += len(flat)
            if self._buffered > FLUSH_ENTRIES:
                self.flush()

    def flush(self) -> None:
        size = self.nbins * self.batches
        for key, parts in self._buffer.items():
            if not parts:
                continue
            flat = np.concatenate([p[0] for p in parts])
            weights = np.concatenate([p[1] for p in parts])
            self.sums[key] += np.bincount(flat, weights, minlength=size).reshape(
                self.batches, self.nbins)
            parts.clear()
        self._buffered = 0

    def volumes(self) -> FloatArray:
        """Volume of each bin (cm^3), in the flat order."""
        a0, a1, a2 = self.geometry.axes
        if self.geometry.kind is GeometryKind.CYL:
            # Annulus area times the azimuthal fraction of the (single, full) PHI bin.
            edges = np.linspace(a0.low, a0.high, a0.n + 1)
            first = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
            second = np.full(a1.n, a1.width / (2 * math.pi))
        else:
            first = np.full(a0.n, a0.width)
            second = np.full(a1.n, a1.width)
        grid = (first[:, None, None] * second[None, :, None]
                * np.full(a2.n, a2.width)[None, None, :])
        volumes: FloatArray = grid.ravel(order="F")
        return volumes

    def page_values(self, kind: QuantityKind, filter_name: str, primaries_per_batch: IntArray
                    ) -> tuple[FloatArray, FloatArray | None]:
        """(values, standard errors or None) of one quantity, after :meth:`flush`."""
        numerator, denominator = SUMS[kind]
        num = self.sums[(numerator, filter_name)]
        if denominator is not None:
            den = self.sums[(denominator, filter_name)].sum(axis=0)
            total = num.sum(axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(den > 0, total / den, 0.0), None
        scale = np.ones(self.nbins)
        if kind in (QuantityKind.DOSE, QuantityKind.DOSE_GY, QuantityKind.FLUENCE):
            scale = 1.0 / self.volumes()
        if kind is QuantityKind.DOSE_GY:
            scale = scale * MEV_PER_G_TO_GY
        n = primaries_per_batch.astype(float)
        used = n > 0
        total_n = n.sum()
        mean = num.sum(axis=0) / total_n * scale
        if used.sum() < 2:
            return mean, None
        batch_means = num[used] / n[used][:, None] * scale
        spread = (n[used][:, None] * (batch_means - mean) ** 2).sum(axis=0) / (used.sum() - 1)
        return mean, np.sqrt(spread / total_n)
