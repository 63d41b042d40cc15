"""Solid figures of the editor as SHIELD-HIT12A bodies (RPP, BOX, RCC, SPH).

The editor stores each figure as its centre, its size and a rotation: three
angles in degrees, applied as three.js applies an ``Euler`` of order XYZ,
i.e. the rotation matrix ``Rx(a) @ Ry(b) @ Rz(c)`` (intrinsic X, then the
turned Y, then the twice-turned Z). A box's edges and a cylinder's axis
(the local z axis, as the editor's cylinder geometry is built along z) are
turned by that matrix, so geo.dat shows what the editor drew.

A box whose turned edges still lie along the axes is written as an RPP,
anything else as a BOX (corner + three edge vectors); a cylinder is an RCC
from the centre of its base along its turned axis; a hollow cylinder is two
RCCs (outer minus inner); a sphere ignores its rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Vector = tuple[float, float, float]
Matrix = tuple[Vector, Vector, Vector]

#: Components this small relative to the vector's length are rounding noise of
#: sin/cos (cos 90 deg = 6e-17) and are written as 0.
_NOISE = 1e-12


def rotation_matrix(degrees: Vector) -> Matrix:
    """``Rx @ Ry @ Rz`` for three.js Euler angles (order XYZ) given in degrees."""
    a, b, c = (math.radians(d) for d in degrees)
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), \
        math.cos(c), math.sin(c)
    return (
        (cb * cc, -cb * sc, sb),
        (ca * sc + sa * sb * cc, ca * cc - sa * sb * sc, -sa * cb),
        (sa * sc - ca * sb * cc, sa * cc + ca * sb * sc, ca * cb),
    )


def apply(matrix: Matrix, vector: Vector) -> Vector:
    """``matrix @ vector`` with rounding noise cleaned off."""
    x, y, z = (sum(row[i] * vector[i] for i in range(3)) for row in matrix)
    scale = max(abs(x), abs(y), abs(z))
    return (_clean(x, scale), _clean(y, scale), _clean(z, scale))


def _clean(value: float, scale: float) -> float:
    return 0.0 if abs(value) <= _NOISE * scale else value


def add(a: Vector, b: Vector, factor: float = 1.0) -> Vector:
    """``a + factor * b``."""
    return (a[0] + factor * b[0], a[1] + factor * b[1], a[2] + factor * b[2])


def along_axis(vector: Vector) -> bool:
    """Whether at most one component is non-zero."""
    return sum(1 for c in vector if c != 0.0) <= 1


@dataclass(frozen=True)
class Body:
    """One geo.dat body card: its type and parameters (in the card's order)."""

    kind: str
    params: tuple[float, ...]


def box(centre: Vector, size: Vector, degrees: Vector) -> Body:
    """A box of edge lengths ``size`` (x, y, z before turning) centred at ``centre``."""
    matrix = rotation_matrix(degrees)
    edges = [apply(matrix, e) for e in ((size[0], 0.0, 0.0), (0.0, size[1], 0.0),
                                       (0.0, 0.0, size[2]))]
    if all(along_axis(e) for e in edges):
        half = [sum(abs(e[i]) for e in edges) / 2 for i in range(3)]
        return Body("RPP", (centre[0] - half[0], centre[0] + half[0],
                            centre[1] - half[1], centre[1] + half[1],
                            centre[2] - half[2], centre[2] + half[2]))
    corner = centre
    for edge in edges:
        corner = add(corner, edge, -0.5)
    return Body("BOX", (*corner, *edges[0], *edges[1], *edges[2]))


def cylinder(centre: Vector, radius: float, height: float, degrees: Vector) -> Body:
    """A cylinder along its turned local z axis, ``height`` long, centred at ``centre``."""
    axis = apply(rotation_matrix(degrees), (0.0, 0.0, height))
    base = add(centre, axis, -0.5)
    return Body("RCC", (*base, *axis, radius))


def sphere(centre: Vector, radius: float) -> Body:
    """A sphere (rotation does not change it)."""
    return Body("SPH", (*centre, radius))
