"""Following a simulator's log file while it runs, as ``tail -f`` does.

Some simulators write their progress to a file, not to their output: FLUKA's
``rfluka`` keeps the cycle's ``.out`` file in a sub-directory named after its
PID, and moves it up when the cycle ends. The follower asks the plug-in where
the file is until it exists, then reads what is appended, a line at a time,
every :data:`POLL_SECONDS`. Once opened, the file is read through the same
handle to the end, so a file moved (renamed) while it is followed is still read
whole and no line is read twice. When told to stop (the process has ended) it
reads what is left, the last unterminated line included, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from services.runner.process import READ_CHUNK, LineHandler

POLL_SECONDS = 0.25
"""How often the file is looked for and read (progress is throttled to 1 s anyway)."""


def _open(locate: Callable[[], Path | None]) -> BinaryIO | None:
    path = locate()
    if path is None:
        return None
    try:
        return path.open("rb")
    except FileNotFoundError:  # moved between the look and the open: look again next time
        return None


class LogFollower:
    """Feeds the lines of a log file to a handler until stopped; ``run()`` then ``stop()``."""

    def __init__(self, locate: Callable[[], Path | None], on_line: LineHandler,
                 interval: float = POLL_SECONDS) -> None:
        self._locate = locate
        self._on_line = on_line
        self._interval = interval
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Read what is left, then return from :meth:`run`."""
        self._stop.set()

    async def run(self) -> None:
        """Follow the file until :meth:`stop`; raises what the line handler raises."""
        handle: BinaryIO | None = None
        pending = b""
        try:
            while True:
                last_pass = self._stop.is_set()
                if handle is None:
                    handle = await asyncio.to_thread(_open, self._locate)
                while handle is not None:
                    chunk = await asyncio.to_thread(handle.read, READ_CHUNK)
                    if not chunk:
                        break
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    if len(pending) > READ_CHUNK:  # an endless line: not progress
                        pending = b""
                    for line in lines:
                        await self._on_line(line.decode(errors="replace"))
                if last_pass:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._interval)
            if pending:
                await self._on_line(pending.decode(errors="replace"))
        finally:
            if handle is not None:
                handle.close()
