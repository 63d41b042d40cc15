"""Comparing JSON values as a reader sees them."""

from __future__ import annotations

from typing import Any


def same_value(a: Any, b: Any) -> bool:
    """Equal, of the same types throughout (1 and 1.0 are not the same reading), NaN = NaN."""
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
