"""Estimator JSON files: one ``<stem>.json`` per Output block (YAPTIDE's estimator/page format).

The shape is that of pymchelper's ``JsonWriter`` plus YAPTIDE's ``name``: an
estimator has ``name``, ``metadata`` (strings) and ``pages``; a page has
``dimensions`` (axes with more than one bin), ``metadata`` (strings),
``data`` (``name``, ``unit``, flat ``values`` in Fortran order, and the
engine's batch standard ``error`` where it has one) and ``axis_dim1``... with
bin centres, named as pymchelper names them (``Position (X/Y/Z)``,
``Radius (R)``). Nothing that varies between runs (date, host) is written, so
the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.engine.input.model import Beam, GeometryKind, QuantityKind
from services.engine.scoring import AVERAGED, Detector

VERSION = "simjobs-builtin 1.0"

#: Page name (pymchelper's ``str(SHDetType)``) and unit of each quantity.
PAGE_NAMES: dict[QuantityKind, tuple[str, str]] = {
    QuantityKind.ENERGY: ("ENERGY", "MeV/prim"),
    QuantityKind.FLUENCE: ("FLUENCE", "cm^-2/prim"),
    QuantityKind.DOSE: ("DOSE", "MeV/g/prim"),
    QuantityKind.DOSE_GY: ("DOSE-GY", "Gy/prim"),
    QuantityKind.DLET: ("DLET", "MeV/cm"),
    QuantityKind.TLET: ("TLET", "MeV/cm"),
    QuantityKind.AVG_ENERGY: ("AVG-ENERGY", "MeV/nucl"),
}
AXIS_NAMES = {GeometryKind.CYL: ("Radius (R)", "Angle (PHI)", "Position (Z)"),
              GeometryKind.MESH: ("Position (X)", "Position (Y)", "Position (Z)")}
AXIS_UNITS = {GeometryKind.CYL: ("cm", "radians", "cm"), GeometryKind.MESH: ("cm", "cm", "cm")}


def estimator_document(detector: Detector, beam: Beam, primaries: int,
                       per_batch: NDArray[np.int64]) -> dict[str, Any]:
    """The estimator of one detector after a run of ``primaries`` primaries."""
    geometry = detector.geometry
    output = detector.output
    names, units = AXIS_NAMES[geometry.kind], AXIS_UNITS[geometry.kind]
    axes = [(i, axis) for i, axis in enumerate(geometry.axes) if axis.n > 1]
    pages = []
    for number, quantity in enumerate(output.quantities):
        values, error = detector.page_values(
            quantity.kind, quantity.filter.name if quantity.filter else "", per_batch)
        name, unit = PAGE_NAMES[quantity.kind]
        metadata = {
            "page_number": str(number), "name": name, "unit": unit, "dettyp": name,
            "detector_type": str(quantity.kind.value), "detector_unit": unit,
            "page_normalized": "3" if quantity.kind in AVERAGED else "2",
        }
        if quantity.filter is not None:
            metadata["page_filter_name"] = quantity.filter.name
        data: dict[str, Any] = {"name": name, "unit": unit,
                                "values": [float(v) for v in values]}
        if error is not None:
            data["error"] = [float(v) for v in error]
        page: dict[str, Any] = {"dimensions": len(axes), "metadata": metadata, "data": data}
        for k, (i, axis) in enumerate(axes, start=1):
            page[f"axis_dim{k}"] = {"name": names[i], "unit": units[i],
                                    "values": axis.centres()}
        pages.append(page)
    projectile = beam.projectile
    metadata = {
        "file_corename": output.stem, "file_counter": "1", "file_format": "json",
        "geo_name": geometry.name, "geotyp": geometry.kind.value,
        "geo_units": ";".join(units), "mc_code_name": "builtin",
        "mc_code_version": VERSION, "number_of_primaries": str(primaries),
        "page_count": str(len(pages)), "projectile_code": str(projectile.jpart),
        "projectile_a": str(projectile.a), "projectile_z": str(projectile.z),
        "Tmax_MeV": f"{beam.energy * projectile.a:g}", "error_type": "stderr",
    }
    return {"name": output.stem, "metadata": metadata, "pages": pages}


def write_estimators(workdir: Path, documents: list[dict[str, Any]]) -> list[Path]:
    """Write each estimator to ``<name>.json`` in ``workdir`` (fixed key order and format)."""
    paths = []
    for document in documents:
        path = workdir / f"{document['name']}.json"
        path.write_text(json.dumps(document, separators=(",", ":")))
        paths.append(path)
    return paths
