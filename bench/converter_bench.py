"""Converter benchmark: how long one editor project takes to convert, by size and shape.

``python -m bench.converter_bench [--repeat 50]``

Method: each project is converted ``--repeat`` times in this process (after one
warm-up call); the median and the worst wall time per conversion are printed,
with the project's JSON size. Projects: the end-to-end water phantom; N nested
shells (each zone a sphere minus the one inside it); N lens zones (each the
intersection of two spheres, the case where subtracting zones one by one from the
world would grow as 2**N and the converter cuts the world along the zones
instead); N slabs at the API's default body limit (256 KiB). The ratio column
compares each median with the water phantom's, measured in the same run. The
API converts in a worker thread, so these times are what a submission waits, not
what blocks the event loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from services.converter import convert
from tests.converter.fixtures import project
from tests.converter.test_roundtrip import lenses

RESULTS = Path(__file__).resolve().parent / "results" / "converter.json"


def shells(count: int) -> dict[str, Any]:
    doc = project("zones")
    figures = [{"name": f"s{i}", "type": "SphereFigure", "uuid": f"f-{i}",
                "geometryData": {"geometryType": "SphereGeometry", "position": [0, 0, 0],
                                 "rotation": [0, 0, 0], "parameters": {"radius": 1.0 + i}}}
               for i in range(count)]
    zones = [{"uuid": f"z-{i}", "name": f"Shell{i}", "type": "BooleanZone",
              "materialUuid": "m-water" if i % 2 else "m-pmma",
              "unionOperations": [[{"mode": "union", "objectUuid": f"f-{i}"}]
                                  + ([{"mode": "subtraction", "objectUuid": f"f-{i - 1}"}]
                                     if i else [])]} for i in range(count)]
    doc["figureManager"]["figures"] = figures
    doc["zoneManager"]["zones"] = zones
    doc["zoneManager"]["worldZone"]["geometryData"] = {
        "geometryType": "SphereGeometry", "position": [0, 0, 0], "rotation": [0, 0, 0],
        "parameters": {"radius": count + 2.0}}
    return doc


def slabs_within(limit: int) -> dict[str, Any]:
    doc = project("materials")
    figure, zone = doc["figureManager"]["figures"][0], doc["zoneManager"]["zones"][0]
    figures, zones = [], []
    i = 0
    while True:
        f = {**figure, "uuid": f"f-{i}", "name": f"Slab{i}",
             "geometryData": {**figure["geometryData"], "position": [0, 0, 0.1 * i],
                              "parameters": {"width": 10, "height": 10, "depth": 0.1}}}
        z = {**zone, "uuid": f"z-{i}", "name": f"Slab{i}",
             "unionOperations": [[{"mode": "union", "objectUuid": f"f-{i}"}]]}
        figures.append(f)
        zones.append(z)
        doc["figureManager"]["figures"], doc["zoneManager"]["zones"] = figures, zones
        if len(json.dumps(doc)) > limit or len(zones) >= 990:
            figures.pop()
            zones.pop()
            break
        i += 1
    doc["zoneManager"]["worldZone"]["geometryData"] = {
        "geometryType": "BoxGeometry", "position": [0, 0, 0.05 * len(zones)],
        "rotation": [0, 0, 0], "parameters": {"width": 12, "height": 12,
                                              "depth": 0.1 * len(zones) + 2}}
    return doc


def measure(doc: dict[str, Any], repeat: int) -> dict[str, float]:
    convert(doc, "shieldhit")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        convert(doc, "shieldhit")
        times.append(time.perf_counter() - start)
    return {"median_ms": statistics.median(times) * 1e3, "max_ms": max(times) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    cases = {
        "water_phantom": project("water_phantom"),
        "nested_shells_50": shells(50),
        "nested_shells_200": shells(200),
        "lenses_20": lenses(20, spacing=3.0),
        "lenses_60": lenses(60, spacing=3.0),
        "slabs_at_256KiB": slabs_within(256 * 1024),
    }
    rows = []
    base = None
    print(f"{'project':<20}{'zones':>7}{'JSON KiB':>10}{'median ms':>11}{'max ms':>9}"
          f"{'x phantom':>11}")
    for name, doc in cases.items():
        result = measure(doc, args.repeat)
        base = base or result["median_ms"]
        row = {"project": name, "zones": len(doc["zoneManager"]["zones"]),
               "json_kib": len(json.dumps(doc)) / 1024, **result,
               "ratio_to_water_phantom": result["median_ms"] / base}
        rows.append(row)
        print(f"{name:<20}{row['zones']:>7}{row['json_kib']:>10.1f}{row['median_ms']:>11.2f}"
              f"{row['max_ms']:>9.2f}{row['ratio_to_water_phantom']:>11.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "converter", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "platform": platform.platform(), "load_1min": os.getloadavg()[0]},
        "repeat": args.repeat, "method": __doc__, "results": rows}, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
