"""SHIELD-HIT12A: ``<exe> -N <seed> <workdir>`` on beam/geo/mat/detect.dat."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from services.simulators.base import Progress, estimator_documents, safe_name
from services.simulators.errors import BadInput, CollectError

_NSTAT = re.compile(r"^(\s*NSTAT\s+)(\S+)(.*)$", re.IGNORECASE)
_REQUESTED = re.compile(r"Requested number of primaries NSTAT.*:\s*(\d+)")


@dataclass(frozen=True)
class ShieldHit:
    """SHIELD-HIT12A.

    The task's share of primaries is written into ``beam.dat``'s NSTAT card
    (its save-interval column is kept); progress comes from the lines
    ``Primary particle no. <k> ETR: <h> hour(s) <m> minute(s) <s> second(s)``
    and ``Requested number of primaries NSTAT ... : <n>``.

    Estimator outputs are read from ``*.json`` files in the estimator schema;
    the real binary's ``.bdo`` files need a converter (pymchelper), so a run
    that leaves only ``.bdo`` files fails with that reason.
    """

    executable: str
    sim_type: str = "shieldhit"

    def task_files(self, input_files: Mapping[str, str], primaries: int,
                   seed: int) -> dict[str, str]:
        if "beam.dat" not in input_files:
            raise BadInput("SHIELD-HIT12A input has no beam.dat")
        return {safe_name(name): set_nstat(text, primaries) if name == "beam.dat" else text
                for name, text in input_files.items()}

    def command(self, workdir: PurePath, seed: int) -> list[str]:
        return [self.executable, "-N", str(seed), str(workdir)]

    def parse_progress(self, line: str) -> Progress | None:
        return parse_progress(line)

    def collect(self, workdir: Path) -> dict[str, Any]:
        document = estimator_documents(workdir)
        if not document["estimators"]:
            if any(workdir.glob("*.bdo")):
                raise CollectError("SHIELD-HIT12A wrote .bdo files only; converting them "
                                   "needs pymchelper, which this runner does not have yet")
            raise CollectError("SHIELD-HIT12A wrote no estimator output")
        return document


def parse_progress(line: str) -> Progress | None:
    """Progress from one SHIELD-HIT12A output line (the built-in engine prints the same)."""
    tokens = line.split()
    if len(tokens) >= 10 and tokens[:3] == ["Primary", "particle", "no."] \
            and tokens[4] == "ETR:":
        try:
            done = int(tokens[3])
            eta = int(tokens[5]) * 3600 + int(tokens[7]) * 60 + int(tokens[9])
        except ValueError:
            return None
        return Progress(done, None, eta)
    match = _REQUESTED.search(line)
    if match:
        return Progress(0, int(match.group(1)), None)
    return None


def set_nstat(beam: str, primaries: int) -> str:
    """``beam.dat`` with its NSTAT card set to ``primaries`` (added if absent)."""
    lines = beam.splitlines()
    for i, line in enumerate(lines):
        match = _NSTAT.match(line)
        if match:
            lines[i] = f"{match.group(1)}{primaries}{match.group(3)}"
            return "\n".join(lines) + "\n"
    return "\n".join([*lines, f"NSTAT {primaries} 0"]) + "\n"
