"""FLUKA: ``rfluka -M 1 task.inp`` on one fixed-format ``*.inp`` input.

Input. The job's one ``*.inp`` file (``fl_sim.inp``, the name YAPTIDE's
converter writes, when there are several) is the main input; it is written
into the work directory as ``task.inp``, so the command line needs no more
than the work directory (the SLURM bridge builds it without the files). FLUKA
names its outputs after the input (``task001_fort.21``), and estimators are
named after the Fortran unit (``21``), as YAPTIDE does, so the name is not
seen. Other files are written as they come (``#include`` targets, tables).

Cards are in FLUKA's fixed format: keyword in columns 1-10, WHAT(1..6) in
ten columns each from column 11, SDUM in 71-78. Free-format input (a FREE
card) is refused rather than misread.

* ``START`` WHAT(1) is the number of primaries; the task's share is written
  there (the card's other WHATs are kept). A fixed-format field holds at most
  ``999999999.`` exactly, so a larger share per task is refused.
* ``RANDOMIZ`` WHAT(2) is the seed. FLUKA accepts seeds below 9.0E8, so a
  task's seed (up to 2**31) is folded into 1..899999999
  (:func:`fluka_seed`); WHAT(1) = 1 as pymchelper writes it. The card is added
  before START if the input has none.

Progress. rfluka itself prints little while FLUKA runs; the progress table
is in ``fluka_<pid>/task001.out``, moved to ``task001.out`` when the cycle
ends. The runner follows that file (:meth:`Fluka.progress_file`). After a line
`` NEXT SEEDS:`` FLUKA prints a row of six numbers whose first two are the
primaries done and still to do, e.g.
``     980000      20000      20000   1.8515483E-04   1.0000000E+30   44182``.

Outputs. Binary ``task001_fort.NN`` files (USRBIN and friends, negative
output unit), read with pymchelper; FLUKA scores per primary already, and
pymchelper converts GeV to MeV (``MeV/g`` for DOSE).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from services.simulators.base import Progress, main_input, renamed_main
from services.simulators.errors import BadInput, CollectError
from services.simulators.estimators import fluka_reader, read_estimators

#: The name the main input is written under in the work directory.
TASK_INPUT = "task.inp"
#: What rfluka names the cycle's files: input stem + cycle number 001.
CYCLE = "task001"
#: The converter's name for the main input, preferred when there are several.
PREFERRED_INPUT = "fl_sim.inp"
_MAIN = {"suffix": ".inp", "preferred": PREFERRED_INPUT, "simulator": "FLUKA"}
#: FLUKA's seeds must be below 9.0E8 (RANDOMIZ WHAT(2)).
SEED_LIMIT = 900_000_000
#: The largest integer a 10-column WHAT field holds exactly (``999999999.``).
MAX_FIXED_INTEGER = 999_999_999

_PROGRESS_ROW = re.compile(
    r"^\s*(\d+)\s+(\d+)\s+\d+\s+[-+\d.]+E[-+]\d+\s+[-+\d.]+E[-+]\d+\s+\d+\s*$")


def fluka_seed(seed: int) -> int:
    """RANDOMIZ WHAT(2) for a task: its seed folded into 1..899999999."""
    return 1 + seed % (SEED_LIMIT - 1)


def _keyword(line: str) -> str:
    """The card keyword of a fixed-format line ('' for comments and blank lines)."""
    if not line.strip() or line.lstrip().startswith(("*", "!", "#")):
        return ""
    head = line[:10].split()
    return head[0].upper() if head else ""


def _what(line: str, index: int) -> str:
    """WHAT(index) of a fixed-format card (1-based), stripped."""
    return line[10 * index: 10 * index + 10].strip()


def _with_what(line: str, index: int, value: int) -> str:
    """The card with WHAT(index) set to an integer, written as FLUKA reads it (``25000.``)."""
    text = f"{value}."
    if len(text) > 10:
        raise BadInput(f"{value} does not fit a 10-column FLUKA field "
                       f"(at most {MAX_FIXED_INTEGER})")
    padded = line.rstrip("\n").ljust(80)
    return (padded[: 10 * index] + text.rjust(10) + padded[10 * index + 10:]).rstrip()


def _check_fixed_format(text: str) -> None:
    if any(_keyword(line) == "FREE" for line in text.splitlines()):
        raise BadInput("free-format FLUKA input (FREE card) is not supported: write the "
                       "cards in fixed format")


def start_primaries(inp: str) -> int:
    """WHAT(1) of the START card.

    Raises:
        BadInput: no START card, free format, or WHAT(1) not a whole positive number.
    """
    _check_fixed_format(inp)
    for line in inp.splitlines():
        if _keyword(line) != "START":
            continue
        raw = _what(line, 1)
        try:
            number = float(raw)
        except ValueError:
            raise BadInput(f"the START card's WHAT(1) (columns 11-20) {raw[:20]!r} is not a "
                           "number") from None
        if not math.isfinite(number) or not number.is_integer():
            raise BadInput(f"the START card's WHAT(1) {raw!r} is not a whole number")
        return int(number)
    raise BadInput("the FLUKA input has no START card")


def set_start_and_seed(inp: str, primaries: int, seed: int) -> str:
    """The input with START WHAT(1) = ``primaries`` and RANDOMIZ seeded with ``seed``.

    Raises:
        BadInput: no START card, free format, or a value that does not fit its field.
    """
    _check_fixed_format(inp)
    lines = inp.splitlines()
    start = [i for i, line in enumerate(lines) if _keyword(line) == "START"]
    if not start:
        raise BadInput("the FLUKA input has no START card")
    lines[start[0]] = _with_what(lines[start[0]], 1, primaries)
    randomiz = [i for i, line in enumerate(lines) if _keyword(line) == "RANDOMIZ"]
    if not randomiz:
        lines.insert(start[0], "RANDOMIZ")
        randomiz = [start[0]]
    for i in randomiz:
        lines[i] = _with_what(_with_what(lines[i], 1, 1), 2, fluka_seed(seed))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Fluka:
    """FLUKA through its ``rfluka`` script, one cycle per task (module docstring)."""

    executable: str
    sim_type: str = "fluka"

    @staticmethod
    def input_primaries(input_files: Mapping[str, str]) -> int:
        """START WHAT(1) of the main ``*.inp``.

        Raises:
            BadInput: no main input, or no usable START card in it.
        """
        return start_primaries(input_files[main_input(input_files, **_MAIN)])

    def task_files(self, input_files: Mapping[str, str], primaries: int,
                   seed: int) -> dict[str, str]:
        files = renamed_main(input_files, main_input(input_files, **_MAIN), TASK_INPUT)
        files[TASK_INPUT] = set_start_and_seed(files[TASK_INPUT], primaries, seed)
        return files

    def command(self, workdir: PurePath, seed: int) -> list[str]:
        return [self.executable, "-M", "1", str(workdir / TASK_INPUT)]

    def progress_file(self, workdir: Path) -> Path | None:
        """``fluka_<pid>/task001.out`` while the cycle runs, ``task001.out`` after it."""
        running = sorted(workdir.glob(f"fluka_*/{CYCLE}.out"))
        if running:
            return running[0]
        done = workdir / f"{CYCLE}.out"
        return done if done.exists() else None

    def parse_progress(self, line: str) -> Progress | None:
        match = _PROGRESS_ROW.match(line)
        if match is None:
            return None
        done, left = int(match.group(1)), int(match.group(2))
        return Progress(done, done + left, None)

    def collect(self, workdir: Path) -> dict[str, Any]:
        outputs = [p for p in workdir.glob(f"{CYCLE}_fort.*") if p.is_file()]
        if not outputs:
            raise CollectError("FLUKA wrote no scoring output (no task001_fort.* file: does "
                               "the input score to a negative, binary, unit?)")
        return {"estimators": read_estimators(outputs, fluka_reader, fortran_unit)}


def fortran_unit(path: Path) -> str:
    """The estimator name of a FLUKA output: its Fortran unit (``task001_fort.21`` -> 21)."""
    return path.name.rsplit("_fort.", 1)[-1]
