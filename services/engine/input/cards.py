"""Reading keyword files (``beam.dat``, ``mat.dat``, ``detect.dat``) into numbered cards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from services.engine.input.errors import InputError


@dataclass(frozen=True)
class Card:
    """One keyword line: where it is, its keyword as written, and its arguments."""

    file: str
    line: int
    keyword: str
    args: tuple[str, ...]

    @property
    def key(self) -> str:
        """The keyword, upper-case (keywords are case-insensitive)."""
        return self.keyword.upper()

    def error(self, message: str) -> InputError:
        return InputError(self.file, self.line, self.key, message)

    def count(self, low: int, high: int | None = None) -> None:
        """Check the number of arguments.

        Raises:
            InputError: fewer than ``low`` or more than ``high`` arguments.
        """
        top = low if high is None else high
        if not low <= len(self.args) <= top:
            want = str(low) if top == low else f"{low} to {top}"
            raise self.error(f"needs {want} argument(s), got {len(self.args)}")

    def number(self, index: int, what: str) -> float:
        """Argument ``index`` as a number.

        Raises:
            InputError: it is missing or not a finite number.
        """
        try:
            value = float(self.args[index].replace("d", "e").replace("D", "e"))
        except (IndexError, ValueError):
            raise self.error(f"{what} must be a number, got "
                             f"{self.args[index] if index < len(self.args) else 'nothing'!r}"
                             ) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise self.error(f"{what} must be a finite number")
        return value

    def integer(self, index: int, what: str) -> int:
        """Argument ``index`` as an integer (``10000``, ``1e4`` and ``1.0e4`` are accepted).

        Raises:
            InputError: it is missing or not a whole number.
        """
        value = self.number(index, what)
        if value != int(value):
            raise self.error(f"{what} must be a whole number, got {self.args[index]!r}")
        return int(value)


def strip_comment(text: str, inline: Sequence[str], leading: Sequence[str]) -> str:
    """A line without its comment (``inline`` marks start one anywhere, ``leading`` only first)."""
    stripped = text.lstrip()
    if any(stripped.startswith(mark) for mark in leading):
        return ""
    for mark in inline:
        cut = text.find(mark)
        if cut >= 0:
            text = text[:cut]
    return text.strip()


def read_cards(file: str, text: str, *, inline: Sequence[str] = ("!",),
               leading: Sequence[str] = ("*", "#")) -> Iterator[Card]:
    """Every non-empty, non-comment line of a keyword file as a card."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = strip_comment(raw, inline, leading)
        if not line:
            continue
        tokens = line.split()
        yield Card(file, number, tokens[0], tuple(tokens[1:]))
