"""The fault-injection tally (marker ``faults``): jobs checked and faults injected.

Each fault test records what it injected and found; the session-end summary is written to
``<basetemp>/faults-report.txt`` and printed in pytest's terminal summary so it can be pasted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class FaultRow:
    """One injected fault and what the jobs running through it showed."""

    fault: str
    jobs: int = 0
    completed: int = 0
    results_equal: int = 0
    lost_events: int = 0
    doubled_events: int = 0
    rerun_tasks: int = 0  # task starts beyond one per task: work taken over after the fault
    verify_ok: bool | None = False  # None: not run (no read model of the audit's kind)


@dataclass
class Tally:
    rows: list[FaultRow] = field(default_factory=list)

    def render(self) -> str:
        head = (f"{'fault':<28} {'jobs':>4} {'done':>4} {'equal':>5} {'lost':>4} "
                f"{'twice':>5} {'rerun':>5} verify")
        lines = ["fault-injection report", head]
        for r in self.rows:
            lines.append(f"{r.fault:<28} {r.jobs:>4} {r.completed:>4} {r.results_equal:>5} "
                         f"{r.lost_events:>4} {r.doubled_events:>5} {r.rerun_tasks:>5} "
                         f"{ {True: 'ok', False: 'FAIL', None: 'n/a'}[r.verify_ok] }")
        jobs = sum(r.jobs for r in self.rows)
        losses = sum(r.lost_events + (r.jobs - r.completed) for r in self.rows)
        lines.append(f"faults injected: {len(self.rows)}, jobs: {jobs}, losses: {losses}")
        return "\n".join(lines)


TALLY = Tally()


def write_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The report at the end of the session (called by tests/conftest.py's hook)."""
    if not TALLY.rows:
        return
    text = TALLY.render()
    base = Path(str(terminalreporter.config._tmp_path_factory.getbasetemp()))  # type: ignore[attr-defined]
    (base / "faults-report.txt").write_text(text + "\n")
    terminalreporter.write_sep("=", "faults")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"(written to {base / 'faults-report.txt'})")
