"""Following a log file: it may appear late, grow in pieces, move, and end mid-line."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from services.runner.logtail import LogFollower


async def test_lines_are_read_as_written_through_a_move_and_to_the_end(tmp_path: Path) -> None:
    running, done = tmp_path / "fluka_1" / "task001.out", tmp_path / "task001.out"
    lines: list[str] = []
    grown = asyncio.Condition()

    async def on_line(line: str) -> None:
        async with grown:
            lines.append(line)
            grown.notify_all()

    async def wait_until(count: int) -> None:
        async with asyncio.timeout(10), grown:
            await grown.wait_for(lambda: len(lines) >= count)

    def locate() -> Path | None:
        return next((p for p in (running, done) if p.exists()), None)

    follower = LogFollower(locate, on_line, interval=0.02)
    following = asyncio.create_task(follower.run())
    await asyncio.sleep(0.1)  # the file does not exist yet
    assert lines == [] and not following.done()
    running.parent.mkdir()
    with running.open("w") as out:
        out.write("first\nsec")
        out.flush()
        await wait_until(1)
        assert lines == ["first"]  # a line is handed on only once it is complete
        out.write("ond\n")
        out.flush()
        await wait_until(2)
        shutil.move(running, done)  # as rfluka moves the .out up when the cycle ends
        out.write("third\nno newline at the end")
    shutil.rmtree(running.parent)
    follower.stop()
    await following
    assert lines == ["first", "second", "third", "no newline at the end"]


async def test_a_file_found_only_at_the_end_is_read_whole(tmp_path: Path) -> None:
    lines: list[str] = []

    async def on_line(line: str) -> None:
        lines.append(line)

    follower = LogFollower(lambda: tmp_path / "x.out" if (tmp_path / "x.out").exists() else None,
                           on_line, interval=10.0)
    following = asyncio.create_task(follower.run())
    await asyncio.sleep(0.05)
    (tmp_path / "x.out").write_text("a\nb\n")
    follower.stop()  # wakes it at once, for a last look and read
    async with asyncio.timeout(5):
        await following
    assert lines == ["a", "b"]


async def test_the_handlers_error_ends_the_follower(tmp_path: Path) -> None:
    (tmp_path / "x.out").write_text("boom\n")

    async def on_line(line: str) -> None:
        raise RuntimeError(line)

    follower = LogFollower(lambda: tmp_path / "x.out", on_line, interval=0.02)
    with pytest.raises(RuntimeError, match="boom"):
        async with asyncio.timeout(5):
            await follower.run()
