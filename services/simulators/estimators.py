"""Simulator output files as the estimator/page JSON, read with pymchelper.

pymchelper reads SHIELD-HIT12A ``.bdo`` files, FLUKA binary ``*_fort.NN``
files and TOPAS scorer CSV files into ``Estimator`` objects (one mesh, one or
more pages of values per primary). This module turns one such object into the
JSON that the API serves (``reference/physics.md`` §5): metadata stringified as
pymchelper's own JSON writer does, page values flattened in Fortran order
(first axis fastest, whatever the file's order) and one axis entry per
dimension with more than one bin.

The reader is chosen by the plug-in, not guessed from the file: pymchelper's
guess sends any file that is neither FLUKA nor ``.bdo`` to its 2010 SHIELD-HIT
reader, CSV files included.

pymchelper is imported when a file is read, not with this module: it takes
about a second to import (its bundled flair tables), and the API, which loads
the plug-ins to count primaries, never reads outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from services.simulators.errors import CollectError

Reader = Callable[[str], Any]
"""Builds a pymchelper reader for one file (``reader.read(estimator) -> bool``)."""

#: Estimator attributes that are data or structure, not metadata.
_NOT_METADATA = frozenset({"pages", "x", "y", "z", "data", "data_raw", "error", "error_raw",
                           "counter"})
#: Page attributes that are data or structure, not metadata.
_NOT_PAGE_METADATA = frozenset({"data_raw", "error_raw", "estimator", "diff_axis1",
                                "diff_axis2"})


def shieldhit_reader(path: str) -> Any:
    """The pymchelper reader for a SHIELD-HIT12A ``.bdo`` file (format from its header)."""
    from pymchelper.readers.shieldhit.general import SHReaderFactory

    return SHReaderFactory(path).get_reader()(path)


def fluka_reader(path: str) -> Any:
    """The pymchelper reader for a FLUKA binary scoring file (USRBIN, USRBDX, ...)."""
    from pymchelper.readers.fluka import FlukaReader

    return FlukaReader(path)


def topas_reader(path: str) -> Any:
    """The pymchelper reader for a TOPAS scorer CSV file."""
    from pymchelper.readers.topas import TopasReader

    return TopasReader(path)


def _text(value: object) -> str:
    """A metadata value as text (FLUKA titles come as bytes)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def json_values(values: Iterable[float]) -> list[float | None]:
    """Floats for JSON: NaN and infinities (empty bins of some scorers) become null."""
    return [float(v) if math.isfinite(v) else None for v in values]


def read_estimator(path: Path, reader: Reader, name: str) -> dict[str, Any]:
    """One output file as one estimator document named ``name``.

    Raises:
        CollectError: pymchelper cannot read the file, or it has no pages.
    """
    from pymchelper.estimator import Estimator

    estimator = Estimator()
    estimator.file_counter = 1
    try:
        ok = reader(str(path)).read(estimator)
    # pymchelper's readers raise whatever the bytes provoke (struct, numpy, KeyError,
    # IndexError, ...) on a truncated or foreign file; each means the same to us.
    except Exception as exc:
        raise CollectError(f"output {path.name} cannot be read: {exc!r}") from exc
    if not ok:
        raise CollectError(f"output {path.name} cannot be read: pymchelper found no "
                           "scorer data in it")
    if not estimator.pages:
        raise CollectError(f"output {path.name} has no pages")
    estimator.file_corename = name
    return estimator_json(estimator, name, path.name)


def read_estimators(paths: Iterable[Path], reader: Reader,
                    name_of: Callable[[Path], str]) -> list[dict[str, Any]]:
    """Every file as an estimator document, in file-name order.

    Raises:
        CollectError: a file cannot be read, or two files give one estimator name.
    """
    documents: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for path in sorted(paths):
        name = name_of(path)
        if name in seen:
            raise CollectError(f"outputs {seen[name]} and {path.name} both give the "
                               f"estimator {name!r}")
        seen[name] = path.name
        documents.append(read_estimator(path, reader, name))
    return documents


def _page_values(page: Any, file_name: str) -> list[float | None]:
    try:
        data = np.asarray(page.data, dtype=float)
    except ValueError as exc:  # a reshape that does not fit the estimator's mesh
        raise CollectError(f"output {file_name}: page {page.name!r} does not fit the "
                           f"estimator's mesh ({exc}); score it into a file of its own") from exc
    return json_values(data.ravel(order="F"))


def estimator_json(estimator: Any, name: str, file_name: str = "") -> dict[str, Any]:
    """The estimator/page JSON of one pymchelper ``Estimator``.

    Raises:
        CollectError: a page's values do not fit the estimator's mesh.
    """
    metadata = {key: _text(value) for key, value in vars(estimator).items()
                if key not in _NOT_METADATA}
    skip = _NOT_PAGE_METADATA | set(vars(estimator))
    pages = []
    for page in estimator.pages:
        page_json: dict[str, Any] = {
            "metadata": {key: _text(value) for key, value in vars(page).items()
                         if key not in skip},
            "dimensions": int(page.dimension),
            "data": {"name": str(page.name), "unit": str(page.unit),
                     "values": _page_values(page, file_name)},
        }
        for i in range(page.dimension):
            axis = page.plot_axis(i)
            page_json[f"axis_dim{i + 1}"] = {"name": str(axis.name), "unit": str(axis.unit),
                                             "values": json_values(axis.data)}
        pages.append(page_json)
    return {"name": name, "metadata": metadata, "pages": pages}
