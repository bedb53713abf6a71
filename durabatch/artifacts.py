"""A content-addressed folder for large step outputs (extracted text).

Text up to ``INLINE_BYTES`` is not written here: the extract step hands it to
the store, which keeps it in the database in the step's own transaction.

An artifact is named by the sha256 of its bytes and written as temp file ->
fsync -> rename -> fsync of the folder, so that it is durable before the
transaction that names it commits. Writing the same content twice is free,
and a half-written file can never carry a valid name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from durabatch.errors import StoreError

INLINE_BYTES = 64 << 10


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def inline(text: str) -> bool:
    """Small enough to keep in the database rather than in a file of its own."""
    return len(text) <= INLINE_BYTES // 4 or len(text.encode("utf-8")) <= INLINE_BYTES


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def put_text(self, text: str) -> str:
        """Store ``text`` durably; a full or read-only disk halts the run (it is not
        the document's fault, and no document may fail for it)."""
        data = text.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        try:
            return self._put(self.path(digest), digest, data)
        except OSError as exc:
            raise StoreError(
                f"cannot write to {self.root}: {exc.strerror or exc}; free disk space or fix "
                "permissions, then `durabatch resume`"
            ) from exc

    def _put(self, target: Path, digest: str, data: bytes) -> str:
        if target.exists():
            # a writer killed between rename and fsync may have left it undurable
            fsync_dir(target.parent)
            return digest
        if not target.parent.exists():
            # mode applies to the folder made, not its parents: make each one private
            self.root.mkdir(exist_ok=True, mode=0o700)
            target.parent.mkdir(exist_ok=True, mode=0o700)
            fsync_dir(self.root)  # the new shard folder's name must survive power loss
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)
        return digest

    def get_text(self, digest: str) -> str:
        return self.path(digest).read_text(encoding="utf-8")

    def check(self, digest: str) -> bool:
        """True when the artifact exists and its bytes still hash to its name."""
        try:
            data = self.path(digest).read_bytes()
        except OSError:
            return False
        return hashlib.sha256(data).hexdigest() == digest


def fsync_dir(folder: Path) -> None:
    """Make a name just created, renamed or removed in ``folder`` survive power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
