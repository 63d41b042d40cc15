"""Proving that a body lies inside the world body, so that a zone needs no clipping.

Every zone is clipped to the world body (``+W`` added to its terms) unless
the term already lies inside it: a term lies inside W when one of its
``+n`` bodies does, and a body lies inside a convex W when the corners of
its axis-aligned bounding box do. The proof is conservative: "not proven"
only costs one more ``+W`` in a zone line, never a wrong geometry.
"""

from __future__ import annotations

import itertools
import math

from services.converter.geometry import Body, Vector

#: Relative tolerance for points on W's surface (a figure as large as the world).
_TOLERANCE = 1e-9


def bounding_box(body: Body) -> tuple[Vector, Vector]:
    """The axis-aligned box around a body: (lowest corner, highest corner)."""
    p = body.params
    if body.kind == "RPP":
        return (p[0], p[2], p[4]), (p[1], p[3], p[5])
    if body.kind == "SPH":
        r = p[3]
        return (p[0] - r, p[1] - r, p[2] - r), (p[0] + r, p[1] + r, p[2] + r)
    if body.kind == "BOX":
        corners = [tuple(p[i] + a * p[3 + i] + b * p[6 + i] + c * p[9 + i] for i in range(3))
                   for a, b, c in itertools.product((0, 1), repeat=3)]
        lo = tuple(min(c[i] for c in corners) for i in range(3))
        hi = tuple(max(c[i] for c in corners) for i in range(3))
        return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])
    # RCC: a disc of radius r around each end of the axis.
    base, axis, r = p[0:3], p[3:6], p[6]
    norm = math.sqrt(sum(a * a for a in axis))
    spread = [r * math.sqrt(max(0.0, 1.0 - (a / norm) ** 2)) for a in axis]
    ends = [(base[i], base[i] + axis[i]) for i in range(3)]
    lo3 = [min(ends[i]) - spread[i] for i in range(3)]
    hi3 = [max(ends[i]) + spread[i] for i in range(3)]
    return (lo3[0], lo3[1], lo3[2]), (hi3[0], hi3[1], hi3[2])


def _scale(body: Body) -> float:
    return max(1.0, *(abs(v) for v in body.params))


def contains_point(body: Body, point: Vector) -> bool:
    """Whether ``point`` is inside ``body`` (surface included, within a tolerance)."""
    p = body.params
    eps = _TOLERANCE * _scale(body)
    if body.kind == "RPP":
        return all(p[2 * i] - eps <= point[i] <= p[2 * i + 1] + eps for i in range(3))
    if body.kind == "SPH":
        d = math.dist(point, p[0:3])
        return d <= p[3] + eps
    if body.kind == "BOX":
        rel = [point[i] - p[i] for i in range(3)]
        for k in range(3):
            edge = p[3 + 3 * k: 6 + 3 * k]
            length2 = sum(e * e for e in edge)
            t = sum(rel[i] * edge[i] for i in range(3))
            if t < -eps * math.sqrt(length2) or t > length2 + eps * math.sqrt(length2):
                return False
        return True
    base, axis, r = p[0:3], p[3:6], p[6]
    length = math.sqrt(sum(a * a for a in axis))
    rel = [point[i] - base[i] for i in range(3)]
    t = sum(rel[i] * axis[i] for i in range(3)) / length
    if t < -eps or t > length + eps:
        return False
    radial2 = sum(c * c for c in rel) - t * t
    return radial2 <= (r + eps) ** 2


def inside(body: Body, world: Body) -> bool:
    """Whether ``body`` provably lies inside the convex body ``world``."""
    lo, hi = bounding_box(body)
    return all(contains_point(world, (x, y, z))
               for x, y, z in itertools.product(*zip(lo, hi, strict=True)))
