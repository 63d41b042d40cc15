"""Merging task results: a pure function, weighted by simulated primaries.

Each task's page values are per-primary estimates of the same quantity
(e.g. dose per primary in each bin). The merged value of a bin is their mean
weighted by each task's simulated primaries, and its standard error comes
from the spread between tasks:

    m  = sum(n_k v_k) / N                       N = sum(n_k)
    s2 = sum(n_k (v_k - m)^2) / (K - 1)         per-primary variance estimate
    se = sqrt(s2 / N)

With a single task there is no spread to measure, so ``error`` is None
unless the task itself reported one. The original YAPTIDE averaged
unweighted and kept task 0's metadata after failures; this does neither.

Pages that are not per-primary estimates are merged by what they are, as
SHIELD-HIT12A marks them (``page_normalized`` in the page metadata, as pymchelper
reads it): 1 = a count (COUNT), summed over the tasks; 0 = a property of the
geometry (zone, medium, density map), the same in every task, taken from the first.
A value a task could not compute (``null``, e.g. a LET where nothing passed) is left
out of that bin's mean; a bin no task could compute stays ``null``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class MergeError(ValueError):
    """Task results that cannot be merged (different estimators, pages or shapes)."""


@dataclass(frozen=True)
class TaskResult:
    """One task's result document and the primaries it simulated."""

    primaries: int
    document: Mapping[str, Any]


def _pages_by_number(estimator: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    pages: dict[int, Mapping[str, Any]] = {}
    for page in estimator.get("pages", []):
        number = int(page.get("metadata", {}).get("page_number", len(pages)))
        pages[number] = page
    return pages


def _as_json(values: np.ndarray) -> list[float | None]:
    """Floats for JSON: NaN (no value) becomes ``null``, never the invalid token ``NaN``."""
    return [None if v != v else float(v) for v in values.tolist()]


def _merge_values(values: Sequence[Sequence[float | None]], weights: np.ndarray,
                  normalized: str) -> tuple[list[float | None], list[float | None] | None]:
    try:
        stack = np.asarray([[np.nan if v is None else v for v in row] for row in values],
                           dtype=float)
    except (TypeError, ValueError) as exc:
        raise MergeError(f"page values must be flat lists of numbers: {exc}") from exc
    if stack.ndim != 2:
        raise MergeError("page values must be flat lists of numbers")
    if normalized == "1":  # counts add up
        return _as_json(np.nansum(stack, axis=0)), None
    if normalized == "0":  # the geometry's own property: the same in every task
        return _as_json(stack[0]), None
    known = ~np.isnan(stack)
    w = np.where(known, weights[:, None], 0.0)
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * np.where(known, stack, 0.0)).sum(axis=0) / total
        if len(weights) < 2:
            return _as_json(mean), None
        contributing = known.sum(axis=0)
        spread = (w * np.where(known, stack - mean, 0.0) ** 2).sum(axis=0) / (contributing - 1)
        error = np.where(contributing >= 2, np.sqrt(spread / total), np.nan)
    return _as_json(mean), _as_json(error)


def merge_results(results: Sequence[TaskResult]) -> dict[str, Any]:
    """Merge the results of the completed tasks of one job.

    Raises:
        MergeError: nothing to merge, no primaries, or results of different shapes.
    """
    usable = [r for r in results if r.primaries > 0]
    if not usable:
        raise MergeError("no task simulated any primaries")
    weights = np.asarray([r.primaries for r in usable], dtype=float)
    first = usable[0].document
    names = [e["name"] for e in first.get("estimators", [])]
    merged: dict[str, Any] = {"estimators": [], "simulated_primaries": int(weights.sum()),
                              "tasks_merged": len(usable)}
    by_task = [{e["name"]: e for e in r.document.get("estimators", [])} for r in usable]
    for name in names:
        if any(name not in estimators for estimators in by_task):
            raise MergeError(f"estimator {name!r} is missing from some task results")
        estimator = copy.deepcopy(dict(by_task[0][name]))
        task_pages = [_pages_by_number(est[name]) for est in by_task]
        out_pages = []
        for number, page in sorted(task_pages[0].items()):
            if any(number not in pages for pages in task_pages):
                raise MergeError(f"page {number} of {name!r} is missing from some tasks")
            values = [pages[number]["data"]["values"] for pages in task_pages]
            if len({len(v) for v in values}) != 1:
                raise MergeError(f"page {number} of {name!r} has different sizes across tasks")
            normalized = str(page.get("metadata", {}).get("page_normalized", "2"))
            mean, error = _merge_values(values, weights, normalized)
            new_page = copy.deepcopy(dict(page))
            new_page["data"] = {**page["data"], "values": mean, "error": error}
            out_pages.append(new_page)
        estimator["pages"] = out_pages
        merged["estimators"].append(estimator)
    return merged
