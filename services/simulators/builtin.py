"""The built-in engine (:mod:`services.engine`) as a simulator plug-in.

It needs no configuration: the engine runs under the runner's own Python
(``sys.executable``) unless ``SIMJOBS_SIM_BUILTIN_EXE`` names another Python
interpreter (one with NumPy). The engine is started by the path of its
``__main__.py``, which puts the project root on ``sys.path`` itself, so it runs
whatever the working directory (the task's work directory) and whether or not
the project is installed in that interpreter.

Input, progress and outputs are SHIELD-HIT12A's: NSTAT is rewritten in
``beam.dat``, progress lines are parsed by the SHIELD-HIT12A parser, and each
Output block leaves an estimator JSON file. The input is parsed before the
task starts, so an input outside the engine's subset fails the task at once
with the engine's message (file, line, card).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import services.engine
from services.engine.input import InputError, parse_inputs
from services.simulators.base import Progress, estimator_documents, safe_name
from services.simulators.errors import BadInput, CollectError
from services.simulators.shieldhit import nstat, parse_progress, set_nstat

ENGINE_MAIN = Path(services.engine.__file__).resolve().parent / "__main__.py"
"""The engine's entry point, run by path."""


@dataclass(frozen=True)
class Builtin:
    """The built-in Monte Carlo engine; ``executable`` is the Python interpreter to run it."""

    executable: str
    sim_type: str = "builtin"

    @staticmethod
    def input_primaries(input_files: Mapping[str, str]) -> int:
        """NSTAT of ``beam.dat``, as SHIELD-HIT12A reads it.

        Raises:
            BadInput: no beam.dat, or no usable NSTAT card in it.
        """
        if "beam.dat" not in input_files:
            raise BadInput("built-in engine input has no beam.dat, so no NSTAT card: "
                           "cannot find the number of primaries")
        return nstat(input_files["beam.dat"])

    def task_files(self, input_files: Mapping[str, str], primaries: int,
                   seed: int) -> dict[str, str]:
        if "beam.dat" not in input_files:
            raise BadInput("built-in engine input has no beam.dat")
        files = {safe_name(name): set_nstat(text, primaries) if name == "beam.dat" else text
                 for name, text in input_files.items()}
        try:
            parse_inputs(files)
        except InputError as exc:
            raise BadInput(f"input outside the built-in engine's subset: {exc}") from exc
        return files

    def command(self, workdir: PurePath, seed: int) -> list[str]:
        return [self.executable, str(ENGINE_MAIN), "-N", str(seed), str(workdir)]

    def parse_progress(self, line: str) -> Progress | None:
        return parse_progress(line)

    def collect(self, workdir: Path) -> dict[str, Any]:
        document = estimator_documents(workdir)
        if not document["estimators"]:
            raise CollectError("the built-in engine wrote no estimator output")
        return document
