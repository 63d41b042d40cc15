"""Content-addressed storage for inputs, results and logs.

Events stay small by naming large things by their sha256. An artifact is
written before the event that names it (atomically: temp file, fsync,
rename), so a reader that sees the event always finds the bytes, and the
hash is checked on every read so silent corruption is reported, not served.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

#: Threads that fsync the files of one batch side by side.
FSYNC_THREADS = 8

_HASH = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """Base of the artifact store's errors."""


class ArtifactNotFound(ArtifactError):
    """No artifact with that hash."""


class ArtifactCorrupted(ArtifactError):
    """The stored bytes do not hash to their name."""


def digest(data: bytes) -> str:
    """The content address of some bytes."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces, so equal values share one address."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class ArtifactStore:
    """A local directory of ``ab/abcdef...`` files (the default store)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Temp names unique to this store object (pid and a random token: no other
        #: process or earlier run can hold one), numbered; ``next()`` is atomic under the GIL.
        self._tmp_prefix = f".tmp-{os.getpid()}-{secrets.token_hex(4)}-"
        self._tmp_numbers = itertools.count()
        self._made_dirs: set[Path] = set()
        #: Puts waiting for the next batch, and the task writing batches (one event loop
        #: uses a store at a time: each service process has one loop).
        self._queued: list[tuple[bytes, asyncio.Future[str]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._fsyncers: ThreadPoolExecutor | None = None

    def path_of(self, ref: str) -> Path:
        """Where an artifact lives (whether or not it exists)."""
        if not _HASH.match(ref):
            raise ArtifactError(f"{ref!r} is not a sha256 content address")
        return self.root / ref[:2] / ref

    def put_bytes(self, data: bytes) -> str:
        """Store bytes (idempotent) and return their address."""
        result = self._put_many([data])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _put_many(self, blobs: Sequence[bytes]) -> list[str | BaseException]:
        """Store several artifacts with one round of fsyncs: each one's address or error.

        All files are written first, then fsynced together (:meth:`_fsync_all`), then
        renamed. Measured on this machine's idle disk, one thread: 0.14 ms CPU an
        artifact in batches of 8, against 0.54 ms one by one (and 0.29-0.37 ms with 6-32
        threads each writing its own). Plain ``os`` calls, temp names from a counter,
        directories made once per process.
        """
        refs = [digest(data) for data in blobs]
        errors: dict[str, BaseException] = {}
        opened: dict[str, tuple[int, Path, Path]] = {}  # ref -> fd, temp file, final path
        for ref, data in zip(refs, blobs, strict=True):
            path = self.path_of(ref)
            if ref in opened or ref in errors or path.exists():
                continue
            tmp = path.parent / f"{self._tmp_prefix}{next(self._tmp_numbers)}"
            try:
                if path.parent not in self._made_dirs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._made_dirs.add(path.parent)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                errors[ref] = exc
                continue
            opened[ref] = (fd, tmp, path)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:
                errors[ref] = exc
        written = [ref for ref in opened if ref not in errors]
        for ref, error in zip(written, self._fsync_all([opened[r][0] for r in written]),
                              strict=True):
            if error is not None:
                errors[ref] = error
        for ref, (fd, tmp, path) in opened.items():
            try:
                os.close(fd)
                if ref not in errors:
                    os.replace(tmp, path)
            except OSError as exc:
                errors[ref] = exc
            if ref in errors:
                tmp.unlink(missing_ok=True)
        return [errors.get(ref, ref) for ref in refs]

    def _fsync_all(self, fds: Sequence[int]) -> list[OSError | None]:
        """Fsync every file, side by side: ext4 joins fsyncs that overlap into one commit."""
        def one(fd: int) -> OSError | None:
            try:
                os.fsync(fd)
            except OSError as exc:
                return exc
            return None

        if len(fds) < 2:
            return [one(fd) for fd in fds]
        if self._fsyncers is None:
            self._fsyncers = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="artifact-fsync")
        return list(self._fsyncers.map(one, fds))

    def get_bytes(self, ref: str) -> bytes:
        """Read an artifact and check its hash.

        Raises:
            ArtifactNotFound: nothing stored under that address.
            ArtifactCorrupted: the bytes no longer match the address.
        """
        try:
            data = self.path_of(ref).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"artifact {ref} not found") from exc
        if digest(data) != ref:
            raise ArtifactCorrupted(f"artifact {ref} is corrupted (hash mismatch)")
        return data

    def exists(self, ref: str) -> bool:
        """Whether an artifact is stored (without reading it)."""
        return self.path_of(ref).exists()

    def put_json(self, value: Any) -> str:
        """Store a JSON value in canonical form."""
        return self.put_bytes(canonical_json(value))

    def get_json(self, ref: str) -> Any:
        """Read a JSON artifact (hash checked)."""
        return json.loads(self.get_bytes(ref))

    async def aput_json(self, value: Any) -> str:
        """:meth:`put_json` off the event loop (it fsyncs)."""
        return await self.aput_bytes(canonical_json(value))

    async def aget_json(self, ref: str) -> Any:
        """:meth:`get_json` off the event loop."""
        return await asyncio.to_thread(self.get_json, ref)

    async def aput_bytes(self, data: bytes) -> str:
        """:meth:`put_bytes` off the event loop, group-committed with concurrent puts.

        One batch is written (in a thread) at a time; the puts that arrive meanwhile wait
        and go together in the next one, so a busy API pays one round of fsyncs and one
        thread hop per batch instead of one per submission (the Kafka producer batches the
        same way). Measured (api_bench, c=32, distinct inputs, two rounds each): one thread
        per put 533/534 submits/s at 1.44 ms API CPU each; one batch at a time 614/616 at
        1.02 ms; four at a time 564/583 at 1.2 ms.
        A put that is cancelled still lands (its batch is under way), like a
        write already handed to ``to_thread``.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._queued.append((data, future))
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                results = await asyncio.to_thread(self._put_many, [d for d, _ in batch])
            except asyncio.CancelledError:  # the loop is shutting down: so are the waiters
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # not an OSError of one file: the whole batch failed
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done() or future.get_loop().is_closed():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def aget_bytes(self, ref: str) -> bytes:
        """:meth:`get_bytes` off the event loop."""
        return await asyncio.to_thread(self.get_bytes, ref)
