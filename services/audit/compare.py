"""Compare two read models row by row, column by column.

Compared: every column of ``jobs`` and ``tasks``, the tables users read. Every one of
their values is a pure function of the events (the fold reads no clock), so nothing
there is ignored. Not compared: ``applied_events`` (bookkeeping: which ids were
applied, checked by the projector tests), ``projector_offsets`` (the rebuild is
stopped at the live offsets, so they agree by construction) and ``projector_skips``
(diagnostic counters; a skipped record changes no row).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.projector import readmodel as rm


@dataclass(frozen=True)
class RowDiff:
    """One difference: a row missing on one side, or one column that differs."""

    table: str
    key: tuple[Any, ...]
    job_id: str
    column: str | None  # None: the whole row is missing on one side
    live: Any
    rebuilt: Any

    def describe(self) -> str:
        where = f"{self.table}[{', '.join(str(k) for k in self.key)}]"
        if self.column is None:
            side = "live" if self.live is None else "rebuild"
            return f"{where}: missing in the {side} model"
        return f"{where}.{self.column}: live={self.live!r} rebuild={self.rebuilt!r}"


@dataclass
class Comparison:
    """Per-job outcome, and the aggregate ``{job_id: differences}`` map."""

    jobs: int = 0
    tasks: int = 0
    failures: dict[str, list[RowDiff]] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not self.failures

    def diffs(self) -> list[RowDiff]:
        return [d for ds in self.failures.values() for d in ds]


Rows = dict[tuple[Any, ...], dict[str, Any]]


async def load_rows(conn: AsyncConnection, table: Table, job_ids: Iterable[str] | None) -> Rows:
    """A table's rows by primary key (optionally only some jobs' rows)."""
    keys = [c.name for c in table.primary_key.columns]
    stmt = select(table)
    if job_ids is not None:
        stmt = stmt.where(table.c.job_id.in_(list(job_ids)))
    rows = (await conn.execute(stmt)).mappings().all()
    return {tuple(row[k] for k in keys): dict(row) for row in rows}


def _diff_table(table: str, live: Rows, rebuilt: Rows) -> list[RowDiff]:
    found: list[RowDiff] = []
    for key in sorted(live.keys() | rebuilt.keys(), key=lambda k: tuple(map(str, k))):
        a, b = live.get(key), rebuilt.get(key)
        job_id = str(key[0])
        if a is None or b is None:
            found.append(RowDiff(table, key, job_id, None, a, b))
            continue
        for column in a:
            if a[column] != b[column]:
                found.append(RowDiff(table, key, job_id, column, a[column], b[column]))
    return found


def compare_rows(
    live: Mapping[str, Rows], rebuilt: Mapping[str, Rows], *, fail_fast: bool = False
) -> Comparison:
    """Compare ``{"jobs": rows, "tasks": rows}`` of two models."""
    result = Comparison(jobs=len(rebuilt["jobs"]), tasks=len(rebuilt["tasks"]))
    for table in ("jobs", "tasks"):
        for diff in _diff_table(table, dict(live[table]), dict(rebuilt[table])):
            result.failures.setdefault(diff.job_id, []).append(diff)
            if fail_fast:
                return result
    return result


async def snapshot(
    conn: AsyncConnection, job_ids: Iterable[str] | None = None
) -> dict[str, Rows]:
    """The ``jobs`` and ``tasks`` rows of one model."""
    ids = list(job_ids) if job_ids is not None else None
    return {"jobs": await load_rows(conn, rm.jobs, ids),
            "tasks": await load_rows(conn, rm.tasks, ids)}
