"""Run locks the kernel releases when their process dies, however it dies.

One ``flock`` per run on a file beside the database: a ``kill -9``-ed owner
loses its lock at once, so the next ``resume`` takes over without waiting for
the lease to expire. Only the process that works on a run ever takes its lock;
readers such as ``status`` judge liveness from the lease instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from durabatch.errors import StoreError


class RunLocks:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[str, int] = {}

    def take(self, run_id: str) -> bool:
        """Take the run's lock without waiting; False when a live process holds it."""
        if run_id in self._held:
            return True
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.folder / f"{run_id}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise StoreError(
                f"the run locks folder {self.folder} is not writable ({exc.strerror}); "
                "fix its permissions for this user (chown or chmod), then run the command again"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # who holds it, for a refusal that comes before the holder has written its lease
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._held[run_id] = fd
        return True

    def holder(self, run_id: str) -> int:
        """The pid written by the process holding the run's lock (0 when unknown)."""
        try:
            return int((self.folder / f"{run_id}.lock").read_text() or 0)
        except (OSError, ValueError):
            return 0

    def held_elsewhere(self, run_id: str) -> bool:
        """Whether a live process (not this store) holds the run's lock right now."""
        if run_id in self._held or not (self.folder / f"{run_id}.lock").exists():
            return False
        if not self.take(run_id):
            return True
        self.drop(run_id)
        return False

    def drop(self, run_id: str) -> None:
        fd = self._held.pop(run_id, None)
        if fd is not None:
            os.close(fd)

    def drop_all(self) -> None:
        for run_id in list(self._held):
            self.drop(run_id)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
