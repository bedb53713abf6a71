"""The database's disk fills up, then comes back; then it turns read-only.

A small tmpfs is mounted for the database (the tests run as root on CI, as here); the
documents live elsewhere. Nothing is mocked: SQLite and the artifact writer meet a
real ENOSPC and a real EROFS.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from crashkit import Workspace, comparable, note_text, tmpfs

DOCS = 300


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "size=24m") as disk:
        yield disk


def corpus(root: Path) -> None:
    (root / "in").mkdir()
    for n in range(DOCS):
        (root / "in" / f"note_{n:03}.txt").write_text(note_text(n) * 3, encoding="utf-8")


def fill(disk: Path, leave_kib: int) -> Path:
    """Fill the disk until only ``leave_kib`` KiB are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler = disk / "filler"
    with filler.open("wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * max(0, free - leave_kib * 1024))
    return filler


def test_a_full_disk_halts_cleanly_and_resume_finishes_once_space_returns(
    tmp_path: Path, small_disk: Path
) -> None:
    corpus(tmp_path)
    calm = Workspace(tmp_path / "calm")
    (tmp_path / "calm").mkdir()
    (tmp_path / "calm" / "in").symlink_to(tmp_path / "in")
    try:
        assert calm.cli("run", "in/").popen.returncode == 0
        expected = comparable(calm.export(calm.run_ids()[0]))
    finally:
        calm.cleanup()

    ws = Workspace(tmp_path, db_file=small_disk / "d.db")
    filler = fill(small_disk, leave_kib=600)
    try:
        full = ws.cli("run", "in/")
        assert full.popen.returncode == 3, full.describe()
        assert "disk is full" in full.stderr or "No space left" in full.stderr, full.stderr
        assert "free disk space" in full.stderr and "durabatch resume" in full.stderr
        assert "Traceback" not in full.stderr
        [run_id] = ws.run_ids()
        checked = ws.verify(run_id)  # integrity_check and replay
        assert checked.popen.returncode == 0, checked.describe()
        assert ws.status(run_id)["documents"]["failed"] == 0  # not the documents' fault

        filler.unlink()  # space comes back
        resumed = ws.cli("resume", run_id)
        assert resumed.popen.returncode == 0, resumed.describe()
        assert comparable(ws.export(run_id)) == expected  # nothing lost
        assert ws.verify(run_id).popen.returncode == 0

        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        again = ws.cli("run", "in/")
        assert again.popen.returncode == 3, again.describe()
        assert "read-only" in again.stderr.lower() or "readonly" in again.stderr.lower()
        assert "Traceback" not in again.stderr
    finally:
        ws.cleanup()
