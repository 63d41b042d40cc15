"""Simulator plug-ins: how one task of a job becomes a process and a result.

A plug-in has one small interface (:class:`Simulator`): write a work
directory for (input files, primaries, seed), give the command line, parse
progress from the output, collect the outputs into the estimator/page JSON
document that :func:`services.runner.merge.merge_results` merges. Which
executable runs comes from configuration (``SIMJOBS_SIM_<TYPE>_EXE``), so the
same plug-in drives the real binary in production and a stand-in in tests.

A simulator without a plug-in or without a configured executable is not an
error of the runner: the task fails at once with a reason that says which
variable to set (:class:`~services.runner.errors.SimulatorUnavailable`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from services.runner.errors import BadInput, CollectError, SimulatorUnavailable
from services.settings import RunnerSettings, sim_exe_variable

#: Where a plug-in keeps what ``command`` needs (the seed); hidden from ``collect``.
TASK_FILE = ".runner-task.json"


class Progress(NamedTuple):
    """One progress reading from a simulator's output."""

    simulated: int
    #: The requested count, when the line says it (SHIELD-HIT's progress lines do not).
    requested: int | None
    eta_seconds: int | None


class Simulator(Protocol):
    """What the runner needs from a simulator plug-in."""

    @property
    def sim_type(self) -> str:
        """The JobSubmitted ``sim_type`` this plug-in runs."""

    def prepare(self, workdir: Path, input_files: Mapping[str, str], primaries: int,
                seed: int) -> None:
        """Write the work directory of one task.

        Raises:
            BadInput: the input cannot be run with this simulator.
        """

    def command(self, workdir: Path) -> list[str]:
        """The argv that runs the prepared task (cwd is ``workdir``)."""

    def parse_progress(self, line: str) -> Progress | None:
        """Progress from one line of output, or None if the line carries none."""

    def collect(self, workdir: Path) -> dict[str, Any]:
        """The task's result document (``{"estimators": [...]}``).

        Raises:
            CollectError: the outputs are missing or unreadable.
        """


def _write_task_file(workdir: Path, seed: int) -> None:
    (workdir / TASK_FILE).write_text(json.dumps({"seed": seed}))


def _read_seed(workdir: Path) -> int:
    seed = json.loads((workdir / TASK_FILE).read_text())["seed"]
    if not isinstance(seed, int):
        raise BadInput(f"{workdir / TASK_FILE} holds no integer seed")
    return seed


def _safe_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name \
            or name == TASK_FILE:
        raise BadInput(f"bad input file name {name[:80]!r}")
    return name


def _estimator_documents(workdir: Path) -> dict[str, Any]:
    """Every ``*.json`` estimator file of a work directory as one result document."""
    estimators: list[dict[str, Any]] = []
    for path in sorted(workdir.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CollectError(f"output {path.name} is not readable JSON: {exc}") from exc
        found = data.get("estimators") if isinstance(data, dict) else None
        items = found if isinstance(found, list) else [data]
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                    or not isinstance(item.get("pages"), list):
                raise CollectError(f"output {path.name} is not an estimator "
                                   "(needs 'name' and 'pages')")
            estimators.append(item)
    return {"estimators": estimators}


# --- SHIELD-HIT12A -------------------------------------------------------------------------

_NSTAT = re.compile(r"^(\s*NSTAT\s+)(\S+)(.*)$", re.IGNORECASE)
_REQUESTED = re.compile(r"Requested number of primaries NSTAT.*:\s*(\d+)")


@dataclass(frozen=True)
class ShieldHit:
    """SHIELD-HIT12A: ``<exe> -N <seed> <workdir>`` on beam/geo/mat/detect.dat.

    The task's share of primaries is written into ``beam.dat``'s NSTAT card
    (its save-interval column is kept); progress comes from the lines
    ``Primary particle no. <k> ETR: <h> hour(s) <m> minute(s) <s> second(s)``
    and ``Requested number of primaries NSTAT ... : <n>``.

    First cut: estimator outputs are read from ``*.json`` files in the estimator
    schema; the real binary's ``.bdo`` files need a converter (pymchelper) that is
    not a dependency yet, so a run that leaves only ``.bdo`` files fails with
    that reason.
    """

    executable: str
    sim_type: str = "shieldhit"

    def prepare(self, workdir: Path, input_files: Mapping[str, str], primaries: int,
                seed: int) -> None:
        if "beam.dat" not in input_files:
            raise BadInput("SHIELD-HIT12A input has no beam.dat")
        workdir.mkdir(parents=True, exist_ok=True)
        for name, text in input_files.items():
            content = set_nstat(text, primaries) if name == "beam.dat" else text
            (workdir / _safe_name(name)).write_text(content)
        _write_task_file(workdir, seed)

    def command(self, workdir: Path) -> list[str]:
        return [self.executable, "-N", str(_read_seed(workdir)), str(workdir)]

    def parse_progress(self, line: str) -> Progress | None:
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

    def collect(self, workdir: Path) -> dict[str, Any]:
        document = _estimator_documents(workdir)
        if not document["estimators"]:
            if any(workdir.glob("*.bdo")):
                raise CollectError("SHIELD-HIT12A wrote .bdo files only; converting them "
                                   "needs pymchelper, which this runner does not have yet")
            raise CollectError("SHIELD-HIT12A wrote no estimator output")
        return document


def set_nstat(beam: str, primaries: int) -> str:
    """``beam.dat`` with its NSTAT card set to ``primaries`` (added if absent)."""
    lines = beam.splitlines()
    for i, line in enumerate(lines):
        match = _NSTAT.match(line)
        if match:
            lines[i] = f"{match.group(1)}{primaries}{match.group(3)}"
            return "\n".join(lines) + "\n"
    return "\n".join([*lines, f"NSTAT {primaries} 0"]) + "\n"


# --- the registry --------------------------------------------------------------------------

#: sim_type -> plug-in class; each is built with the configured executable.
PLUGINS: dict[str, type[ShieldHit]] = {"shieldhit": ShieldHit}


@dataclass(frozen=True)
class SimulatorRegistry:
    """Which simulators this runner can run, with which executables."""

    executables: Mapping[str, str]

    @classmethod
    def from_settings(cls, settings: RunnerSettings) -> SimulatorRegistry:
        return cls(dict(settings.executables))

    def get(self, sim_type: str) -> Simulator:
        """The plug-in for a job's simulator.

        Raises:
            SimulatorUnavailable: no plug-in, no executable configured, or not executable.
        """
        plugin = PLUGINS.get(sim_type)
        if plugin is None:
            raise SimulatorUnavailable(
                f"simulator {sim_type!r} cannot run on the direct platform: this runner has "
                f"no plug-in for it (available: {', '.join(sorted(PLUGINS))})")
        exe = self.executables.get(sim_type)
        if not exe:
            raise SimulatorUnavailable(
                f"simulator {sim_type!r} is not configured on this runner: set "
                f"{sim_exe_variable(sim_type)} to the path of its executable")
        if shutil.which(exe) is None:
            raise SimulatorUnavailable(
                f"simulator {sim_type!r}: {exe!r} (from {sim_exe_variable(sim_type)}) "
                "is not an executable file")
        return plugin(executable=exe)
