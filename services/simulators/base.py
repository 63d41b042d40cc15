"""The plug-in interface, and the helpers every plug-in shares."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, NamedTuple, Protocol, runtime_checkable

from services.simulators.errors import BadInput, CollectError


class Progress(NamedTuple):
    """One progress reading from a simulator's output."""

    simulated: int
    #: The requested count, when the line says it (SHIELD-HIT's progress lines do not).
    requested: int | None
    eta_seconds: int | None


class Simulator(Protocol):
    """What a platform needs from a simulator plug-in."""

    @property
    def sim_type(self) -> str:
        """The JobSubmitted ``sim_type`` this plug-in runs."""

    def task_files(self, input_files: Mapping[str, str], primaries: int,
                   seed: int) -> dict[str, str]:
        """The work-directory files of one task (name -> text); pure.

        Raises:
            BadInput: the input cannot be run with this simulator.
        """

    def command(self, workdir: PurePath, seed: int) -> list[str]:
        """The argv that runs the task whose files are in ``workdir`` (also its cwd)."""

    def parse_progress(self, line: str) -> Progress | None:
        """Progress from one line of output, or None if the line carries none."""

    def collect(self, workdir: Path) -> dict[str, Any]:
        """The task's result document (``{"estimators": [...]}``) from its outputs.

        Raises:
            CollectError: the outputs are missing or unreadable.
        """


@runtime_checkable
class FollowsLogFile(Protocol):
    """A simulator that reports progress in a log file rather than on its output.

    FLUKA's ``rfluka`` prints little while it runs; the progress table is in the
    ``.out`` file of the cycle, written in a sub-directory whose name holds the
    PID. The runner asks the plug-in where that file is, follows it (as
    ``tail -f`` does) while the process runs, and feeds its lines to
    :meth:`Simulator.parse_progress` as it does with the process's output.
    """

    def progress_file(self, workdir: Path) -> Path | None:
        """The file to follow now, or None while it does not exist yet."""


class SimulatorPlugin(Protocol):
    """A plug-in class: what is known about a simulator before any executable is chosen.

    The API validates a submission on a host where no simulator is installed,
    so reading the number of primaries from the input is a function of the
    class, not of a configured instance.
    """

    def __call__(self, executable: str) -> Simulator:
        """The plug-in driving ``executable``."""

    def input_primaries(self, input_files: Mapping[str, str]) -> int:
        """The number of primaries the whole job's input asks for.

        Raises:
            BadInput: the input does not say, or says something unusable.
        """


def safe_name(name: str) -> str:
    """A file name that stays inside the work directory.

    Raises:
        BadInput: empty, a path, or a name that means something else.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise BadInput(f"bad input file name {name[:80]!r}")
    return name


def main_input(input_files: Mapping[str, str], *, suffix: str, preferred: str,
               simulator: str) -> str:
    """The name of the file a simulator is started with: ``preferred``, or the only ``*suffix``.

    Raises:
        BadInput: no such file, or several and none is ``preferred``.
    """
    if preferred in input_files:
        return preferred
    names = sorted(name for name in input_files if name.endswith(suffix))
    if not names:
        raise BadInput(f"{simulator} input has no *{suffix} file")
    if len(names) > 1:
        raise BadInput(f"{simulator} input has several *{suffix} files "
                       f"({', '.join(names[:10])}); name the main one {preferred}")
    return names[0]


def renamed_main(input_files: Mapping[str, str], main: str, canonical: str) -> dict[str, str]:
    """The input files with the main one under ``canonical``, the name the command line uses.

    The command line is built from the work directory alone (the SLURM bridge
    builds it without the files), so the main input needs a fixed name there.

    Raises:
        BadInput: a bad file name, or another file already has the name ``canonical``.
    """
    if canonical in input_files and canonical != main:
        raise BadInput(f"input file name {canonical} is reserved for the main input "
                       f"(here {main})")
    files = {safe_name(name): text for name, text in input_files.items() if name != main}
    files[canonical] = input_files[main]
    return files


def write_task_files(workdir: Path, files: Mapping[str, str]) -> None:
    """Create ``workdir`` with ``files`` in it (names checked by :func:`safe_name`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (workdir / safe_name(name)).write_text(text)


def estimator_documents(workdir: Path, pattern: str = "*.json") -> dict[str, Any]:
    """Every estimator JSON file of a work directory as one result document.

    A file holds either one estimator (``name`` and ``pages``) or a document
    ``{"estimators": [...]}``; hidden files are skipped.

    Raises:
        CollectError: a file is not JSON or not an estimator.
    """
    estimators: list[dict[str, Any]] = []
    for path in sorted(workdir.glob(pattern)):
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
