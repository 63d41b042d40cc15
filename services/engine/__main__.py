"""Entry point: ``python -m services.engine -N <seed> <workdir>``, or this file run by path.

Run by path (``python /path/to/services/engine/__main__.py ...``), Python puts
this file's directory first on ``sys.path``; it is replaced by the project
root so that ``services`` imports from any working directory and no engine
module shadows a standard one.
"""

import sys
from pathlib import Path

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from services.engine.cli import main

sys.exit(main())
