"""Numbers as SHIELD-HIT12A reads them: free-format tokens, and geo.dat's 10-column fields."""

from __future__ import annotations

import math

FIELD = 10
#: At most this many characters of a 10-column field are used, so that a blank always
#: separates neighbouring fields (readers that split on blanks see them too).
FIELD_DIGITS = 9


def free(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` (``-0.0`` written as ``0.0``)."""
    if value == 0:
        return "0.0"
    return repr(float(value))


def _with_point(text: str) -> str:
    # A Fortran F edit descriptor scales a field without a decimal point by its implied
    # decimals ("10" read as F10.3 is 0.010), so every field carries one.
    if "." in text:
        return text
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}.{e}{exponent}"


def fixed(value: float, width: int = FIELD_DIGITS) -> str:
    """``value`` in at most ``width`` characters, as precisely as they allow.

    The exact shortest form is used when it fits; otherwise significant digits
    are dropped until it does (geo.dat bodies are read from 10-column fields,
    of which 9 are used: about 7 significant digits).

    Raises:
        ValueError: the value is not finite (the converter never passes one).
    """
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    if value == 0:
        return "0.0"
    exact = _with_point(repr(float(value)).replace("e+", "e"))
    if len(exact) <= width:
        return exact
    for digits in range(width, 0, -1):
        text = _with_point(f"{value:.{digits}g}".replace("e+", "e"))
        if len(text) <= width:
            return text
    raise ValueError(f"{value!r} does not fit in {width} characters")  # pragma: no cover
