"""The built-in engine's input: the four SHIELD-HIT12A files, restricted to this subset.

This docstring is the authoritative list of what the engine runs; anything else
is refused with :class:`InputError` naming file, line and card (the command
line prints ``ERROR: <file>:<line>: <CARD>: <what is wrong>`` and exits 2).

``beam.dat`` (keywords case-insensitive; ``!`` starts a comment anywhere, ``*`` and
``#`` at the start of a line; each card at most once):

* ``RNDSEED n``: accepted; the seed used is ``-N <seed>`` of the command line.
* ``JPART0 2`` proton (default); ``JPART0 24`` 4He; ``JPART0 25`` with ``HIPROJ 4 2``
  (4He) or ``HIPROJ 12 6`` (12C).
* ``TMAX0 E [sigma]``: mean kinetic energy and Gaussian 1-sigma spread, MeV for
  protons, MeV/nucleon for ions; 1 to 500 MeV/u (required).
* ``TCUT0 Elow Ehigh``: the sampled energy is redrawn until it falls within the
  cuts (same unit as TMAX0).
* ``NSTAT N [step]``: primaries (required); the save step is ignored.
* ``BEAMPOS x y z`` (cm, default 0 0 0); ``BEAMDIR theta phi`` (degrees, default along +z).
* ``BEAMSIGMA sx sy`` (cm, in the plane across the beam): both > 0 Gaussian sigma;
  0 0 pencil; both < 0 flat rectangle of half-widths |sx| |sy|; sx >= 0 > sy flat
  disc of radius |sy|.
* ``BEAMDIV dx dy [focus]``: Gaussian divergence (mrad, 1 sigma per plane); a
  focus other than 0 is refused.
* ``STRAGG 0|1|2``, ``MSCAT 0|1|2``, ``NUCRE 0|1``: 0 turns energy-loss straggling,
  multiple scattering, nuclear removal off; other values turn them on (default on).
* ``DELTAE f``: the largest fraction of its kinetic energy a primary loses in a
  step (default 0.02, capped at 0.05); ``DEMIN E``: accepted, not used.
* refused: ``USECBEAM``, ``BEAMSAD``, ``USEBMOD``, ``BMODMC``, ``BMODTRANS``,
  ``MAKELN``, ``NEUTRLCUT`` and every other card.

``geo.dat`` (fixed columns, see :mod:`services.engine.input.geo`): bodies ``RPP``
(xmin xmax ymin ymax zmin zmax), ``RCC`` (base centre, height vector, radius;
any axis), ``SPH`` (centre, radius), ``BOX`` (corner and three edge vectors, a
parallelepiped); zones of signed body numbers, intersected, with ``OR`` unions;
the zone -> medium map, where medium 0 is the black hole (particles are
absorbed and counted as escaped) and 1000 is vacuum. A point in no zone is
outside the world (particles leaving it escape). Other bodies are refused.

``mat.dat``: ``MEDIUM n`` / ``ICRU id`` / [``RHO density``] / ``END`` blocks, with the
ICRU/NIST materials of :data:`services.engine.materials.MATERIALS` (276 water,
104 air, 223 PMMA, 119 compact bone (ICRU), 120 cortical bone (ICRP), 221
polyethylene, 226 polystyrene, 13 aluminium, 29 copper); ``LOADDEDX`` and
composition cards are refused. Every medium a zone uses must be defined.

``detect.dat`` (keyword format of SH12A >= 1.0; ``#`` and ``!`` comments):

* ``Geometry Cyl`` (``Name``, ``R rmin rmax nR``, ``Z zmin zmax nZ``; axis along z
  through x = y = 0, full azimuth) and ``Geometry Mesh`` (``Name``, ``X``/``Y``/``Z lo hi n``).
* ``Filter`` (``Name`` and rules ``<Z|A|GEN|ID|E> <op> <value>``, op one of
  ``== = != >= <= > <``, ANDed). Only primaries are transported, so a filter is
  evaluated on the primary: Z, A and ID (JPART0 code) of the beam, GEN = 0, and
  E its kinetic energy in MeV (total, not per nucleon) at each step.
* ``Output`` (``Filename <stem>.bdo``, ``Geo <name>``, one or more
  ``Quantity <Dose|DoseGy|Fluence|Energy|dLET|tLET|AvgEnergy> [<filter>]``;
  ``Fileformat`` is accepted and ignored). ``Diff1``/``Diff2`` and ``Settings``
  are refused.
* Each Output writes ``<stem>.json`` in the work directory: one estimator named
  ``<stem>`` with one page per Quantity line.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.engine.input.beam import parse_beam
from services.engine.input.detect import parse_detectors
from services.engine.input.errors import InputError
from services.engine.input.geo import parse_geometry
from services.engine.input.mat import parse_materials
from services.engine.input.model import EngineInput
from services.engine.materials import BLACK_HOLE, VACUUM

FILES = ("beam.dat", "geo.dat", "mat.dat", "detect.dat")

__all__ = ["FILES", "EngineInput", "InputError", "parse_inputs"]


def parse_inputs(files: Mapping[str, str]) -> EngineInput:
    """Parse and cross-check the four input files (name -> text).

    Raises:
        InputError: a file is missing, or something in it is outside the subset.
    """
    for name in FILES:
        if name not in files:
            raise InputError(name, 0, "FILE", f"{name} is missing (the built-in engine "
                             f"needs {', '.join(FILES)})")
    beam = parse_beam(files["beam.dat"])
    geometry = parse_geometry(files["geo.dat"])
    media = parse_materials(files["mat.dat"])
    outputs = parse_detectors(files["detect.dat"])
    for zone in geometry.zones:
        if zone.medium not in (BLACK_HOLE, VACUUM) and zone.medium not in media:
            raise InputError("geo.dat", zone.medium_line, "MEDIA",
                             f"zone {zone.number} has medium {zone.medium}, which mat.dat "
                             f"does not define (defined: "
                             f"{', '.join(map(str, sorted(media))) or 'none'}; 0 black hole, "
                             "1000 vacuum)")
    return EngineInput(beam=beam, geometry=geometry, media=media, outputs=outputs)
