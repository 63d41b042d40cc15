"""Entry point: ``python -m services.engine -N <seed> <workdir>``, or this file run by path.

Run by path (``python /path/to/services/engine/__main__.py ...``), Python puts
this file's directory first on ``sys.path``; it is replaced by the project
root so that ``services`` imports from any working directory and no engine
module shadows a standard one.

A task is one core: BLAS thread pools are limited to one thread (unless the
environment says otherwise) so parallel tasks on one runner do not oversubscribe it.
"""

import os
import sys
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from services.engine.cli import main  # noqa: E402 - after the sys.path fix

sys.exit(main())
