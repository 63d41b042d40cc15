"""The merge of task results: weighted by primaries, with standard errors."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.simulators.merge import MergeError, TaskResult, merge_results


def doc(values: list[float], name: str = "z_profile") -> dict[str, Any]:
    return {"estimators": [{"name": name, "metadata": {},
                            "pages": [{"metadata": {"page_number": 0, "page_name": "DOSE"},
                                       "dimensions": 1,
                                       "data": {"name": "Dose", "unit": "Gy",
                                                "values": values}}]}]}


def test_mean_is_weighted_by_primaries() -> None:
    merged = merge_results([TaskResult(1000, doc([1.0, 2.0])), TaskResult(3000, doc([2.0, 6.0]))])
    page = merged["estimators"][0]["pages"][0]
    assert page["data"]["values"] == pytest.approx([1.75, 5.0])
    assert merged["simulated_primaries"] == 4000
    # s2 = (1000*0.75^2 + 3000*0.25^2) / 1 = 750 ; se = sqrt(750/4000)
    assert page["data"]["error"][0] == pytest.approx(math.sqrt(750 / 4000))


def test_single_task_has_no_error_estimate() -> None:
    merged = merge_results([TaskResult(10, doc([3.0]))])
    assert merged["estimators"][0]["pages"][0]["data"] == {
        "name": "Dose", "unit": "Gy", "values": [3.0], "error": None}


def test_tasks_with_zero_primaries_do_not_count() -> None:
    merged = merge_results([TaskResult(0, doc([100.0])), TaskResult(5, doc([1.0]))])
    assert merged["estimators"][0]["pages"][0]["data"]["values"] == [1.0]
    assert merged["tasks_merged"] == 1


@pytest.mark.parametrize("results, message", [
    ([], "no task"),
    ([TaskResult(1, doc([1.0])), TaskResult(1, doc([1.0], name="other"))], "missing"),
    ([TaskResult(1, doc([1.0])), TaskResult(1, doc([1.0, 2.0]))], "different sizes"),
])
def test_unmergeable_results_are_refused(results: list[TaskResult], message: str) -> None:
    with pytest.raises(MergeError, match=message):
        merge_results(results)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**6),
                          st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=3)),
                min_size=1, max_size=8))
def test_merge_properties(tasks: list[tuple[int, list[float]]]) -> None:
    results = [TaskResult(n, doc(v)) for n, v in tasks]
    merged = merge_results(results)
    values = np.array(merged["estimators"][0]["pages"][0]["data"]["values"])
    stack = np.array([v for _, v in tasks])
    # The weighted mean lies between the smallest and largest task value of each bin.
    assert np.all(values >= stack.min(axis=0) - 1e-6 * (1 + abs(stack).max()))
    assert np.all(values <= stack.max(axis=0) + 1e-6 * (1 + abs(stack).max()))
    # Order of tasks does not matter.
    again = merge_results(list(reversed(results)))
    assert np.allclose(again["estimators"][0]["pages"][0]["data"]["values"], values)
    # Identical tasks merge to themselves with zero error.
    same = merge_results([TaskResult(n, doc(tasks[0][1])) for n, _ in tasks])
    assert np.allclose(same["estimators"][0]["pages"][0]["data"]["values"], tasks[0][1])
    error = same["estimators"][0]["pages"][0]["data"]["error"]
    assert error is None or np.allclose(error, 0.0)
    assert merged["simulated_primaries"] == sum(n for n, _ in tasks)


def page_doc(values: list[float | None], normalized: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"page_number": 0}
    if normalized is not None:
        meta["page_normalized"] = normalized
    return {"estimators": [{"name": "e", "metadata": {}, "pages": [
        {"metadata": meta, "dimensions": 1, "data": {"name": "X", "unit": "", "values": values}}
    ]}]}


def merged_page(results: list[TaskResult]) -> dict[str, Any]:
    page: dict[str, Any] = merge_results(results)["estimators"][0]["pages"][0]["data"]
    return page


def test_counts_are_summed_and_geometry_pages_taken_once() -> None:
    counts = merged_page([TaskResult(10, page_doc([1.0, 2.0], "1")),
                          TaskResult(30, page_doc([3.0, 5.0], "1"))])
    assert counts["values"] == [4.0, 7.0] and counts["error"] is None
    zones = merged_page([TaskResult(10, page_doc([1.0, 2.0], "0")),
                         TaskResult(30, page_doc([1.0, 2.0], "0"))])
    assert zones["values"] == [1.0, 2.0] and zones["error"] is None


def test_missing_values_are_left_out_and_never_become_nan() -> None:
    data = merged_page([TaskResult(10, page_doc([None, 2.0, None], "3")),
                        TaskResult(30, page_doc([4.0, 6.0, None], "3")),
                        TaskResult(20, page_doc([1.0, 4.0, None], "3"))])
    assert data["values"][0] == pytest.approx((30 * 4.0 + 20 * 1.0) / 50)
    assert data["values"][1] == pytest.approx((10 * 2 + 30 * 6 + 20 * 4) / 60)
    assert data["values"][2] is None and data["error"][2] is None
    assert all(e is not None for e in data["error"][:2])
    json.dumps(merge_results([TaskResult(1, page_doc([None], None))]), allow_nan=False)
