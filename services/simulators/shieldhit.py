"""SHIELD-HIT12A: ``<exe> -N <offset> <workdir>`` on beam/geo/mat/detect.dat.

Seeds. SHIELD-HIT12A takes its RNG seed from two places: ``RNDSEED`` in
``beam.dat`` and the seed offset ``-N`` on the command line. The offset is
also the 4-digit suffix of every file the run writes (``shieldhit_0042.log``,
``z_profile_0042.bdo``), and it must lie in 1..9999 (OpenShieldHIT, whose
command line mirrors SH12A's, documents "max 9999"; pymchelper's runner starts
seeds at 1). A 5-digit suffix would also break pymchelper's grouping of files
by core name, which strips exactly four trailing digits. A task's seed (up to
2**31) therefore goes whole into ``RNDSEED`` and, folded into 1..9999
(:func:`seed_offset`), into ``-N``: two tasks whose offsets happen to coincide
still differ in ``RNDSEED``, so no two tasks share a random sequence.

Outputs. One ``<Filename stem>_<NNNN>.bdo`` per ``Output`` block of
``detect.dat``, read with pymchelper into per-primary pages (units as
pymchelper gives them, e.g. ``MeV/g/prim``); estimator names are pymchelper's
core names (``z_profile_0042.bdo`` -> ``z_profile``). Estimator JSON files in
the result schema named like the outputs, ``<name>_<NNNN>.json``, are collected
too, for tools that write JSON; other JSON files are inputs (the converter's
``info.json``, which is not even JSON) and are left alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from services.simulators.base import Progress, estimator_documents, safe_name
from services.simulators.errors import BadInput, CollectError
from services.simulators.estimators import read_estimators, shieldhit_reader

_REQUESTED = re.compile(r"Requested number of primaries NSTAT.*:\s*(\d+)")

#: Estimator JSON written for the run: named like the .bdo outputs, with the 4-digit suffix.
JSON_OUTPUTS = "*_[0-9][0-9][0-9][0-9].json"
#: Largest seed offset (``-N``): the file suffixes have four digits.
MAX_SEED_OFFSET = 9999


def seed_offset(seed: int) -> int:
    """The ``-N`` value of a task: its seed folded into 1..9999."""
    return 1 + seed % MAX_SEED_OFFSET


def _card_tokens(line: str) -> list[str]:
    """A beam.dat line's tokens, without the ``!`` comment."""
    return line.split("!", 1)[0].split()


def _set_card(beam: str, card: str, value: int, default_tail: str = "") -> str:
    """``beam.dat`` with the first value of ``card`` set (the card is added if absent).

    The card's other columns and its comment are kept: NSTAT's save interval,
    for one, is the user's.
    """
    pattern = re.compile(rf"^(\s*{card}\s+)(\S+)(.*)$", re.IGNORECASE)
    lines = beam.splitlines()
    for i, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            lines[i] = f"{match.group(1)}{value}{match.group(3)}"
            return "\n".join(lines) + "\n"
    return "\n".join([*lines, f"{card} {value}{default_tail}"]) + "\n"


def set_nstat(beam: str, primaries: int) -> str:
    """``beam.dat`` with its NSTAT card set to ``primaries`` (added if absent)."""
    return _set_card(beam, "NSTAT", primaries, " 0")


def set_rndseed(beam: str, seed: int) -> str:
    """``beam.dat`` with its RNDSEED card set to ``seed`` (added if absent)."""
    return _set_card(beam, "RNDSEED", seed)


def nstat(beam: str) -> int:
    """The NSTAT value of a ``beam.dat``.

    Raises:
        BadInput: no NSTAT card, or its value is not a whole finite number.
    """
    for line in beam.splitlines():
        tokens = _card_tokens(line)
        if not tokens or tokens[0].upper() != "NSTAT":
            continue
        if len(tokens) < 2:
            raise BadInput("the NSTAT card of beam.dat has no value")
        try:
            number = float(tokens[1])
        except ValueError:
            raise BadInput(f"the NSTAT value {tokens[1][:40]!r} is not a number") from None
        if not math.isfinite(number) or not number.is_integer():
            raise BadInput(f"the NSTAT value {tokens[1][:40]!r} is not a whole number")
        return int(number)
    raise BadInput("beam.dat has no NSTAT card")


@dataclass(frozen=True)
class ShieldHit:
    """SHIELD-HIT12A.

    The task's share of primaries goes into ``beam.dat``'s NSTAT card, its
    seed into RNDSEED and ``-N`` (module docstring). Progress comes from the
    lines ``Primary particle no. <k> ETR: <h> hour(s) <m> minute(s) <s> second(s)``
    and ``Requested number of primaries NSTAT ... : <n>`` (also written to
    ``shieldhit_<NNNN>.log``; the output is the same text).
    """

    executable: str
    sim_type: str = "shieldhit"

    @staticmethod
    def input_primaries(input_files: Mapping[str, str]) -> int:
        """NSTAT of ``beam.dat``.

        Raises:
            BadInput: no beam.dat, or no usable NSTAT card in it.
        """
        if "beam.dat" not in input_files:
            raise BadInput("SHIELD-HIT12A input has no beam.dat, so no NSTAT card: "
                           "cannot find the number of primaries")
        return nstat(input_files["beam.dat"])

    def task_files(self, input_files: Mapping[str, str], primaries: int,
                   seed: int) -> dict[str, str]:
        if "beam.dat" not in input_files:
            raise BadInput("SHIELD-HIT12A input has no beam.dat")
        files = {safe_name(name): text for name, text in input_files.items()}
        files["beam.dat"] = set_rndseed(set_nstat(files["beam.dat"], primaries), seed)
        return files

    def command(self, workdir: PurePath, seed: int) -> list[str]:
        return [self.executable, "-N", str(seed_offset(seed)), str(workdir)]

    def parse_progress(self, line: str) -> Progress | None:
        return parse_progress(line)

    def collect(self, workdir: Path) -> dict[str, Any]:
        estimators = read_estimators(workdir.glob("*.bdo"), shieldhit_reader, bdo_core_name)
        estimators += estimator_documents(workdir, JSON_OUTPUTS)["estimators"]
        if not estimators:
            raise CollectError("SHIELD-HIT12A wrote no estimator output (no .bdo file: "
                               "does detect.dat have an Output block?)")
        return {"estimators": estimators}


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


def bdo_core_name(path: Path) -> str:
    """The estimator name of a ``.bdo`` file: its stem without the 4-digit seed suffix."""
    stem = path.stem
    if len(stem) > 4 and stem[-4:].isdigit():
        return stem[:-4].rstrip("_")
    return stem
