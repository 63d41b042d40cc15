"""Small artifacts appended to shared pack files instead of each getting a file of its own.

Why: a new file costs the filesystem an inode and a directory entry. Measured here (ext4
without a journal), placing a 300-byte artifact as its own file (temp name, write,
rename) took 54 us of CPU, and up to 500 us for minutes after many files were deleted
(a create then skips every recently freed inode); appending it to an existing pack takes
10 us. Every submission stores one small input, so at 1,000 submissions/s this was a
tenth of the API's CPU, taken from its one event loop.

Layout: ``packs/abc`` under the store's root, one pack for each of the 4,096 values of the
first three hex digits of an address; a pack is a sequence of records in the journal's
format (magic, length, raw sha256, bytes). An append holds ``flock`` on the pack, so
appenders in other processes (or hosts sharing the filesystem) never interleave. Packs
are not synced on the put's path: like the artifact files, they are made durable by the
journal's checkpoint (``syncfs``), and until then the journal holds the bytes.

A lookup reads the pack and takes the first record of the address whose bytes hash to
it: a record torn by a crash, or damaged, is skipped (the journal brings the artifact
back), and bytes that merely contain the address are never taken for it (a record's
bytes must hash to the address it names). Reading a pack costs in proportion to its size:
4,096 packs of artifacts up to :data:`MAX_BYTES` stay under a megabyte each for the
first few gigabytes of small artifacts.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

from services.artifacts.journal import MAGIC, RECORD_HEADER, encode_record, write_all

#: Directory of the packs, inside the store's root.
PACKS_DIR = "packs"
#: Artifacts up to this size go to a pack; larger ones get a file of their own.
MAX_BYTES = 16 << 10
#: Addresses this process knows to be in a pack (written or read), so that a repeated put
#: of the same bytes appends nothing; the oldest are forgotten first.
REMEMBERED = 65_536


class Packs:
    """The packs of one store's root; safe to use from several threads."""

    def __init__(self, root: Path, *, remembered: int = REMEMBERED) -> None:
        self.dir = os.path.join(str(root), PACKS_DIR)
        self._dir_made = False
        self._remembered = remembered
        self._known: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, ref: str) -> str:
        return os.path.join(self.dir, ref[:3])

    def add(self, ref: str, data: bytes, *, check: bool = False) -> None:
        """Append an artifact to its pack, unless it is known to be there already.

        ``check``: read the pack first, and append only if it holds no intact record
        (journal recovery, which must not trust what a crash left).

        Raises:
            OSError: the pack could not be written (a partial record may remain; it is
                never taken for the artifact).
        """
        if self._is_known(ref) or (check and self.find(ref)[0] is not None):
            return
        if not self._dir_made:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            self._dir_made = True
        fd = os.open(self.path(ref), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            write_all(fd, encode_record(ref, data))
        finally:
            os.close(fd)  # releases the lock
        self._remember(ref)

    def holds(self, ref: str) -> bool:
        """Whether the pack has an intact record of ``ref`` (no read if this process knows)."""
        return self._is_known(ref) or self.find(ref)[0] is not None

    def find(self, ref: str) -> tuple[bytes | None, bool]:
        """The artifact's bytes if its pack holds an intact record of it.

        Also says whether a record of this address was found damaged (its bytes do not
        hash to it): with no intact one, the artifact is corrupted rather than absent.
        """
        try:
            with open(self.path(ref), "rb") as pack:
                blob = pack.read()
        except FileNotFoundError:
            return None, False
        raw = bytes.fromhex(ref)
        damaged = False
        at = blob.find(raw)
        while at >= 0:
            start = at - (RECORD_HEADER - len(raw))
            if start >= 0 and blob[start:start + len(MAGIC)] == MAGIC:
                size = int.from_bytes(blob[start + len(MAGIC):at], "big")
                data = blob[at + len(raw):at + len(raw) + size]
                if len(data) == size and hashlib.sha256(data).digest() == raw:
                    self._remember(ref)
                    return data, False
                damaged = True
            at = blob.find(raw, at + 1)
        return None, damaged

    def _is_known(self, ref: str) -> bool:
        with self._lock:
            if ref in self._known:
                self._known.move_to_end(ref)
                return True
            return False

    def _remember(self, ref: str) -> None:
        with self._lock:
            self._known[ref] = None
            self._known.move_to_end(ref)
            while len(self._known) > self._remembered:
                self._known.popitem(last=False)
