"""A Server-Sent Events reader for tests and benchmarks, as the HTML standard parses a stream.

It keeps what an EventSource keeps (the last event id, the reconnection delay) and
counts comment lines, so a test can see keep-alives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event."""

    kind: str
    data: str
    #: The id field of this event, if it had one.
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Events from an open ``text/event-stream`` response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments = 0
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    async def next(self) -> SseEvent | None:
        """The next event, or None when the server has closed the stream."""
        data: list[str] = []
        kind = "message"
        ident: str | None = None
        while True:
            raw = await self.response.content.readline()
            if not raw:
                return None
            line = raw.decode().removesuffix("\n").removesuffix("\r")
            if line == "":
                if ident is not None:
                    self.last_id = ident
                if data:
                    return SseEvent(kind, "\n".join(data), ident)
                kind, ident = "message", None
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                kind = value
            elif name == "id":
                ident = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)

    async def expect(self) -> SseEvent:
        """The next event; the stream must not end first."""
        event = await self.next()
        assert event is not None, "the stream ended"
        return event

    async def comment(self) -> None:
        """Read until the next comment line (a keep-alive); no event may come before it.

        Raises:
            AssertionError: an event came first, or the stream ended.
        """
        while True:
            raw = await self.response.content.readline()
            assert raw, "the stream ended"
            line = raw.decode().removesuffix("\n").removesuffix("\r")
            if line.startswith(":"):
                self.comments += 1
                return
            assert not line.startswith(("data", "event", "id")), f"an event came: {line!r}"
            if line.startswith("retry:") and line[6:].strip().isdigit():
                self.retry_ms = int(line[6:].strip())

    async def until(self, kind: str) -> list[SseEvent]:
        """Every event up to and including the first of ``kind``.

        Raises:
            AssertionError: the stream ended before one came.
        """
        seen: list[SseEvent] = []
        while True:
            event = await self.next()
            assert event is not None, f"stream ended before a {kind!r} event: {seen}"
            seen.append(event)
            if event.kind == kind:
                return seen
