"""The editor converter: the YAPTIDE UI's project JSON -> SHIELD-HIT12A input files.

A pure function (:func:`convert`) from a project and a target (``shieldhit``
for SHIELD-HIT12A, ``builtin`` for the built-in engine, which reads a subset
of the same files) to ``beam.dat``, ``geo.dat``, ``mat.dat`` and
``detect.dat``. Every problem, a malformed part or one the target cannot
run, is a :class:`ConversionError` carrying the JSON path of the part;
nothing else escapes, whatever the input.

Modules: :mod:`~.reader` (path-aware access to the JSON), :mod:`~.targets`
(what each target accepts), :mod:`~.beam`, :mod:`~.geo` (with
:mod:`~.geometry`, :mod:`~.boolean`, :mod:`~.bounds`), :mod:`~.detect` (one
per generated file), :mod:`~.numbers` (number formats), :mod:`~.convert`.
"""

from services.converter.convert import Conversion, convert, output_names
from services.converter.errors import ConversionError
from services.converter.targets import TARGETS

__all__ = ["TARGETS", "Conversion", "ConversionError", "convert", "output_names"]
