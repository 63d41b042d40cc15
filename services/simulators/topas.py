"""TOPAS: ``<exe> topas_config.txt`` on TOPAS parameter files, CSV scorer outputs.

Input. ``topas_config.txt`` (the name YAPTIDE's converter writes), or the
job's only ``*.txt`` file written under that name, is the main parameter file;
other files (``includeFile`` targets, of any name, and tables) are written as
they come, and every one is searched for the parameters below.
Parameters are ``type:Name = value`` lines, names compared case-insensitively
as TOPAS does.

* ``i:So/<source>/NumberOfHistoriesInRun`` is the number of primaries: one
  source only (several cannot be split over tasks fairly), set in whichever
  files define it. The task's share is written there.
* ``i:Ts/Seed`` takes the task's seed (TOPAS seeds are 32-bit integers, and
  task seeds fit 31 bits); added to the main file if absent.
* ``i:Ts/ShowHistoryCountAtInterval`` is set to a hundredth of the task's
  histories, so the runner sees progress at a steady rate whatever the input
  said; ``b:Ts/ShowHistoryCountOnSingleLine``, which would end the progress
  lines with a carriage return, is turned off.
* Time features with several runs (``i:Tf/NumberOfSequentialTimes`` > 1)
  are refused: the history count then restarts with every run.

Progress. Every interval TOPAS prints ``Begin processing for Run: 0,
History: <k>`` (``TsEventAction``); ``k`` counts from 0, so it is the number of
histories done before the one that begins.

Outputs. Each scorer with ``OutputType "csv"`` (TOPAS's default) writes
``<OutputFile>.csv``; pymchelper reads its ``Mean`` column (the value per
history), so scorers must report it (``sv:Sc/<name>/Report = 2 "Sum" "Mean"``).
A scorer's file starts with ``# TOPAS Version:``; other CSV files in the work
directory are inputs (spectra, tables) and are left alone. Estimators are
named after the file (``dose.csv`` -> ``dose``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from services.simulators.base import Progress, main_input, renamed_main
from services.simulators.errors import BadInput, CollectError
from services.simulators.estimators import read_estimators, topas_reader

#: The main parameter file's name in the work directory (and the converter's).
MAIN_FILE = "topas_config.txt"
_MAIN = {"suffix": ".txt", "preferred": MAIN_FILE, "simulator": "TOPAS"}

_HISTORIES = re.compile(r"^(\s*i:So/([^/\s=]+)/NumberOfHistoriesInRun\s*=\s*)(\S*)(.*)$",
                        re.IGNORECASE)
_SEQUENTIAL = re.compile(r"^\s*i:Tf/NumberOfSequentialTimes\s*=\s*(\S+)", re.IGNORECASE)
_PROGRESS = re.compile(r"Begin processing for Run:\s*\d+,\s*History:\s*(\d+)")


def _parameter(name: str) -> re.Pattern[str]:
    """A parameter line ``<type>:<name> = <value> [# comment]`` (value in group 2)."""
    return re.compile(rf"^(\s*\w+:{re.escape(name)}\s*=\s*)(\S*)(.*)$", re.IGNORECASE)


_SEED = _parameter("Ts/Seed")
_INTERVAL = _parameter("Ts/ShowHistoryCountAtInterval")
_SINGLE_LINE = _parameter("Ts/ShowHistoryCountOnSingleLine")


def _parameter_files(input_files: Mapping[str, str]) -> list[str]:
    """Every input file: an ``includeFile`` target may have any name."""
    return sorted(input_files)


def histories(input_files: Mapping[str, str], main: str) -> int:
    """NumberOfHistoriesInRun of the input's one source (the main file's value wins).

    Raises:
        BadInput: no source, several sources, a value that is not an integer, or
            several sequential runs.
    """
    found: dict[str, list[tuple[str, str]]] = {}
    for name in _parameter_files(input_files):
        for line in input_files[name].splitlines():
            sequential = _SEQUENTIAL.match(line)
            if sequential and sequential.group(1) not in ("0", "1"):
                raise BadInput(f"{name}: Tf/NumberOfSequentialTimes = {sequential.group(1)}; "
                               "time features with several runs are not supported")
            match = _HISTORIES.match(line)
            if match:
                found.setdefault(match.group(2).lower(), []).append((name, match.group(3)))
    if not found:
        raise BadInput("TOPAS input has no i:So/<source>/NumberOfHistoriesInRun parameter")
    if len(found) > 1:
        raise BadInput(f"TOPAS input has several sources ({', '.join(sorted(found))}); the "
                       "histories of one source only can be split over tasks")
    (definitions,) = found.values()
    file_name, raw = next(((f, v) for f, v in definitions if f == main), definitions[0])
    try:
        return int(raw)
    except ValueError:
        raise BadInput(f"{file_name}: NumberOfHistoriesInRun = {raw[:40]!r} is not an "
                       "integer") from None


def _replace(text: str, pattern: re.Pattern[str], value: str) -> tuple[str, bool]:
    """``text`` with the value of every line matching ``pattern`` replaced."""
    lines = text.splitlines()
    hit = False
    for i, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            lines[i] = f"{match.group(1)}{value}{match.groups()[-1]}"
            hit = True
    return "\n".join(lines) + "\n", hit


@dataclass(frozen=True)
class Topas:
    """TOPAS (module docstring)."""

    executable: str
    sim_type: str = "topas"

    @staticmethod
    def input_primaries(input_files: Mapping[str, str]) -> int:
        """NumberOfHistoriesInRun of the one source.

        Raises:
            BadInput: no main parameter file, or no usable histories parameter.
        """
        return histories(input_files, main_input(input_files, **_MAIN))

    def task_files(self, input_files: Mapping[str, str], primaries: int,
                   seed: int) -> dict[str, str]:
        main = main_input(input_files, **_MAIN)
        histories(input_files, main)  # one source, no sequential runs
        files = renamed_main(input_files, main, MAIN_FILE)
        interval = str(max(1, primaries // 100))
        for name in _parameter_files(files):
            text, _ = _replace(files[name], _HISTORIES, str(primaries))
            text, _ = _replace(text, _SINGLE_LINE, '"False"')
            files[name] = text
        for pattern, parameter, value in ((_SEED, "i:Ts/Seed", str(seed)),
                                          (_INTERVAL, "i:Ts/ShowHistoryCountAtInterval",
                                           interval)):
            hits = False
            for name in _parameter_files(files):
                files[name], hit = _replace(files[name], pattern, value)
                hits = hits or hit
            if not hits:
                files[MAIN_FILE] += f"{parameter} = {value}\n"
        return files

    def command(self, workdir: PurePath, seed: int) -> list[str]:
        return [self.executable, MAIN_FILE]

    def parse_progress(self, line: str) -> Progress | None:
        match = _PROGRESS.search(line)
        return Progress(int(match.group(1)), None, None) if match else None

    def collect(self, workdir: Path) -> dict[str, Any]:
        outputs = [p for p in workdir.glob("*.csv") if p.is_file() and is_scorer_output(p)]
        if not outputs:
            raise CollectError("TOPAS wrote no scorer output (no .csv file: do the scorers "
                               "have OutputType \"csv\"?)")
        return {"estimators": read_estimators(outputs, topas_reader, lambda p: p.stem)}


def is_scorer_output(path: Path) -> bool:
    """Whether a CSV file is a TOPAS scorer's (its first line names the TOPAS version)."""
    with path.open("rb") as f:
        return f.readline().startswith(b"# TOPAS Version:")
