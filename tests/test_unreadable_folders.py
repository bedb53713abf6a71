"""Folders whose files cannot be seen, through the real `durabatch run` on real folders.

An input folder that cannot be listed is a usage error before any run is made; a
subfolder that cannot be listed ends ``failed`` (``missing``) as a document of its own,
instead of taking its files silently out of the run.

Root lists a mode-000 folder anyway (CAP_DAC_OVERRIDE). As root, the command is run
through ``setpriv`` with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped, as in
``test_hostile.py``. Each test first asks a process started the same way to list the
folder, and is skipped, saying why, when that works: the test would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from crashkit import Workspace

FAILED = 1
USAGE = 2
NO_DAC = ("--inh-caps", "-dac_override,-dac_read_search",
          "--bounding-set", "-dac_override,-dac_read_search")  # fmt: skip
UNREADABLE = 0o000
NOT_SEARCHABLE = 0o644  # `chmod -R 644`: the names can be read, no file can be opened
TEXT = "Margaret Ellison met the Riverton council on 3 March 2025 about the depot.\n"


@dataclass
class _Workspace(Workspace):
    prefix: tuple[str, ...] = ()
    locked: tuple[Path, ...] = ()

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [*self.prefix, *super()._argv(args)]

    def lock(self, folder: Path, mode: int) -> None:
        """Take ``folder``'s permissions away; skip when the command would see in anyway."""
        folder.chmod(mode)
        self.locked += (folder,)
        probe = [*self.prefix, sys.executable, "-c",
                 "import os, sys; os.listdir(sys.argv[1]); os.stat(sys.argv[1] + '/.')",
                 str(folder)]  # fmt: skip
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            pytest.skip(f"this process sees into a mode {mode:03o} folder (CAP_DAC_OVERRIDE)")


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[_Workspace]:
    workspace = _Workspace(tmp_path, prefix=_without_read_override())
    yield workspace
    workspace.cleanup()
    for folder in workspace.locked:  # so that tmp_path can be removed
        folder.chmod(0o755)


def _without_read_override() -> tuple[str, ...]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return ()  # not root: mode 000 is enough; root without setpriv: lock() skips
    return (setpriv, *NO_DAC)


def _inputs(root: Path) -> Path:
    """in/a.txt, and in/locked/b.txt and in/locked/deeper/c.txt to be locked away."""
    folder = root / "in"
    (folder / "locked" / "deeper").mkdir(parents=True)
    (folder / "a.txt").write_text(TEXT, encoding="utf-8")
    (folder / "locked" / "b.txt").write_text(TEXT, encoding="utf-8")
    (folder / "locked" / "deeper" / "c.txt").write_text(TEXT, encoding="utf-8")
    return folder


@pytest.mark.parametrize("mode", [UNREADABLE, NOT_SEARCHABLE], ids=["mode000", "mode644"])
def test_an_input_folder_that_cannot_be_listed_is_a_usage_error(ws: _Workspace, mode: int) -> None:
    folder = _inputs(ws.root)
    ws.lock(folder, mode)
    proc = ws.cli("run", "in")
    assert proc.popen.returncode == USAGE, proc.describe()
    [line] = proc.stderr.splitlines()
    assert "Traceback" not in line
    assert "cannot list the folder in (Permission denied)" in line, line
    assert "fix its permissions" in line, line
    assert proc.stdout == "", proc.describe()  # no run id: no run was made
    assert ws.run_ids() == []


@pytest.mark.parametrize("mode", [UNREADABLE, NOT_SEARCHABLE], ids=["mode000", "mode644"])
def test_a_subfolder_that_cannot_be_listed_ends_failed_naming_the_folder(
    ws: _Workspace, mode: int
) -> None:
    folder = _inputs(ws.root)
    ws.lock(folder / "locked", mode)
    # --include does not hide it: any of the files not seen might have matched
    proc = ws.cli("run", "in", "--include", "*.txt")
    assert proc.popen.returncode == FAILED, proc.describe()
    assert "Traceback" not in proc.stdout + proc.stderr, proc.describe()
    ws.prefix = ()

    [run_id] = ws.run_ids()
    export = ws.export(run_id)
    got = {path: (row["status"], row["reason"]) for path, row in export.items()}
    assert got == {"in/a.txt": ("done", None), "in/locked": ("failed", "missing")}
    error = export["in/locked"]["error"]
    locked = (folder / "locked").resolve()
    assert f"{locked} is a folder that cannot be listed (Permission denied)" in error, error
    assert "the files in it were not seen" in error, error
    assert "fix its permissions, then start a new run over it" in error, error
    assert "in/locked" in proc.stderr, proc.describe()  # said while the run went on
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()
