"""Reading the project JSON with its path in hand, so that every failure names its place.

The converter never indexes the raw JSON directly: it walks :class:`Node`
objects, whose accessors check the type and range of what they return and
raise :class:`~services.converter.errors.ConversionError` with the JSON path
otherwise. That is what keeps a malformed project from escaping as a
``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, TypeVar

from services.converter.errors import ConversionError

_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Lengths and coordinates beyond this many centimetres (10 km) are refused: they are
#: mistakes, and they would lose their precision in geo.dat's 10-character fields.
MAX_LENGTH_CM = 1.0e6


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Node:
    """One value of the project JSON and the path that leads to it."""

    __slots__ = ("path", "value")

    def __init__(self, value: object, path: str) -> None:
        self.value = value
        self.path = path

    def fail(self, reason: str) -> NoReturn:
        """Raise the converter's error for this place.

        Raises:
            ConversionError: always.
        """
        raise ConversionError(self.path, reason)

    # --- structure ------------------------------------------------------------------------

    def obj(self) -> dict[str, Any]:
        """The value as a JSON object.

        Raises:
            ConversionError: it is not an object.
        """
        if not isinstance(self.value, dict):
            self.fail(f"must be an object, not {_kind(self.value)}")
        return self.value

    def child_path(self, name: str) -> str:
        """The path of the member ``name`` of this object."""
        if _IDENTIFIER.match(name):
            return f"{self.path}.{name}"
        return f"{self.path}[{name[:60]!r}]"

    def key(self, name: str) -> Node:
        """A required member (present and not null).

        Raises:
            ConversionError: this is not an object, or the member is missing or null.
        """
        value = self.obj().get(name)
        if value is None:
            raise ConversionError(self.child_path(name), "is missing")
        return Node(value, self.child_path(name))

    def get(self, name: str) -> Node | None:
        """An optional member: None when absent or null.

        Raises:
            ConversionError: this is not an object.
        """
        value = self.obj().get(name)
        return None if value is None else Node(value, self.child_path(name))

    def has(self, name: str) -> bool:
        """Whether the optional member is present and not null."""
        return isinstance(self.value, dict) and self.value.get(name) is not None

    def items(self) -> list[Node]:
        """The elements of a JSON list.

        Raises:
            ConversionError: it is not a list.
        """
        if not isinstance(self.value, list):
            self.fail(f"must be a list, not {_kind(self.value)}")
        return [Node(item, f"{self.path}[{i}]") for i, item in enumerate(self.value)]

    def members(self) -> Iterator[tuple[str, Node]]:
        """The members of a JSON object, in order.

        Raises:
            ConversionError: it is not an object.
        """
        for name, value in self.obj().items():
            yield name, Node(value, self.child_path(str(name)))

    # --- scalars --------------------------------------------------------------------------

    def string(self, *, max_length: int = 200, allow_empty: bool = False) -> str:
        """The value as a string.

        Raises:
            ConversionError: not a string, empty (unless allowed) or too long.
        """
        if not isinstance(self.value, str):
            self.fail(f"must be a string, not {_kind(self.value)}")
        if not self.value and not allow_empty:
            self.fail("must not be empty")
        if len(self.value) > max_length:
            self.fail(f"must be at most {max_length} characters long")
        return self.value

    def boolean(self) -> bool:
        """The value as a boolean.

        Raises:
            ConversionError: not a boolean.
        """
        if not isinstance(self.value, bool):
            self.fail(f"must be true or false, not {_kind(self.value)}")
        return self.value

    def number(self, *, low: float | None = None, high: float | None = None,
               above: float | None = None) -> float:
        """The value as a finite number in ``[low, high]`` (and ``> above`` if given).

        Raises:
            ConversionError: not a number, not finite, or out of range.
        """
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"must be a number, not {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            self.fail("is too large")
        if not math.isfinite(number):
            self.fail("must be a finite number")
        if above is not None and not number > above:
            self.fail(f"must be greater than {above:g}, got {number:g}")
        if low is not None and number < low:
            self.fail(f"must be at least {low:g}, got {number:g}")
        if high is not None and number > high:
            self.fail(f"must be at most {high:g}, got {number:g}")
        return number

    def integer(self, *, low: int | None = None, high: int | None = None) -> int:
        """The value as an integer (an integral float such as ``4.0`` counts) in range.

        Raises:
            ConversionError: not an integer, or out of range.
        """
        value = self.value
        if isinstance(value, bool):
            self.fail("must be an integer, not a boolean")
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            shown = repr(value) if isinstance(value, float) else _kind(value)
            self.fail(f"must be an integer, not {shown}")
        if low is not None and value < low:
            self.fail(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            self.fail(f"must be at most {high}, got {value}")
        return value

    def choice(self, options: Mapping[str, _T]) -> _T:
        """The value looked up in ``options`` (a string key).

        Raises:
            ConversionError: not a string, or not one of the options.
        """
        if not isinstance(self.value, str) or self.value not in options:
            shown = self.value if isinstance(self.value, str) else _kind(self.value)
            self.fail(f"must be one of {', '.join(repr(k) for k in options)}, "
                      f"not {str(shown)[:60]!r}")
        return options[self.value]

    # --- geometry -------------------------------------------------------------------------

    def vector3(self, *, limit: float = MAX_LENGTH_CM) -> tuple[float, float, float]:
        """Three finite numbers, each within ``[-limit, limit]``.

        Raises:
            ConversionError: not a list of three numbers in range.
        """
        items = self.items()
        if len(items) != 3:
            self.fail(f"must be a list of 3 numbers, not {len(items)}")
        x, y, z = (item.number(low=-limit, high=limit) for item in items)
        return x, y, z

    def length(self, *, allow_zero: bool = False) -> float:
        """A length in centimetres: positive (or zero if allowed) and at most 10 km.

        Raises:
            ConversionError: not such a number.
        """
        if allow_zero:
            return self.number(low=0.0, high=MAX_LENGTH_CM)
        return self.number(above=0.0, high=MAX_LENGTH_CM)
