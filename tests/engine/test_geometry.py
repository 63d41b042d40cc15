"""Bodies and zones: membership, distance along a ray, and the safety distance."""

from __future__ import annotations

import numpy as np
import pytest

from services.engine.geometry import OUTSIDE, ConvexBody, ZoneGeometry
from services.engine.input.model import Body, BodyKind, Geometry, Zone

BODIES = {
    "RPP": Body(BodyKind.RPP, 1, (-1.0, 2.0, -0.5, 0.5, 0.0, 3.0), 1),
    "SPH": Body(BodyKind.SPH, 1, (0.5, -0.2, 1.0, 1.3), 1),
    "RCC": Body(BodyKind.RCC, 1, (0.1, 0.2, -0.5, 1.0, 1.5, 2.0, 0.8), 1),
    "BOX": Body(BodyKind.BOX, 1, (-0.5, -0.5, 0.0, 1.2, 0.9, 0.0, -0.6, 0.8, 0.0,
                                  0.0, 0.0, 2.0), 1),
}


def random_rays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 4, (n, 3))
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1)[:, None]
    return x, u


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_first_crossing_is_where_membership_changes(kind: str) -> None:
    body = ConvexBody.of(BODIES[kind])
    x, u = random_rays(3000, 1)
    t_in, t_out = body.interval(x, u)
    hit = t_in <= t_out
    assert hit.sum() > 200  # the test must see rays that hit
    ahead = np.where(t_in > 1e-9, t_in, np.where(t_out > 1e-9, t_out, np.inf))
    first = np.where(hit, ahead, np.inf)
    start = body.inside(x)
    # Marching along the ray: membership is unchanged before the first crossing ...
    for fraction in (0.1, 0.5, 0.99):
        probe = np.where(np.isfinite(first), first * fraction, 10.0)
        assert np.array_equal(body.inside(x + probe[:, None] * u), start)
    # ... and flips just after it.
    finite = np.isfinite(first)
    after = body.inside(x[finite] + (first[finite] + 1e-6)[:, None] * u[finite])
    assert np.array_equal(after, ~start[finite])


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_safety_is_a_lower_bound(kind: str) -> None:
    body = ConvexBody.of(BODIES[kind])
    x, u = random_rays(400, 2)
    safety = body.safety(x)
    assert np.all(safety >= 0)
    t_in, t_out = body.interval(x, u)
    hit = t_in <= t_out
    crossing = np.where(t_in > 0, t_in, np.where(t_out > 0, t_out, np.inf))
    distance = np.where(hit, crossing, np.inf)
    assert np.all(safety <= distance + 1e-12)
    # Not uselessly small: for spheres, boxes and cylinders it is the exact distance.
    if kind != "BOX":
        assert np.median(safety) > 0.1


def test_zones_with_unions_and_the_outside() -> None:
    geometry = Geometry("t", (
        Body(BodyKind.RPP, 1, (0.0, 1.0, 0.0, 1.0, 0.0, 1.0), 1),
        Body(BodyKind.SPH, 2, (3.0, 0.0, 0.0, 0.5), 2),
        Body(BodyKind.RPP, 3, (-5.0, 5.0, -5.0, 5.0, -5.0, 5.0), 3),
    ), (Zone(1, ((1,), (2,)), 1, 5, 9), Zone(2, ((3, -1, -2),), 1000, 6, 9)))
    zones = ZoneGeometry(geometry)
    points = np.array([[0.5, 0.5, 0.5], [3.0, 0.1, 0.0], [2.0, 2.0, 2.0], [9.0, 0.0, 0.0]])
    assert zones.locate(points).tolist() == [0, 0, 1, OUTSIDE]
    u = np.tile([1.0, 0.0, 0.0], (4, 1))
    distance = zones.distance_to_surface(points, u)
    assert distance == pytest.approx([0.5, 0.24**0.5, 3.0, np.inf])
