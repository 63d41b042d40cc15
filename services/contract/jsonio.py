"""JSON in and out at orjson's speed, with the standard library's values.

orjson parses and writes a tenth as slowly as ``json``, but not always the same values:
it reads an integer beyond 64 bits as a float, refuses NaN, Infinity, UTF-16 and a lone
surrogate escape on input, and on output refuses integers beyond 64 bits and lone
surrogates and writes NaN and infinities as ``null``. Everything here reads and writes
exactly the values ``json`` does; orjson is only the fast path. Used for events
(:mod:`services.contract.envelope`) and for the API's request and response bodies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import orjson

#: orjson reads an integer beyond 64 bits as a float; no integer within them is this large.
_HUGE = float(2**63)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes, *, constants: bool = True) -> Any:
    """The value ``json.loads`` reads from ``raw``.

    ``constants``: whether NaN, Infinity and -Infinity are read (as ``json`` does) or
    refused (they are not JSON).

    Raises:
        ValueError: not JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``).
        RecursionError: nested too deep for the standard parser.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if not _any_float(value, _huge):  # else an integer beyond 64 bits may be in there
            return value
    return json.loads(raw) if constants else json.loads(raw, parse_constant=_refuse)


def dumps(value: Any, *, sort_keys: bool = False,
          default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON of ``value``, reading back as ``value`` (UTF-8; NaN written as NaN).

    ``default``: what to write for an object JSON has no type for (as in ``json.dumps``).
    """
    try:
        raw = orjson.dumps(value, default,
                           option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:  # beyond orjson: an integer over 64 bits, a lone surrogate
        return _standard(value, sort_keys, default)
    if b"null" in raw and _any_float(value, _non_finite):
        return _standard(value, sort_keys, default)
    return raw


def _standard(value: Any, sort_keys: bool, default: Callable[[Any], Any] | None) -> bytes:
    """The standard encoder (non-ASCII escaped, so that a lone surrogate can be written)."""
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"),
                      default=default).encode()


def _any_float(value: Any, test: Callable[[float], bool]) -> bool:
    """Whether a float anywhere in a parsed document passes ``test``."""
    if isinstance(value, float):
        return test(value)
    if isinstance(value, dict):
        return any(_any_float(v, test) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_any_float(v, test) for v in value)
    return False


def _huge(value: float) -> bool:
    return abs(value) >= _HUGE


def _non_finite(value: float) -> bool:
    return not math.isfinite(value)
