from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.artifacts.journal import JOURNAL_DIR
from services.artifacts.store import ArtifactCorrupted, ArtifactNotFound, ArtifactStore, digest


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.put_bytes(b"hello")
    assert ref == digest(b"hello")
    assert store.put_bytes(b"hello") == ref
    assert store.get_bytes(ref) == b"hello"
    store.close()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [ref]  # no segment left


def test_json_has_one_address_whatever_the_key_order(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.put_json({"a": 1, "b": [2]}) == store.put_json({"b": [2], "a": 1})


def test_corruption_and_absence_are_reported(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.put_bytes(b"result")
    store.path_of(ref).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupted):
        store.get_bytes(ref)
    with pytest.raises(ArtifactNotFound):
        store.get_bytes("0" * 64)


async def test_async_wrappers_round_trip(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = await store.aput_json({"x": 1})
    assert await store.aget_json(ref) == {"x": 1}


async def test_concurrent_puts_from_threads_and_two_stores_all_land(tmp_path: Path) -> None:
    """Two stores on one directory (two processes' worth) writing from many threads."""
    stores = [ArtifactStore(tmp_path), ArtifactStore(tmp_path)]
    blobs = [f"input {n}\n".encode() * (1 + n % 50) for n in range(400)]
    blobs.append(bytes(range(256)) * 20_000)  # 5 MiB: more than one write() may take
    refs = await asyncio.gather(*(stores[n % 2].aput_bytes(b) for n, b in enumerate(blobs)))
    assert refs == [digest(b) for b in blobs]
    stores[1].close()
    check_stored(tmp_path, stores[0], refs, blobs)


def check_stored(root: Path, store: ArtifactStore, refs: list[str], blobs: list[bytes]) -> None:
    assert all(store.get_bytes(r) == b for r, b in zip(refs, blobs, strict=True))
    store.close()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == sorted(set(refs))  # no temp file left behind
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}


def test_a_failed_write_leaves_neither_artifact_nor_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store.put_bytes(b"stored before")
    monkeypatch.setattr(os, "fdatasync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.put_bytes(b"never stored")
    assert not store.exists(digest(b"never stored"))
    monkeypatch.undo()
    store.close()
    assert [p.name for p in files_in(tmp_path)] == [digest(b"stored before")]
    assert store.recover() == 0
    assert store.get_bytes(store.put_bytes(b"never stored")) == b"never stored"


async def test_concurrent_puts_are_written_in_batches_and_fail_one_by_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)
    blobs = [f"submission {n}\n".encode() for n in range(200)]
    doomed = blobs[7]
    (tmp_path / digest(doomed)[:2]).write_bytes(b"")  # a file where its directory must go
    batches: list[int] = []
    append = store.journal.append

    def recording(records: list[tuple[str, bytes]]) -> None:
        batches.append(len(records))
        append(records)

    monkeypatch.setattr(store.journal, "append", recording)
    results = await asyncio.gather(*(store.aput_bytes(b) for b in blobs),
                                   return_exceptions=True)
    assert sum(batches) == len(blobs) and len(batches) < len(blobs) / 4
    assert isinstance(results[7], OSError)
    ok = [(r, b) for r, b in zip(results, blobs, strict=True) if b != doomed]
    assert all(r == digest(b) and store.get_bytes(r) == b for r, b in ok)


async def test_a_batch_whose_journal_sync_fails_stores_nothing_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)

    def io_error(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", io_error)
    blobs = [f"batch {n}".encode() for n in range(40)]
    results = await asyncio.gather(*(store.aput_bytes(b) for b in blobs),
                                   return_exceptions=True)
    assert all(isinstance(r, OSError) and r.errno == errno.EIO for r in results)
    assert [p for p in files_in(tmp_path) if JOURNAL_DIR not in p.parts] == []
    monkeypatch.undo()
    # What the failed syncs may have written was cut: recovery brings back none of it.
    assert ArtifactStore(tmp_path).recover() >= 1
    assert files_in(tmp_path) == []


CRASHING_WRITER = """
import asyncio, os, sys
from pathlib import Path
from services.artifacts.store import ArtifactStore

async def main():
    store = ArtifactStore(Path(sys.argv[1]))
    store.put_bytes(b"alone")
    await asyncio.gather(*(store.aput_bytes(f"input {n}".encode()) for n in range(60)))
    os._exit(0)  # a crash: no close, no checkpoint; only the journal is durable

asyncio.run(main())
"""


def test_what_a_crashed_writer_put_comes_back_from_its_journal(tmp_path: Path) -> None:
    """Files lost or torn by a crash (never fsynced) are rebuilt from the journal."""
    subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], check=True,
                   cwd=Path(__file__).resolve().parent.parent, timeout=60)
    blobs = [b"alone"] + [f"input {n}".encode() for n in range(60)]
    store = ArtifactStore(tmp_path)
    for n, blob in enumerate(blobs):
        path = store.path_of(digest(blob))
        if n % 3 == 0:
            path.unlink()  # the rename never reached the disk
        elif n % 3 == 1:
            path.write_bytes(b"")  # the name did, the data did not
    segment = next((tmp_path / JOURNAL_DIR).glob("*.wal"))
    with segment.open("ab") as torn:  # a record the crash cut short
        torn.write(b"SJA1" + (1000).to_bytes(8, "big") + bytes(32) + b"part")
    assert [store.get_bytes(digest(b)) for b in blobs] == blobs
    assert list((tmp_path / JOURNAL_DIR).iterdir()) == []  # recovered, synced, deleted
    assert sorted(p.name for p in files_in(tmp_path)) == sorted(digest(b) for b in blobs)


def test_a_live_writers_segment_is_left_to_it(tmp_path: Path) -> None:
    writer, other = ArtifactStore(tmp_path), ArtifactStore(tmp_path)
    writer.put_bytes(b"first")
    assert other.recover() == 0  # locked by its writer: not another process's to take
    assert len(list((tmp_path / JOURNAL_DIR).glob("*.wal"))) == 1
    writer.put_bytes(b"second")
    writer.journal.seal()  # sealed, not yet checkpointed: anyone may finish it
    assert other.recover() == 1
    assert list((tmp_path / JOURNAL_DIR).iterdir()) == []
    assert other.get_bytes(digest(b"second")) == b"second"


async def test_sealed_segments_are_checkpointed_off_the_puts_path(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.journal.segment_bytes = 1  # every batch fills its segment
    ref = await store.aput_bytes(b"one batch")
    assert store._checkpointer is not None
    await store._checkpointer
    assert list((tmp_path / JOURNAL_DIR).iterdir()) == []
    assert store.get_bytes(ref) == b"one batch"


def test_a_torn_file_already_there_is_rewritten_by_the_next_put(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    path = store.path_of(digest(b"payload"))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"pay")  # left by a crash, under the right name
    assert store.put_bytes(b"payload") == digest(b"payload")
    assert path.read_bytes() == b"payload"


def files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_one_store_serves_puts_from_successive_event_loops_and_after_close(
        tmp_path: Path) -> None:
    """The journal's writer thread answers each put on its own loop (tests, CLI tools)."""
    store = ArtifactStore(tmp_path)

    async def put_some(tag: str) -> list[str]:
        return await asyncio.gather(*(store.aput_bytes(f"{tag} {n}".encode())
                                      for n in range(20)))

    first = asyncio.run(put_some("first"))
    second = asyncio.run(put_some("second"))
    store.close()
    third = asyncio.run(put_some("third"))
    store.close()
    blobs = [f"{tag} {n}".encode() for tag in ("first", "second", "third") for n in range(20)]
    check_stored(tmp_path, store, first + second + third, blobs)


async def test_a_journal_bug_fails_its_batch_and_the_writer_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error must reach the waiting puts, not end the writer thread."""
    store = ArtifactStore(tmp_path)

    def broken(records: list[tuple[str, bytes]]) -> None:
        raise ValueError("a bug in the journal")

    monkeypatch.setattr(store.journal, "append", broken)
    results = await asyncio.gather(*(store.aput_bytes(f"doomed {n}".encode())
                                     for n in range(10)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    monkeypatch.undo()
    assert store.get_bytes(await store.aput_bytes(b"after the bug")) == b"after the bug"
