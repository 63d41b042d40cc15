"""Vectorised combinatorial geometry: which zone a point is in, how far to the next surface.

All bodies are convex, so a ray meets each in at most one interval [t_in, t_out].
The next surface a particle can cross is the nearest positive end of those
intervals over all bodies; zone membership can only change there. Steps that
would cross are cut at that distance plus :data:`PUSH` and the zone is found
again from the new position.

To avoid ray-casting every step, each particle carries a *safety*: a lower
bound on its distance to every body surface, in any direction (exact for
spheres, boxes and cylinders, a lower bound for parallelepipeds). A step
shorter than the safety cannot cross a surface; the safety is decreased by the
distance moved and recomputed only when a step would exceed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.engine.input.model import Body, BodyKind, Geometry

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

PUSH = 1e-6
"""How far (cm) past a surface a boundary-limited step ends, so the new zone is unambiguous."""
EPS = 1e-9
"""Intersections closer than this (cm) count as behind the particle."""
OUTSIDE = -1
"""Zone index of a point that is in no zone (outside the world)."""


@dataclass(frozen=True)
class ConvexBody:
    """A body in the form the vector code needs (precomputed frames, inverses)."""

    kind: BodyKind
    params: FloatArray
    #: For BOX: inverse of the edge matrix, unit face normals and heights.
    inverse: FloatArray | None = None
    normals: FloatArray | None = None
    heights: FloatArray | None = None

    @classmethod
    def of(cls, body: Body) -> ConvexBody:
        p = np.asarray(body.params, dtype=float)
        if body.kind is not BodyKind.BOX:
            return cls(body.kind, p)
        edges = p[3:12].reshape(3, 3)  # rows: the three edge vectors
        inverse = np.linalg.inv(edges.T)
        normals = np.empty((3, 3))
        heights = np.empty(3)
        for i in range(3):
            n = np.cross(edges[(i + 1) % 3], edges[(i + 2) % 3])
            n /= np.linalg.norm(n)
            if np.dot(n, edges[i]) < 0:
                n = -n
            normals[i] = n
            heights[i] = float(np.dot(n, edges[i]))
        return cls(body.kind, p, inverse, normals, heights)

    # --- membership -----------------------------------------------------------------

    def inside(self, x: FloatArray) -> BoolArray:
        """Whether each point (rows of ``x``, shape (n, 3)) is inside (surface included)."""
        p = self.params
        result: BoolArray
        if self.kind is BodyKind.SPH:
            w = x - p[:3]
            result = np.einsum("ij,ij->i", w, w) <= p[3] ** 2
        elif self.kind is BodyKind.RPP:
            result = ((x[:, 0] >= p[0]) & (x[:, 0] <= p[1]) & (x[:, 1] >= p[2])
                      & (x[:, 1] <= p[3]) & (x[:, 2] >= p[4]) & (x[:, 2] <= p[5]))
        elif self.kind is BodyKind.RCC:
            axis, height = self._axis()
            w = x - p[:3]
            a = w @ axis
            radial = w - np.outer(a, axis)
            result = ((a >= 0) & (a <= height)
                      & (np.einsum("ij,ij->i", radial, radial) <= p[6] ** 2))
        else:
            assert self.inverse is not None
            s = (x - p[:3]) @ self.inverse.T
            result = np.all((s >= 0) & (s <= 1), axis=1)
        return result

    def _axis(self) -> tuple[FloatArray, float]:
        h = self.params[3:6]
        height = float(np.linalg.norm(h))
        return h / height, height

    # --- distances -------------------------------------------------------------------

    def interval(self, x: FloatArray, u: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(t_in, t_out) of the ray x + t u through the body (t_in > t_out: it misses)."""
        p = self.params
        if self.kind is BodyKind.SPH:
            w = x - p[:3]
            b = np.einsum("ij,ij->i", w, u)
            c = np.einsum("ij,ij->i", w, w) - p[3] ** 2
            disc = b * b - c
            root = np.sqrt(np.maximum(disc, 0.0))
            miss = disc < 0
            return np.where(miss, np.inf, -b - root), np.where(miss, -np.inf, -b + root)
        if self.kind is BodyKind.RPP:
            return _slabs(x, u, p[0::2], p[1::2])
        if self.kind is BodyKind.BOX:
            assert self.inverse is not None
            s = (x - p[:3]) @ self.inverse.T
            v = u @ self.inverse.T
            return _slabs(s, v, np.zeros(3), np.ones(3))
        axis, height = self._axis()
        w = x - p[:3]
        a = w @ axis
        ua = u @ axis
        w_perp = w - np.outer(a, axis)
        u_perp = u - np.outer(ua, axis)
        qa = np.einsum("ij,ij->i", u_perp, u_perp)
        qb = np.einsum("ij,ij->i", w_perp, u_perp)
        qc = np.einsum("ij,ij->i", w_perp, w_perp) - p[6] ** 2
        disc = qb * qb - qa * qc
        parallel = qa < 1e-14
        with np.errstate(divide="ignore", invalid="ignore"):
            root = np.sqrt(np.maximum(disc, 0.0))
            lo = np.where(parallel, np.where(qc <= 0, -np.inf, np.inf), (-qb - root) / qa)
            hi = np.where(parallel, np.where(qc <= 0, np.inf, -np.inf), (-qb + root) / qa)
        lo = np.where(~parallel & (disc < 0), np.inf, lo)
        hi = np.where(~parallel & (disc < 0), -np.inf, hi)
        plane_lo, plane_hi = _slab(a, ua, 0.0, height)
        return np.maximum(lo, plane_lo), np.minimum(hi, plane_hi)

    def safety(self, x: FloatArray) -> FloatArray:
        """A lower bound of the distance from each point to the body's surface."""
        p = self.params
        result: FloatArray
        if self.kind is BodyKind.SPH:
            result = np.abs(np.linalg.norm(x - p[:3], axis=1) - p[3])
        elif self.kind is BodyKind.RPP:
            result = _box_safety(x, p[0::2], p[1::2])
        elif self.kind is BodyKind.RCC:
            axis, height = self._axis()
            w = x - p[:3]
            a = w @ axis
            rho = np.linalg.norm(w - np.outer(a, axis), axis=1)
            radial = rho - p[6]
            axial = np.maximum(-a, a - height)
            inside = (radial <= 0) & (axial <= 0)
            outside = np.hypot(np.maximum(radial, 0.0), np.maximum(axial, 0.0))
            result = np.where(inside, np.minimum(-radial, -axial), outside)
        else:
            assert self.normals is not None and self.heights is not None
            d = (x - p[:3]) @ self.normals.T  # distance above each lower face plane
            violation = np.maximum(-d, d - self.heights)  # > 0 outside that pair of faces
            inside = np.all(violation <= 0, axis=1)
            result = np.where(inside, np.min(-violation, axis=1),
                              np.max(np.maximum(violation, 0.0), axis=1))
        return result


def _slab(s: FloatArray, v: FloatArray, low: float, high: float
          ) -> tuple[FloatArray, FloatArray]:
    """The t-interval where low <= s + t v <= high."""
    flat = np.abs(v) < 1e-14
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (low - s) / v
        t2 = (high - s) / v
    inside = (s >= low) & (s <= high)
    lo = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
    hi = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
    return lo, hi


def _slabs(s: FloatArray, v: FloatArray, low: FloatArray, high: FloatArray
           ) -> tuple[FloatArray, FloatArray]:
    lo = np.full(len(s), -np.inf)
    hi = np.full(len(s), np.inf)
    for k in range(3):
        a, b = _slab(s[:, k], v[:, k], float(low[k]), float(high[k]))
        lo = np.maximum(lo, a)
        hi = np.minimum(hi, b)
    return lo, hi


def _box_safety(x: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    below = low - x
    above = x - high
    violation = np.maximum(below, above)
    inside = np.all(violation <= 0, axis=1)
    outside = np.sqrt(np.sum(np.maximum(violation, 0.0) ** 2, axis=1))
    result: FloatArray = np.where(inside, np.min(-violation, axis=1), outside)
    return result


class ZoneGeometry:
    """The zones of a ``geo.dat``, for vectors of points."""

    def __init__(self, geometry: Geometry) -> None:
        self.bodies = [ConvexBody.of(b) for b in geometry.bodies]
        index = {b.number: i for i, b in enumerate(geometry.bodies)}
        #: Per zone: groups of (body index, wanted inside?) pairs.
        self.zones = [[[(index[abs(n)], n > 0) for n in group] for group in zone.groups]
                      for zone in geometry.zones]
        self.zone_media = [zone.medium for zone in geometry.zones]

    def locate(self, x: FloatArray) -> IntArray:
        """The zone index of each point (first matching zone), or :data:`OUTSIDE`."""
        inside = [body.inside(x) for body in self.bodies]
        found = np.full(len(x), OUTSIDE, dtype=np.int64)
        for z, groups in enumerate(self.zones):
            member = np.zeros(len(x), dtype=bool)
            for group in groups:
                part = np.ones(len(x), dtype=bool)
                for body, wanted in group:
                    part &= inside[body] if wanted else ~inside[body]
                member |= part
            found = np.where((found == OUTSIDE) & member, z, found)
        return found

    def distance_to_surface(self, x: FloatArray, u: FloatArray) -> FloatArray:
        """Distance along ``u`` to the nearest body surface ahead (inf: none)."""
        best = np.full(len(x), np.inf)
        for body in self.bodies:
            t_in, t_out = body.interval(x, u)
            hit = t_in <= t_out
            ahead = np.where(t_in > EPS, t_in, np.where(t_out > EPS, t_out, np.inf))
            best = np.minimum(best, np.where(hit, ahead, np.inf))
        return best

    def safety(self, x: FloatArray) -> FloatArray:
        """Distance from each point within which no body surface lies."""
        best = np.full(len(x), np.inf)
        for body in self.bodies:
            best = np.minimum(best, body.safety(x))
        return best
