from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.artifacts.journal import JOURNAL_DIR, RECORD_HEADER, encode_record, read_records
from services.artifacts.packs import MAX_BYTES as PACKED_MAX_BYTES
from services.artifacts.packs import PACKS_DIR
from services.artifacts.store import ArtifactCorrupted, ArtifactNotFound, ArtifactStore, digest


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.put_bytes(b"hello")
    assert ref == digest(b"hello")
    pack = tmp_path / PACKS_DIR / ref[:3]
    size = pack.stat().st_size
    assert store.put_bytes(b"hello") == ref
    assert pack.stat().st_size == size  # known to be there: nothing appended
    assert store.get_bytes(ref) == b"hello"
    big = b"x" * (PACKED_MAX_BYTES + 1)
    assert store.get_bytes(store.put_bytes(big)) == big
    store.close()
    assert sorted(str(p.relative_to(tmp_path)) for p in files_in(tmp_path)) == sorted(
        [f"{PACKS_DIR}/{ref[:3]}", f"{digest(big)[:2]}/{digest(big)}"])  # no segment left
    assert ArtifactStore(tmp_path).get_bytes(ref) == b"hello"  # another process reads it


def test_json_has_one_address_whatever_the_key_order(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.put_json({"a": 1, "b": [2]}) == store.put_json({"b": [2], "a": 1})


def test_corruption_and_absence_are_reported(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    big = b"result " * 5000
    ref = store.put_bytes(big)
    store.path_of(ref).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupted):
        store.get_bytes(ref)
    small = store.put_bytes(b"input")
    store.close()
    pack = tmp_path / PACKS_DIR / small[:3]
    pack.write_bytes(pack.read_bytes().replace(b"input", b"inpUt"))
    with pytest.raises(ArtifactCorrupted):
        ArtifactStore(tmp_path).get_bytes(small)
    with pytest.raises(ArtifactNotFound):
        store.get_bytes("0" * 64)
    assert not store.exists("0" * 64) and not ArtifactStore(tmp_path).exists(small)


def test_bytes_holding_an_address_are_never_taken_for_that_artifact(tmp_path: Path) -> None:
    """A record counts only if its own bytes hash to the address it names: an upload that
    holds a record naming another artifact is never served as that artifact."""
    store = ArtifactStore(tmp_path)
    wanted = digest(b"the real input")
    forged = encode_record(wanted, b"forged bytes")
    decoy = store.put_bytes(b"pad" + forged)
    store.close()
    packs = tmp_path / PACKS_DIR  # even inside the pack where the real one would go:
    (packs / wanted[:3]).write_bytes((packs / decoy[:3]).read_bytes())
    fresh = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactCorrupted):
        fresh.get_bytes(wanted)
    ref = fresh.put_bytes(b"the real input")
    assert ref == wanted and fresh.get_bytes(ref) == b"the real input"


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
    """Everything reads back; small ones are in whole records of their packs, big ones
    in files; no temp file or segment is left, and nobody else may read any of it."""
    assert all(store.get_bytes(r) == b for r, b in zip(refs, blobs, strict=True))
    store.close()
    files = files_in(root)
    big = {r for r, b in zip(refs, blobs, strict=True) if len(b) > PACKED_MAX_BYTES}
    assert sorted(p.name for p in files if p.parent.name != PACKS_DIR) == sorted(big)
    packed: list[str] = []
    for pack in (root / PACKS_DIR).iterdir():
        blob = pack.read_bytes()
        records = list(read_records(blob))
        assert sum(RECORD_HEADER + len(data) for _, data in records) == len(blob)  # no junk
        assert all(ref[:3] == pack.name for ref, _ in records)
        packed += [ref for ref, _ in records]
    assert sorted(set(packed)) == sorted(set(refs) - big)
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
    assert [p.name for p in files_in(tmp_path)] == [digest(b"stored before")[:3]]
    assert [ref for ref, _ in read_records(files_in(tmp_path)[0].read_bytes())] == [
        digest(b"stored before")]
    assert store.recover() == 0
    assert store.get_bytes(store.put_bytes(b"never stored")) == b"never stored"


async def test_concurrent_puts_are_written_in_batches_and_fail_one_by_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)
    blobs = [f"submission {n}\n".encode() for n in range(200)]
    doomed_pack = digest(blobs[7])[:3]
    (tmp_path / PACKS_DIR / doomed_pack).mkdir(parents=True)  # a directory where it must go
    batches: list[int] = []
    append = store.journal.append

    def recording(records: list[tuple[str, bytes]]) -> None:
        batches.append(len(records))
        append(records)

    monkeypatch.setattr(store.journal, "append", recording)
    results = await asyncio.gather(*(store.aput_bytes(b) for b in blobs),
                                   return_exceptions=True)
    assert sum(batches) == len(blobs) and len(batches) < len(blobs) / 4
    doomed = [digest(b)[:3] == doomed_pack for b in blobs]
    assert [isinstance(r, OSError) for r in results] == doomed
    ok = [(r, b) for r, b, d in zip(results, blobs, doomed, strict=True) if not d]
    assert len(ok) >= len(blobs) - 2
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
    store.put_bytes(b"big " * 5000)
    await asyncio.gather(*(store.aput_bytes(f"input {n}".encode()) for n in range(60)))
    os._exit(0)  # a crash: no close, no checkpoint; only the journal is durable

asyncio.run(main())
"""


def test_what_a_crashed_writer_put_comes_back_from_its_journal(tmp_path: Path) -> None:
    """Packs and files lost or torn by a crash (never fsynced) are rebuilt from the journal."""
    subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], check=True,
                   cwd=Path(__file__).resolve().parent.parent, timeout=60)
    blobs = [b"alone", b"big " * 5000] + [f"input {n}".encode() for n in range(60)]
    packs = sorted((tmp_path / PACKS_DIR).iterdir())
    for n, pack in enumerate(packs):
        if n % 3 == 0:
            pack.unlink()  # its appends never reached the disk
        elif n % 3 == 1:
            with pack.open("r+b") as torn:  # its last append only in part
                torn.truncate(pack.stat().st_size - 3)
    big = ArtifactStore(tmp_path).path_of(digest(blobs[1]))
    big.write_bytes(b"")  # its name reached the disk, its data did not
    segment = next((tmp_path / JOURNAL_DIR).glob("*.wal"))
    with segment.open("ab") as torn:  # a record the crash cut short
        torn.write(b"SJA1" + (1000).to_bytes(8, "big") + bytes(32) + b"part")
    store = ArtifactStore(tmp_path)
    assert [store.get_bytes(digest(b)) for b in blobs] == blobs
    assert list((tmp_path / JOURNAL_DIR).iterdir()) == []  # recovered, synced, deleted
    after = ArtifactStore(tmp_path)  # another process, with nothing in memory
    assert [after.get_bytes(digest(b)) for b in blobs] == blobs
    for pack in packs[2::3]:  # whole packs: recovery found their records, appended none
        refs = [ref for ref, _ in read_records(pack.read_bytes())]
        assert refs and len(refs) == len(set(refs))


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
    payload = b"payload " * 4096  # big enough for a file of its own
    path = store.path_of(digest(payload))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"pay")  # left by a crash, under the right name
    assert store.put_bytes(payload) == digest(payload)
    assert path.read_bytes() == payload


def test_files_of_small_artifacts_from_before_packs_are_still_read(tmp_path: Path) -> None:
    legacy = b"an input stored by an earlier version"
    path = ArtifactStore(tmp_path).path_of(digest(legacy))
    path.parent.mkdir(parents=True)
    path.write_bytes(legacy)
    store = ArtifactStore(tmp_path)
    assert store.exists(digest(legacy)) and store.get_bytes(digest(legacy)) == legacy


PACKING_WRITER = """
import sys
from pathlib import Path
from services.artifacts.store import ArtifactStore

store = ArtifactStore(Path(sys.argv[1]))
for n in range(3000):
    store.put_bytes(f"{sys.argv[2]} {n}".encode() * (1 + n % 40))
store.close()
"""


def test_writers_in_several_processes_never_interleave_their_appends(tmp_path: Path) -> None:
    """Two processes append to the same packs at once: every record stays whole."""
    root = Path(__file__).resolve().parent.parent
    writers = [subprocess.Popen([sys.executable, "-c", PACKING_WRITER, str(tmp_path), tag],
                                cwd=root) for tag in ("left", "right")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    blobs = [f"{tag} {n}".encode() * (1 + n % 40) for tag in ("left", "right")
             for n in range(3000)]
    check_stored(tmp_path, ArtifactStore(tmp_path), [digest(b) for b in blobs], blobs)


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
