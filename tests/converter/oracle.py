"""Which zone holds a point: once from the project JSON, once from the written geo.dat.

The two answers are computed independently of the converter. From the JSON
the point is brought into each figure's own frame (the editor's rotation,
three.js Euler XYZ, rebuilt here as three turns about the figure's moving
axes with Rodrigues' formula) and the zones' rows are evaluated left to
right as the editor's CSG does. From geo.dat the bodies are tested as
written and the zone lines evaluated as SHIELD-HIT12A reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tests.converter.cards import Geo

Inside = Callable[[np.ndarray], bool]


def _turn(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues: the rotation by ``degrees`` about the unit vector ``axis``."""
    k = axis / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = math.radians(degrees)
    return np.asarray(np.eye(3) + math.sin(a) * cross + (1 - math.cos(a)) * cross @ cross)


def frame(degrees: list[float]) -> np.ndarray:
    """The figure's axes as columns: turn about x, then the turned y, then the turned z."""
    axes = np.eye(3)
    for i, angle in enumerate(degrees):
        axes = _turn(axes[:, i], angle) @ axes
    return axes


def figure_test(geometry: dict[str, Any]) -> Inside:
    centre = np.array(geometry["position"], dtype=float)
    axes = frame(geometry.get("rotation", [0, 0, 0]))
    p = geometry["parameters"]
    kind = geometry["geometryType"]

    def local(point: np.ndarray) -> np.ndarray:
        return np.asarray(axes.T @ (point - centre))

    if kind == "BoxGeometry":
        half = np.array([p["width"], p["height"], p["depth"]]) / 2
        return lambda point: bool(np.all(np.abs(local(point)) <= half))
    if kind == "SphereGeometry":
        return lambda point: bool(np.linalg.norm(point - centre) <= p["radius"])
    inner = p.get("innerRadius", 0)

    def cylinder(point: np.ndarray) -> bool:
        x, y, z = local(point)
        r2 = x * x + y * y
        return bool(abs(z) <= p["depth"] / 2 and r2 <= p["radius"] ** 2
                    and (inner == 0 or r2 > inner ** 2))
    return cylinder


def grown(geometry: dict[str, Any], margin: float) -> dict[str, Any]:
    p = dict(geometry["parameters"])
    for key in ("width", "height", "depth"):
        if key in p:
            p[key] += 2 * margin
    if "radius" in p:
        p["radius"] += margin
    return {**geometry, "parameters": p}


def project_zones(project: dict[str, Any]) -> list[Inside]:
    """One test per geo.dat zone, in its numbering: the zones, world, wrapper."""
    figures = {f["uuid"]: figure_test(f["geometryData"])
               for f in project["figureManager"]["figures"]}
    world_geometry = project["zoneManager"]["worldZone"]["geometryData"]
    in_world = figure_test(world_geometry)

    def zone_test(zone: dict[str, Any]) -> Inside:
        def inside(point: np.ndarray) -> bool:
            found = False
            for row in zone["unionOperations"]:
                acc = False
                for op in row:
                    here = figures[op["objectUuid"]](point)
                    acc = {"union": acc or here, "intersection": acc and here,
                           "subtraction": acc and not here}[op["mode"]]
                found = found or acc
            return found and in_world(point)
        return inside

    tests = [zone_test(z) for z in project["zoneManager"]["zones"]]
    user = list(tests)
    tests.append(lambda point: in_world(point) and not any(t(point) for t in user))
    icru = {m["uuid"]: m["icru"] for m in project["materialManager"]["materials"]}
    if icru[project["zoneManager"]["worldZone"]["materialUuid"]] != 0:
        in_wrapper = figure_test(grown(world_geometry, 1.0))
        tests.append(lambda point: in_wrapper(point) and not in_world(point))
    return tests


def body_test(kind: str, v: list[float]) -> Inside:
    if kind == "RPP":
        return lambda q: bool(v[0] <= q[0] <= v[1] and v[2] <= q[1] <= v[3]
                              and v[4] <= q[2] <= v[5])
    if kind == "SPH":
        return lambda q: bool(np.linalg.norm(q - np.array(v[:3])) <= v[3])
    if kind == "BOX":
        corner = np.array(v[:3])
        edges = [np.array(v[3 + 3 * k: 6 + 3 * k]) for k in range(3)]
        return lambda q: all(0 <= float((q - corner) @ e) <= float(e @ e) for e in edges)
    base, axis, r = np.array(v[:3]), np.array(v[3:6]), v[6]

    def rcc(q: np.ndarray) -> bool:
        t = float((q - base) @ axis) / float(axis @ axis)
        radial = q - base - t * axis
        return 0 <= t <= 1 and float(radial @ radial) <= r * r
    return rcc


def _extent(kind: str, v: list[float]) -> tuple[np.ndarray, np.ndarray]:
    if kind == "RPP":
        return np.array(v[0::2]), np.array(v[1::2])
    if kind == "SPH":
        return np.array(v[:3]) - v[3], np.array(v[:3]) + v[3]
    if kind == "BOX":
        corner = np.array(v[:3])
        edges = [np.array(v[3 + 3 * k: 6 + 3 * k]) for k in range(3)]
        points = [corner + a * edges[0] + b * edges[1] + c * edges[2]
                  for a in (0, 1) for b in (0, 1) for c in (0, 1)]
        return np.min(points, axis=0), np.max(points, axis=0)
    base, axis, r = np.array(v[:3]), np.array(v[3:6]), v[6]
    ends = np.array([base, base + axis])
    return ends.min(axis=0) - r, ends.max(axis=0) + r


def geo_zones(parsed: Geo) -> dict[int, Inside]:
    bodies = [body_test(kind, v) for kind, v in parsed.bodies]

    def zone(groups: list[list[int]]) -> Inside:
        return lambda q: any(all(bodies[abs(n) - 1](q) == (n > 0) for n in g) for g in groups)
    return {number: zone(groups) for number, groups in parsed.zones.items()}


def compare(project: dict[str, Any], parsed: Geo, points: int = 4000,
            seed: int = 7) -> int:
    """Sample points around the wrapper; each must lie in the same single zone both ways.

    Returns the number of points that fell inside user zones (so a test can make
    sure the sample reached them).
    """
    expected = project_zones(project)
    written = geo_zones(parsed)
    assert sorted(written) == list(range(1, len(expected) + 1)), sorted(written)
    # Sample around every body (each one's box, grown a little), so each surface is crossed.
    boxes = [_extent(kind, v) for kind, v in parsed.bodies]
    rng = np.random.default_rng(seed)
    in_user = 0
    n_user = len(project["zoneManager"]["zones"])
    share = max(1, points // len(boxes))
    sample = np.concatenate([rng.uniform(lo - 0.1 * (hi - lo) - 0.1, hi + 0.1 * (hi - lo) + 0.1,
                                         size=(share, 3)) for lo, hi in boxes])
    for q in sample:
        want = [i + 1 for i, t in enumerate(expected) if t(q)]
        got = sorted(n for n, t in written.items() if t(q))
        assert len(want) <= 1, f"the project's zones overlap at {q}: {want}"
        assert got == want, f"at {q.tolist()}: geo.dat zones {got}, project zones {want}"
        in_user += bool(want and want[0] <= n_user)
    return in_user
