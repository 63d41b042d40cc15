"""Content-addressed storage for inputs, results and logs.

Events stay small by naming large things by their sha256. An artifact is
written before the event that names it (atomically: temp file, fsync,
rename), so a reader that sees the event always finds the bytes, and the
hash is checked on every read so silent corruption is reported, not served.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

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

    def path_of(self, ref: str) -> Path:
        """Where an artifact lives (whether or not it exists)."""
        if not _HASH.match(ref):
            raise ArtifactError(f"{ref!r} is not a sha256 content address")
        return self.root / ref[:2] / ref

    def put_bytes(self, data: bytes) -> str:
        """Store bytes (idempotent) and return their address."""
        ref = digest(data)
        path = self.path_of(ref)
        if path.exists():
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

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
        return await asyncio.to_thread(self.put_json, value)

    async def aget_json(self, ref: str) -> Any:
        """:meth:`get_json` off the event loop."""
        return await asyncio.to_thread(self.get_json, ref)

    async def aput_bytes(self, data: bytes) -> str:
        """:meth:`put_bytes` off the event loop."""
        return await asyncio.to_thread(self.put_bytes, data)

    async def aget_bytes(self, ref: str) -> bytes:
        """:meth:`get_bytes` off the event loop."""
        return await asyncio.to_thread(self.get_bytes, ref)
