"""Every benchmark in one table: ``make bench`` (``python -m bench.summary --run``).

With ``--run`` each benchmark under ``bench/`` runs first, one after the other, each in its
own process (so one's threads and sockets never disturb the next); without it the table is
made from the results they last wrote. Every benchmark writes ``bench/results/<name>.json``;
this module only reads those files, picks the figures the issues ask for and prints them in
one table with units, the target where an issue sets one, and a ratio against the baseline
that the same benchmark measured in the same run (the in-memory fold for the projector's
replay, the bare consumer for its lag, concurrency 1 for the API, one stream for SSE, one task
for the runner). The table is also written to ``bench/results/summary.json`` so runs can be
compared. A benchmark that failed or never ran shows as missing, never as a number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent

# (results file stem, module, arguments): the order `make bench` runs them in.
BENCHMARKS: list[tuple[str, str, list[str]]] = [
    ("projector", "bench.projector_bench", ["--postgres"]),
    ("api", "bench.api_bench", []),
    ("runner", "bench.runner_bench", []),
    ("engine", "bench.engine_bench", []),
    ("sse", "bench.sse_bench", []),
    ("converter", "bench.converter_bench", []),
    ("slurm", "bench.slurm_bench", []),
]


@dataclass(frozen=True)
class Row:
    """One figure of the table."""

    area: str
    metric: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    ratio: float | None = None
    baseline: str = ""


Extractor = Callable[[dict[str, Any]], Iterator[Row]]


def _get(doc: Any, *path: str | int) -> Any:
    """``doc[path...]``, or None where any step is missing."""
    for step in path:
        if isinstance(doc, dict) and isinstance(step, str):
            doc = doc.get(step)
        elif isinstance(doc, list) and isinstance(step, int) and -len(doc) <= step < len(doc):
            doc = doc[step]
        else:
            return None
        if doc is None:
            return None
    return doc


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def projector_rows(doc: dict[str, Any]) -> Iterator[Row]:
    reference = _get(doc, "reference", "events_per_s")
    for backend, target in (("sqlite", 20_000.0), ("postgres", None)):
        best = _get(doc, f"replay_{backend}", "events_per_s", "best")
        yield Row("projector", f"replay rate, {backend} (best of runs)", best, "events/s",
                  f">= {target:,.0f}" if target else "",
                  None if target is None or best is None else best >= target,
                  _ratio(best, reference), "in-memory fold")
    floor = _get(doc, "lag_floor", "lag_ms_p99", "best")
    for backend in ("sqlite", "postgres"):
        for quantile in ("p50", "p99"):
            value = _get(doc, f"lag_{backend}", f"lag_ms_{quantile}", "best")
            yield Row("projector", f"event-to-read-model lag {quantile}, {backend}, 500 ev/s",
                      value, "ms", "< 50" if quantile == "p99" else "",
                      None if quantile != "p99" or value is None else value < 50.0,
                      _ratio(value, _get(doc, "lag_floor", f"lag_ms_{quantile}", "best")),
                      "bare consumer")
    yield Row("projector", "lag p99 floor (bare consumer)", floor, "ms")
    yield Row("kafka", "broker start", _get(doc, "broker", "start_s"), "s")
    yield Row("kafka", "broker RSS after the runs", _get(doc, "broker", "rss_mib_after_runs"),
              "MiB")


def api_rows(doc: dict[str, Any]) -> Iterator[Row]:
    phases = [p for p in doc.get("phases", []) if isinstance(p, dict)]
    posts = {p.get("concurrency"): p for p in phases if p.get("method") == "POST"}
    base = _get(posts.get(1), "p99_ms")
    for concurrency in (1, 8, 32, 128):
        phase = posts.get(concurrency)
        rate = _get(phase, "ok_per_s")
        p99 = _get(phase, "p99_ms")
        target = concurrency == 32
        errors = _get(phase, "errors")
        yield Row("api", f"POST /jobs/direct c={concurrency} throughput", rate, "jobs/s",
                  ">= 1,000" if target else "",
                  None if not target or rate is None else rate >= 1000.0 and not errors)
        yield Row("api", f"POST /jobs/direct c={concurrency} p50", _get(phase, "p50_ms"), "ms")
        yield Row("api", f"POST /jobs/direct c={concurrency} p99", p99, "ms",
                  "< 50" if target else "", None if not target or p99 is None else p99 < 50.0,
                  _ratio(p99, base) if concurrency != 1 else None, "p99 at c=1")
    for get in (p for p in phases if p.get("method") == "GET"):
        label = f"GET /jobs/direct c={get.get('concurrency')}"
        yield Row("api", f"{label} p50", get.get("p50_ms"), "ms")
        yield Row("api", f"{label} p99", get.get("p99_ms"), "ms")


def runner_rows(doc: dict[str, Any]) -> Iterator[Row]:
    base = _get(doc, "overhead_s", "1", "client", "p50")
    for ntasks in ("1", "8", "64"):
        value = _get(doc, "overhead_s", ntasks, "client", "p50")
        target = ntasks == "8"
        yield Row("runner", f"orchestration overhead p50, ntasks {ntasks}",
                  None if value is None else value * 1000, "ms", "< 1,000" if target else "",
                  None if not target or value is None else value < 1.0,
                  _ratio(value, base) if ntasks != "1" else None, "ntasks 1")
    for name, key in (("dispatch latency", "dispatch_s"), ("cancel latency", "cancel_s")):
        for quantile in ("p50", "p99"):
            value = _get(doc, key, quantile)
            cancel_target = key == "cancel_s" and quantile == "p99"
            yield Row("runner", f"{name} {quantile}", None if value is None else value * 1000,
                      "ms", "< 1,000" if cancel_target else "",
                      None if not cancel_target or value is None else value < 1.0)


def engine_rows(doc: dict[str, Any]) -> Iterator[Row]:
    yield Row("engine", "built-in engine, 10,000 protons (baseline case)",
              doc.get("primaries_per_second_per_core"), "primaries/s/core")
    for row in doc.get("rows", [])[1:]:
        yield Row("engine", f"built-in engine, {row.get('case')}", row.get("per_cpu_s"),
                  "primaries/s/core", ratio=row.get("ratio_to_baseline"),
                  baseline="baseline case")


def sse_rows(doc: dict[str, Any]) -> Iterator[Row]:
    phases = [p for p in doc.get("phases", []) if isinstance(p, dict)]
    base = next((p for p in phases if p.get("phase") == "baseline"), {})
    for phase in phases:
        label = (f"SSE latency ({phase.get('phase')}), {phase.get('streams')} streams on "
                 f"{phase.get('jobs')} jobs, {_number(phase.get('rate_per_s'))} updates/s")
        for quantile in ("p50", "p99"):
            value = phase.get(f"{quantile}_ms")
            yield Row("sse", f"{label} {quantile}", value, "ms",
                      ratio=(_ratio(value, base.get(f"{quantile}_ms"))
                             if phase is not base else None),
                      baseline="one stream")


def converter_rows(doc: dict[str, Any]) -> Iterator[Row]:
    for row in doc.get("results", []):
        yield Row("converter", f"editor project {row.get('project')} ({row.get('zones')} zones)",
                  row.get("median_ms"), "ms", ratio=row.get("ratio_to_water_phantom"),
                  baseline="water phantom")


def slurm_rows(doc: dict[str, Any]) -> Iterator[Row]:
    latency = doc.get("latency", {})
    for key, label in (("submit_to_slurm_id", "POST /jobs/batch to SLURM job id"),
                       ("slurm_to_api_started", "SLURM state change to API, started"),
                       ("slurm_to_api_completed", "SLURM state change to API, completed")):
        for quantile in ("p50", "p99"):
            yield Row("slurm", f"{label} {quantile}", _get(latency, key, f"{quantile}_ms"), "ms")
    for entry in doc.get("round_trips", []):
        yield Row("slurm", f"SSH round trips per poll, {entry.get('jobs')} jobs",
                  entry.get("round_trips_per_poll_interval"), "round trips")


EXTRACTORS: dict[str, Extractor] = {
    "projector": projector_rows, "api": api_rows, "runner": runner_rows, "engine": engine_rows,
    "sse": sse_rows, "converter": converter_rows, "slurm": slurm_rows,
}


# Where each benchmark notes the 1-minute load average it ran under (the machine may be shared).
_LOAD_PATHS: list[tuple[str | int, ...]] = [
    ("host", "load_avg_1m"), ("host", "load_1min"), ("load_average_before", 0),
    ("machine", "load_avg", 0), ("broker", "load"), ("phases", 0, "load_before"),
]


def load_of(doc: dict[str, Any]) -> float | None:
    """The load average a results file says its run started under, if it says."""
    for path in _LOAD_PATHS:
        value = _get(doc, *path)
        if isinstance(value, int | float):
            return float(value)
    return None


def collect(results: Path = RESULTS) -> tuple[list[Row], list[str], dict[str, float | None]]:
    """The rows of every results file found, the benchmarks without one, and each one's load."""
    rows: list[Row] = []
    missing: list[str] = []
    loads: dict[str, float | None] = {}
    for name, extractor in EXTRACTORS.items():
        path = results / f"{name}.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            missing.append(name)
            continue
        rows.extend(extractor(doc))
        loads[name] = load_of(doc)
    return rows, missing, loads


def _number(value: float | None) -> str:
    if value is None:
        return "missing"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def render(rows: list[Row]) -> str:
    """The table as text: one line per figure."""
    header = ("area", "metric", "value", "unit", "target", "", "ratio")
    lines = [(r.area, r.metric, _number(r.value), r.unit, r.target,
              "" if r.met is None else ("MET" if r.met else "NOT MET"),
              "" if r.ratio is None else f"{r.ratio:.2f}x {r.baseline}") for r in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines,
                                                                          strict=True)]
    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths,
                                                                   strict=True)).rstrip()
    return "\n".join([line(header), "-" * (sum(widths) + 2 * (len(widths) - 1)),
                      *(line(cells) for cells in lines)])


def run_all(only: set[str] | None) -> dict[str, int]:
    """Run the benchmarks; the exit status of each (a failure does not stop the others)."""
    statuses: dict[str, int] = {}
    for name, module, args in BENCHMARKS:
        if only and name not in only:
            continue
        print(f"=== {name}: python -m {module} {' '.join(args)}", flush=True)
        started = time.monotonic()
        statuses[name] = subprocess.call([sys.executable, "-m", module, *args], cwd=ROOT)
        print(f"=== {name}: exit {statuses[name]} after {time.monotonic() - started:.0f} s",
              flush=True)
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="run the benchmarks first")
    parser.add_argument("--only", default="", help="comma-separated subset to run")
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name} or None
    statuses = run_all(only) if args.run else {}
    rows, missing, loads = collect()
    print(render(rows))
    print("load average (1 min) at the start of each benchmark: " + ", ".join(
        f"{name} {_number(load)}" for name, load in loads.items()))
    failed = sorted(name for name, status in statuses.items() if status != 0)
    if missing:
        print(f"no results from: {', '.join(missing)}")
    if failed:
        print(f"failed in this run (their rows are from an earlier run, if any): "
              f"{', '.join(failed)}")
    summary = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
               "load_avg": list(os.getloadavg()), "ran": statuses, "missing": missing,
               "load_avg_per_benchmark": loads,
               "rows": [asdict(row) for row in rows]}
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {RESULTS / 'summary.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
