"""The `make bench` table: figures picked from each benchmark's results, verdicts, ratios."""

from __future__ import annotations

import json
from pathlib import Path

from bench.summary import EXTRACTORS, collect, render


def _write(directory: Path, name: str, doc: dict[str, object]) -> None:
    (directory / f"{name}.json").write_text(json.dumps(doc))


def test_target_verdicts_and_same_run_ratios(tmp_path: Path) -> None:
    _write(tmp_path, "projector", {
        "reference": {"events_per_s": 40_000},
        "replay_sqlite": {"events_per_s": {"best": 21_000}},
        "lag_floor": {"lag_ms_p50": {"best": 5.0}, "lag_ms_p99": {"best": 20.0}},
        "lag_sqlite": {"lag_ms_p50": {"best": 10.0}, "lag_ms_p99": {"best": 60.0}},
        "broker": {"start_s": 9.5, "load": 0.4},
    })
    _write(tmp_path, "api", {"phases": [
        {"method": "POST", "concurrency": 1, "ok_per_s": 100, "p50_ms": 5, "p99_ms": 10,
         "errors": 0},
        {"method": "POST", "concurrency": 32, "ok_per_s": 1200, "p50_ms": 20, "p99_ms": 40,
         "errors": 3},
    ]})
    rows, missing, loads = collect(tmp_path)
    by_metric = {row.metric: row for row in rows}

    replay = by_metric["replay rate, sqlite (best of runs)"]
    assert (replay.value, replay.met, replay.ratio) == (21_000, True, 21_000 / 40_000)
    lag = by_metric["event-to-read-model lag p99, sqlite, 500 ev/s"]
    assert (lag.met, lag.ratio) == (False, 3.0)
    # Errors fail the throughput target even at a high rate; p99 alone is judged on latency.
    assert by_metric["POST /jobs/direct c=32 throughput"].met is False
    assert by_metric["POST /jobs/direct c=32 p99"].met is True
    assert by_metric["POST /jobs/direct c=32 p99"].ratio == 4.0
    # A figure the run did not produce is shown as missing, never as a number.
    assert by_metric["POST /jobs/direct c=8 throughput"].value is None
    assert by_metric["replay rate, postgres (best of runs)"].value is None
    assert set(missing) == set(EXTRACTORS) - {"projector", "api"}
    assert loads == {"projector": 0.4, "api": None}

    table = render(rows)
    assert "21,000" in table and "NOT MET" in table and "missing" in table
    assert "0.53x in-memory fold" in table


def test_unreadable_results_count_as_missing(tmp_path: Path) -> None:
    (tmp_path / "runner.json").write_text("{not json")
    rows, missing, _ = collect(tmp_path)
    assert rows == [] and "runner" in missing
