"""Built-in engine throughput: primaries per second per core, and how it scales.

Runs the engine in this process (single-threaded: one task is one core) on
150 MeV protons in a water phantom, with full physics (straggling, multiple
scattering, nuclear removal), DELTAE 0.02 (the engine's default):

* baseline: 10,000 primaries, a 1 mm depth-dose (Cyl R 0-10 cm x 1, Z 0-20 cm x 200);
* scaling with primaries: 1,000 ... 100,000 on the baseline detector;
* scaling with bins: 1-D depth-dose of 20 / 200 / 2,000 bins and 3-D meshes of
  10^4 / 10^6 bins, 10,000 primaries each.

Figures are primaries per CPU second of this process (= per core) and per wall
second, with the ratio to the baseline. The machine's load average is printed
and stored, and the baseline is measured again at the end, because on a shared
machine CPU time per primary itself grows with the load (shared caches, SMT).

    python -m bench.engine_bench [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from services.engine.input import parse_inputs
from services.engine.run import run

RESULTS = Path(__file__).resolve().parent / "results" / "engine.json"
GEO = """    0    0          water phantom
  RPP    1     -20.0      20.0     -20.0      20.0       0.0      40.0
  RPP    2     -30.0      30.0     -30.0      30.0     -10.0      50.0
  END
  001          +1
  002          +2     -1
  END
    1    2
    1    0
"""


def cyl(bins: int) -> str:
    return (f"Geometry Cyl\n Name c\n R 0 10 1\n Z 0 20 {bins}\n"
            "Output\n Filename dd.bdo\n Geo c\n Quantity Dose\n")


def mesh(nx: int, ny: int, nz: int) -> str:
    return (f"Geometry Mesh\n Name m\n X -2 2 {nx}\n Y -2 2 {ny}\n Z 0 20 {nz}\n"
            "Output\n Filename m.bdo\n Geo m\n Quantity Dose\n")


def measure(primaries: int, detect: str) -> dict[str, float]:
    files = {"beam.dat": f"TMAX0 150 0\nNSTAT {primaries} 0\n", "geo.dat": GEO,
             "mat.dat": "MEDIUM 1\nICRU 276\nEND\n", "detect.dat": detect}
    engine_input = parse_inputs(files)
    with TemporaryDirectory() as tmp:
        cpu, wall = time.process_time(), time.perf_counter()
        run(engine_input, 1, Path(tmp), io.StringIO())
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"primaries": primaries, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "per_cpu_s": round(primaries / cpu, 1), "per_wall_s": round(primaries / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = parser.parse_args()
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    scale = 10 if args.quick else 1
    load_before = os.getloadavg()
    measure(500, cyl(200))  # warm up (imports, caches)
    baseline = measure(10_000 // scale, cyl(200))
    rows: list[dict[str, Any]] = []

    def add(label: str, result: dict[str, float], bins: int) -> None:
        ratio = result["per_cpu_s"] / baseline["per_cpu_s"]
        rows.append({"case": label, "bins": bins, **result, "ratio_to_baseline": round(ratio, 3)})
        print(f"{label:<34} {bins:>9} {result['primaries']:>8} {result['cpu_s']:>8.2f} "
              f"{result['wall_s']:>8.2f} {result['per_cpu_s']:>10.0f} "
              f"{result['per_wall_s']:>10.0f} {ratio:>7.2f}", flush=True)

    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f} on {os.cpu_count()} cores")
    print(f"{'case':<34} {'bins':>9} {'prim':>8} {'cpu s':>8} {'wall s':>8} "
          f"{'prim/cpu-s':>10} {'prim/wall-s':>10} {'ratio':>7}")
    add(f"baseline: 1 mm depth-dose, {baseline['primaries']:.0f}", baseline, 200)
    for n in (1_000, 3_000, 30_000, 100_000):
        add(f"primaries {n // scale}", measure(n // scale, cyl(200)), 200)
    for bins in (20, 2_000):
        add(f"depth-dose {bins} bins", measure(10_000 // scale, cyl(bins)), bins)
    add("mesh 10x10x100", measure(10_000 // scale, mesh(10, 10, 100)), 10_000)
    add("mesh 100x100x100", measure(10_000 // scale, mesh(100, 100, 100)), 1_000_000)
    # The machine is shared: the baseline again shows how much the load drifted meanwhile.
    add("baseline again (load drift)", measure(10_000 // scale, cyl(200)), 200)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"=> {baseline['per_cpu_s']:.0f} primaries per second per core (150 MeV protons, "
          "water, 1 mm depth-dose)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "engine", "quick": args.quick, "python": platform.python_version(),
        "cores": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": load_after,
        "primaries_per_second_per_core": baseline["per_cpu_s"], "rows": rows}, indent=2) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
