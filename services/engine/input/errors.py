"""The one error an input outside the engine's subset raises."""

from __future__ import annotations


class InputError(ValueError):
    """An input file, or a card in it, that the built-in engine cannot run.

    ``line`` is 1-based; 0 means the file as a whole (missing, or a card that
    must be there is not).
    """

    def __init__(self, file: str, line: int, card: str, message: str) -> None:
        super().__init__(f"{file}:{line}: {card}: {message}")
        self.file = file
        self.line = line
        self.card = card
        self.message = message
