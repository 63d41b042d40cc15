"""One project JSON + one target -> the four SHIELD-HIT12A input files (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.converter.beam import read_beam
from services.converter.detect import read_scoring
from services.converter.errors import ConversionError
from services.converter.geo import read_geometry
from services.converter.reader import Node
from services.converter.targets import TARGETS


@dataclass(frozen=True)
class Conversion:
    """The generated files and what the job needs to know about them."""

    #: file name -> text: beam.dat, geo.dat, mat.dat, detect.dat (+ a beam source file)
    files: dict[str, str]
    #: ``beam.numberOfParticles``: the job's number of primaries (NSTAT of beam.dat)
    primaries: int
    #: The output names in project order; each is the name of one estimator in the
    #: results (the Filename stem of its ``Output`` block).
    outputs: list[str]


def convert(project: object, sim_type: str, *, root: str = "input_json") -> Conversion:
    """Convert an editor project for ``sim_type`` ("shieldhit" or "builtin").

    ``root`` is how paths in errors begin (the request field that held the project).

    Raises:
        ConversionError: the project is malformed, or needs something the target
            does not support; its ``path`` names the part.
    """
    target = TARGETS.get(sim_type)
    if target is None:
        raise ConversionError("sim_type", f"no converter for {sim_type!r} "
                              f"(available: {', '.join(TARGETS)})")
    node = Node(project, root)
    node.obj()
    special = node.get("specialComponentsManager")
    modulator = special.get("modulator") if special is not None else None
    if modulator is not None:
        modulator.fail("beam modulators (ripple filters) cannot be converted")
    beam = read_beam(node, target)
    geometry = read_geometry(node, target)
    scoring = read_scoring(node, target, geometry)
    files = {
        "beam.dat": beam.beam_dat(),
        "geo.dat": geometry.geo_dat(),
        "mat.dat": geometry.media.mat_dat(),
        "detect.dat": scoring.text,
        **beam.files,
    }
    return Conversion(files=files, primaries=beam.primaries, outputs=scoring.outputs)


def output_names(project: Mapping[str, Any]) -> list[str]:
    """The output names of a project that converted, in project order (lenient reader).

    Used when results come back: each output's estimator carries its name.
    """
    scoring = project.get("scoringManager")
    outputs = scoring.get("outputs") if isinstance(scoring, dict) else None
    if not isinstance(outputs, list):
        return []
    return [o["name"] for o in outputs if isinstance(o, dict) and isinstance(o.get("name"), str)]
