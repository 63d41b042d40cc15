"""The artifact store's write-ahead journal: one fdatasync per batch instead of one per file.

A put is durable once its bytes are in a journal segment that was fdatasynced. The
artifact's own file is written next (temp name, rename) but not fsynced: a crash may
lose it or leave it torn, and then the journal brings it back. Every few seconds (or
megabytes) the segment is sealed and checkpointed: one ``syncfs`` makes every file
written so far durable, after which the segment is deleted.

Why: on this machine's disk (ext4 without a journal) each fsync of a new file writes
its data, its inode and a cache flush; a submission burst of 14 files paid 14 of them.
Measured with a store-only benchmark (32 concurrent puts, 0.6 ms of other CPU per put):
0.23-0.47 ms of CPU per put with side-by-side fsyncs, 0.12-0.23 ms with the journal.

A segment belongs to the store object that writes it, which holds an exclusive
``flock`` on it while it is open. Any process may recover the segments nobody holds
(their writer died, or sealed them and has not yet checkpointed them): every complete
record is checked against its file, missing or torn files are written again, the
filesystem is synced, and only then is the segment deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)

#: Directory of the segments, inside the store's root.
JOURNAL_DIR = ".journal"
#: A segment is sealed once it holds this many bytes...
SEGMENT_BYTES = 8 << 20
#: ...or has been open this long (a sealed segment is checkpointed, then deleted).
SEGMENT_SECONDS = 10.0

#: A record: this magic, the length (8 bytes, big-endian), the raw sha256, the bytes.
MAGIC = b"SJA1"
RECORD_HEADER = len(MAGIC) + 8 + 32
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Make every write on ``path``'s filesystem durable (``syncfs``; ``sync`` elsewhere).

    Raises:
        OSError: the kernel reported a writeback error on that filesystem.
    """
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make the entries of a directory (a new file's name) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until everything is written (a large write may be partial)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def encode_record(ref: str, data: bytes) -> bytes:
    """One journal record: magic, length, the raw sha256 named by ``ref``, the bytes."""
    return MAGIC + len(data).to_bytes(8, "big") + bytes.fromhex(ref) + data


def read_records(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """The complete records of a segment, up to the first torn or damaged one."""
    at = 0
    while at + RECORD_HEADER <= len(blob) and blob[at:at + len(MAGIC)] == MAGIC:
        size = int.from_bytes(blob[at + 4:at + 12], "big")
        ref = blob[at + 12:at + RECORD_HEADER].hex()
        data = blob[at + RECORD_HEADER:at + RECORD_HEADER + size]
        if len(data) != size or hashlib.sha256(data).hexdigest() != ref:
            return
        yield ref, data
        at += RECORD_HEADER + size


class Journal:
    """The segments one store object appends to; safe to call from several threads."""

    def __init__(self, root: Path, *, segment_bytes: int = SEGMENT_BYTES,
                 segment_seconds: float = SEGMENT_SECONDS) -> None:
        self.root = root
        self.dir = root / JOURNAL_DIR
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self._names = f"{os.getpid()}-{secrets.token_hex(4)}-"
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at = 0.0
        self._sealed: list[Path] = []

    def append(self, records: Sequence[tuple[str, bytes]]) -> None:
        """Write records and fdatasync them: once this returns they survive a crash.

        Raises:
            OSError: the write or the fdatasync failed; the segment is sealed, since a
                file whose fsync failed cannot be trusted to have the rest.
        """
        data = b"".join(encode_record(ref, blob) for ref, blob in records)
        with self._lock:
            fd = self._fd if self._fd is not None else self._open()
            try:
                write_all(fd, data)
                os.fdatasync(fd)
            except OSError:
                # Cut what may have been written, so that recovery cannot bring back a
                # put that failed; then never sync this file again (its error is spent).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._size)
                self._seal()
                raise
            self._size += len(data)
            if (self._size >= self.segment_bytes
                    or time.monotonic() - self._opened_at >= self.segment_seconds):
                self._seal()

    def seal(self) -> None:
        """Close the open segment, if any, so that the next checkpoint takes it."""
        with self._lock:
            self._seal()

    def take_sealed(self) -> list[Path]:
        """The sealed segments, handed to a checkpoint (which returns them if it fails)."""
        with self._lock:
            sealed, self._sealed = self._sealed, []
        return sealed

    def return_sealed(self, paths: Sequence[Path]) -> None:
        """Segments a checkpoint could not finish: the next one tries again."""
        with self._lock:
            self._sealed[:0] = paths

    @property
    def has_sealed(self) -> bool:
        """Whether a checkpoint has work to do."""
        return bool(self._sealed)

    def _open(self) -> int:
        """A new segment, locked before its name shows (a recoverer only takes ``*.wal``)."""
        new_dir = not self.dir.is_dir()
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if new_dir:
            fsync_directory(self.root)
        name = f"{self._names}{next(self._numbers):06d}"
        staging = self.dir / f"{name}.new"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = self.dir / f"{name}.wal"
            os.replace(staging, path)
            fsync_directory(self.dir)
        except OSError:
            os.close(fd)
            staging.unlink(missing_ok=True)
            raise
        self._fd, self._path = fd, path
        self._size, self._opened_at = 0, time.monotonic()
        return fd

    def _seal(self) -> None:
        if self._fd is None or self._path is None:
            return
        os.close(self._fd)  # releases the lock: a recoverer may take it from here on
        self._sealed.append(self._path)
        self._fd = self._path = None


def checkpoint(root: Path, segments: Sequence[Path]) -> None:
    """Sync the filesystem, then delete segments whose files are now durable.

    Raises:
        OSError: the sync failed; nothing was deleted.
    """
    if not segments:
        return
    sync_filesystem(root)
    for path in segments:
        path.unlink(missing_ok=True)


def recover(root: Path, restore: Callable[[str, bytes], None]) -> int:
    """Restore the artifacts of every segment nobody holds, then delete those segments.

    ``restore`` is given each complete record and must leave that artifact's file
    correct (it may already be). Returns how many segments were recovered.

    Raises:
        OSError: a segment could not be read, an artifact not restored, or the
            filesystem not synced; no segment is deleted before the sync.
    """
    journal_dir = root / JOURNAL_DIR
    try:
        names = sorted(p for p in journal_dir.iterdir() if p.suffix == ".wal")
    except FileNotFoundError:
        return 0
    recovered: list[Path] = []
    for path in names:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # checkpointed meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its writer is alive and owns it
                continue
            with open(fd, "rb", closefd=False) as segment:
                blob = segment.read()
            count = 0
            for ref, data in read_records(blob):
                restore(ref, data)
                count += 1
            LOG.info("artifact journal %s: %d records checked or restored", path.name, count)
            recovered.append(path)
        finally:
            os.close(fd)
    checkpoint(root, recovered)
    return len(recovered)


class JournalWriter:
    """A thread that appends the queued records and syncs them, one batch after another.

    Why a thread of its own rather than a batch handed to a pool by an event-loop task:
    the next batch then starts as soon as the last fdatasync returns, not once the busy
    loop has come round to the task again. In the API at ~1,000 submissions/s the loop's
    round trips were most of a put's wait (its fdatasync: p50 0.5 ms, mean 1.2 ms).
    What arrives during a sync waits and goes in the next batch (group commit).
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._cond = threading.Condition()
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._thread: threading.Thread | None = None
        self._closing = False

    def write(self, ref: str, data: bytes) -> asyncio.Future[None]:
        """A future of the running loop, done once the record is durable (or failed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._closing:
                raise RuntimeError("the artifact journal writer is closed")
            self._pending.append((ref, data, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="artifact-journal",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def close(self) -> None:
        """Write what is queued, then end the thread (blocking)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            error: Exception | None = None
            try:
                self.journal.append(list({ref: data for ref, data, _ in batch}.items()))
            except Exception as exc:  # every put of the batch fails with it; the thread goes on
                error = exc
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for _, _, future in batch:
                by_loop.setdefault(future.get_loop(), []).append(future)
            for loop, futures in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for future in futures:
        if future.done():  # cancelled meanwhile
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
