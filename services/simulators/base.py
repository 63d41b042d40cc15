"""The plug-in interface, and the helpers every plug-in shares."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, NamedTuple, Protocol

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


def safe_name(name: str) -> str:
    """A file name that stays inside the work directory.

    Raises:
        BadInput: empty, a path, or a name that means something else.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise BadInput(f"bad input file name {name[:80]!r}")
    return name


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
