"""Command line: ``python -m services.engine -N <seed> [-n <nstat>] <workdir>``.

The same shape as SHIELD-HIT12A's (``shieldhit -N <seed> <workdir>``). Exit
status 0 on success; 2 when the input is outside the engine's subset (with
``ERROR: <file>:<line>: <CARD>: <what is wrong>`` on stderr) or the command line
is wrong; 1 when the work directory or its files cannot be read or written;
130 when interrupted (SIGINT, as the runner stops a task).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from services.engine.input import FILES, InputError, parse_inputs
from services.engine.run import run


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.engine",
        description="Built-in Monte Carlo engine for SHIELD-HIT12A inputs (a subset).")
    parser.add_argument("-N", "--seedoffset", type=int, default=1,
                        help="random seed (default 1)")
    parser.add_argument("-n", "--nstat", type=int, default=None,
                        help="number of primaries (overrides NSTAT of beam.dat)")
    parser.add_argument("workdir", type=Path, help="directory with beam/geo/mat/detect.dat")
    args = parser.parse_args(list(argv))
    if args.seedoffset < 0:
        parser.error("the seed must not be negative")
    if args.nstat is not None and args.nstat < 1:
        parser.error("the number of primaries must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the engine; returns the exit status."""
    args = _arguments(sys.argv[1:] if argv is None else argv)
    workdir: Path = args.workdir
    files: dict[str, str] = {}
    for name in FILES:
        path = workdir / name
        if not path.exists():
            continue  # parse_inputs names the missing file
        try:
            files[name] = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"ERROR: {name}: cannot be read: {exc}", file=sys.stderr)
            return 1
    try:
        engine_input = parse_inputs(files)
    except InputError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    try:
        run(engine_input, args.seedoffset, workdir, sys.stdout, nstat=args.nstat)
    except KeyboardInterrupt:
        print("Interrupted (SIGINT): no estimators written", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"ERROR: cannot write the results: {exc}", file=sys.stderr)
        return 1
    return 0
