"""Content-addressed storage for inputs, results and logs.

Events stay small by naming large things by their sha256. An artifact is
durable before the event that names it is written: its bytes go to the store's
journal (:mod:`services.artifacts.journal`, one fdatasync per batch of puts) and then
to where readers look for it: a small one is appended to a shared pack
(:mod:`services.artifacts.packs`), a larger one gets its own file (temp name, rename).
So a reader that sees the event always finds the bytes, after a crash too. The hash is
checked on every read so silent corruption is reported, not served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.artifacts.journal import Journal, JournalWriter, checkpoint, recover, write_all
from services.artifacts.packs import MAX_BYTES as PACKED_MAX_BYTES
from services.artifacts.packs import Packs

LOG = logging.getLogger(__name__)

#: An asynchronous put up to this size is hashed and placed on the event loop (see
#: :meth:`ArtifactStore.aput_bytes`); a bigger one is made whole in a thread.
INLINE_PUT_BYTES = 64 << 10
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


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class ArtifactStore:
    """A local directory: ``packs/abc`` for small artifacts, ``ab/abcdef...`` files for others.

    Files of small artifacts that an earlier version wrote are read as before.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Temp names unique to this store object (pid and a random token: no other
        #: process or earlier run can hold one), numbered; ``next()`` is atomic under the GIL.
        self._tmp_prefix = f".tmp-{os.getpid()}-{secrets.token_hex(4)}-"
        self._tmp_numbers = itertools.count()
        self._root = str(root)
        self._made_dirs: set[str] = set()
        self.packs = Packs(root)
        self.journal = Journal(root)
        #: Whether this object has recovered what dead writers left (before its first put).
        self._recovered = False
        #: The thread syncing the puts of :meth:`aput_bytes`, and the task checkpointing.
        self._writer = JournalWriter(self.journal)
        self._checkpointer: asyncio.Task[None] | None = None

    def path_of(self, ref: str) -> Path:
        """Where an artifact's own file is (whether or not it exists; small ones are packed)."""
        if not _HASH.match(ref):
            raise ArtifactError(f"{ref!r} is not a sha256 content address")
        return self.root / ref[:2] / ref

    def put_bytes(self, data: bytes) -> str:
        """Store bytes (idempotent) and return their address."""
        result = self._put_many([data])[0]
        if self.journal.has_sealed:
            self.checkpoint()
        if isinstance(result, BaseException):
            raise result
        return result

    def _put_many(self, blobs: Sequence[bytes]) -> list[str | BaseException]:
        """Store several artifacts with one fdatasync: each one's address or error.

        The journal record comes first: if it cannot be made durable the whole batch
        fails and no file was written. Then each artifact's file, one by one.

        Raises:
            OSError: the journal failed (every put of the batch fails with it).
        """
        self._recover_once()
        refs = [digest(data) for data in blobs]  # once each: a result may be megabytes
        unique = dict(zip(refs, blobs, strict=True))
        self.journal.append(list(unique.items()))
        errors: dict[str, BaseException] = {}
        for ref, data in unique.items():
            try:
                self._place(ref, data)
            except OSError as exc:
                errors[ref] = exc
        return [errors.get(ref, ref) for ref in refs]

    def _recover_once(self) -> None:
        """Before this object's first put: what dead writers left (blocking)."""
        if not self._recovered:
            self.recover()
            self._recovered = True

    def _place(self, ref: str, data: bytes, *, recovering: bool = False) -> None:
        """Put a journalled artifact where readers find it (durable at the next checkpoint).

        ``recovering``: journal recovery, which takes nothing already there on trust (a
        file is always read back first).
        """
        if len(data) <= PACKED_MAX_BYTES:
            self.packs.add(ref, data, check=recovering)
        else:
            self._place_file(ref, data)

    def _restore(self, ref: str, data: bytes) -> None:
        self._place(ref, data, recovering=True)

    def _place_file(self, ref: str, data: bytes) -> None:
        """Leave the right bytes in an artifact's own file.

        A file already there is read back first: one a crash tore (renamed, its data
        never written) would otherwise stand for every later put of the same bytes.
        Plain ``os`` calls on string paths: this runs once per submission.
        """
        directory = os.path.join(self._root, ref[:2])
        final = os.path.join(directory, ref)
        try:
            fd = os.open(final, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        else:
            with open(fd, "rb") as existing:
                if digest(existing.read()) == ref:
                    return
        if directory not in self._made_dirs:
            os.makedirs(directory, exist_ok=True)
            self._made_dirs.add(directory)
        tmp = os.path.join(directory, f"{self._tmp_prefix}{next(self._tmp_numbers)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def checkpoint(self) -> None:
        """Make the files of the sealed journal segments durable, then drop the segments.

        Raises:
            OSError: the filesystem could not be synced; the segments are kept (the
                next checkpoint, or any process's recovery, tries again).
        """
        sealed = self.journal.take_sealed()
        try:
            checkpoint(self.root, sealed)
        except OSError:
            self.journal.return_sealed(sealed)
            raise

    def close(self) -> None:
        """Seal and checkpoint the journal, so that a clean stop leaves no segment.

        The store can still be used afterwards (a new writer and segment start).
        """
        writer, self._writer = self._writer, JournalWriter(self.journal)
        writer.close()
        self.journal.seal()
        self.checkpoint()

    def recover(self) -> int:
        """Bring back the artifacts of journal segments their writers left (a crash).

        Returns how many segments were recovered and deleted.
        """
        return recover(self.root, self._restore)

    def get_bytes(self, ref: str) -> bytes:
        """Read an artifact and check its hash.

        Raises:
            ArtifactNotFound: nothing stored under that address.
            ArtifactCorrupted: the bytes no longer match the address.
        """
        path = self.path_of(ref)
        data, damaged = self._find(ref, path)
        if data is None:
            if self.recover():  # a crash lost or tore it and the journal still has it
                data, damaged = self._find(ref, path)
            if data is None:
                if damaged:
                    raise ArtifactCorrupted(f"artifact {ref} is corrupted (hash mismatch)")
                raise ArtifactNotFound(f"artifact {ref} not found")
        return data

    def _find(self, ref: str, path: Path) -> tuple[bytes | None, bool]:
        """The artifact's checked bytes from its file or its pack; whether a copy was damaged."""
        data = _read_or_none(path)
        if data is not None and digest(data) == ref:
            return data, False
        packed, damaged = self.packs.find(ref)
        return packed, damaged or data is not None

    def exists(self, ref: str) -> bool:
        """Whether an artifact is stored (a file is not read; a packed one is checked)."""
        return self.path_of(ref).exists() or self.packs.holds(ref)

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

        The record goes to the journal's writer thread (:class:`JournalWriter`), which
        syncs whatever is queued in one fdatasync; then the put places its file on the
        loop, a handful of quick syscalls that in a thread would each have to win the
        GIL back from the busy loop. A large artifact (hashing and writing it would hold
        the loop) is put whole in a thread instead. A put that is cancelled may still
        land, like a write already handed to ``to_thread``. Sealed journal segments are
        checkpointed by a task of their own, off the puts' path.
        """
        if len(data) > INLINE_PUT_BYTES:
            ref = await asyncio.to_thread(self.put_bytes, data)
        else:
            if not self._recovered:
                await asyncio.to_thread(self._recover_once)
            ref = digest(data)
            await self._writer.write(ref, data)
            self._place(ref, data)
        checkpointer = self._checkpointer
        if self.journal.has_sealed and (checkpointer is None or checkpointer.done()):
            self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoint())
        return ref

    async def _checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self.checkpoint)
        except OSError as exc:  # the segments stay: the next checkpoint tries again
            LOG.error("artifact journal checkpoint failed, segments kept: %s", exc)

    async def aclose(self) -> None:
        """:meth:`close` once the writes and checkpoint under way are done."""
        checkpointer = self._checkpointer
        if (checkpointer is not None and not checkpointer.done()
                and checkpointer.get_loop() is asyncio.get_running_loop()):
            await checkpointer
        await asyncio.to_thread(self.close)

    async def aget_bytes(self, ref: str) -> bytes:
        """:meth:`get_bytes` off the event loop."""
        return await asyncio.to_thread(self.get_bytes, ref)
