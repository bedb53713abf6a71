"""File names that are not valid UTF-8, through the real `durabatch run` and `estimate`.

A Linux name is bytes; one in Latin-1 (``bad\\xe9.txt``) cannot be stored in SQLite as
it is. Such a file, or every file in such a folder, ends ``failed`` (``missing``) as a
document of its own, stored with each such byte written as ``\\xNN`` and a message that
says to rename it, while the other documents are done: the run is not stopped.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from crashkit import Proc, Workspace

FAILED = 1
TEXT = "Margaret Ellison met the Riverton council on 3 March 2025 about the depot.\n"
BAD_FILE = b"bad\xe9.txt"  # "badé.txt" in Latin-1
BAD_FOLDER = b"caf\xe9"


def _write(path: bytes, text: str = TEXT) -> None:
    """A file (and its folders) at a path given as bytes; skip where the file system
    refuses such a name."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(text.encode())
    except OSError as exc:
        if exc.errno in (errno.EILSEQ, errno.EINVAL):
            pytest.skip(f"this file system refuses names that are not UTF-8 ({exc.strerror})")
        raise


def _inputs(root: Path, bad: bytes = BAD_FILE) -> Path:
    """in/ok.txt, and in/bad\\xe9.txt (or another path) whose name is not UTF-8."""
    folder = root / "in"
    folder.mkdir()
    (folder / "ok.txt").write_text(TEXT, encoding="utf-8")
    _write(os.path.join(os.fsencode(folder), bad))
    return folder


def _arg(path: bytes) -> str:
    """A path as Python passes it on a command line (each undecodable byte a surrogate)."""
    return os.fsdecode(path)


def _clean(proc: Proc) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "internal error" not in out, proc.describe()


def _says_rename(error: str, path: str, name: str) -> None:
    assert f"{path} cannot be processed: {name} is not valid UTF-8" in error, error
    assert "durabatch cannot store it" in error, error
    assert "rename it to UTF-8" in error and "convmv -f latin1 -t utf8 --notest" in error, error
    assert "then add it to a new run" in error, error


def _finished(ws: Workspace, proc: Proc) -> dict[str, dict[str, object]]:
    """The run's export, once it exited 1 and `verify` and `resume` pass."""
    assert proc.popen.returncode == FAILED, proc.describe()
    _clean(proc)
    [run_id] = ws.run_ids()
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()
    resume = ws.cli("resume")
    assert resume.popen.returncode == 0, resume.describe()
    assert "nothing to resume" in resume.stderr, resume.describe()
    return ws.export(run_id)


def test_a_name_that_is_not_utf8_ends_failed_and_the_others_are_done(ws: Workspace) -> None:
    folder = _inputs(ws.root)
    proc = ws.cli("run", "in")
    export = _finished(ws, proc)

    got = {path: (row["status"], row["reason"]) for path, row in export.items()}
    assert got == {"in/ok.txt": ("done", None), "in/bad\\xe9.txt": ("failed", "missing")}
    error = str(export["in/bad\\xe9.txt"]["error"])
    _says_rename(error, f"{folder.resolve()}/bad\\xe9.txt", "its name")
    assert "in/bad\\xe9.txt" in proc.stderr, proc.describe()  # said while the run went on
    assert os.path.exists(os.path.join(os.fsencode(folder), BAD_FILE))  # left as it was


def test_such_a_name_given_on_the_command_line_ends_failed(ws: Workspace) -> None:
    folder = _inputs(ws.root)
    proc = ws.cli("run", _arg(b"in/" + BAD_FILE), "in/ok.txt")
    export = _finished(ws, proc)

    got = {path: (row["status"], row["reason"]) for path, row in export.items()}
    assert got == {"in/bad\\xe9.txt": ("failed", "missing"), "in/ok.txt": ("done", None)}
    error = str(export["in/bad\\xe9.txt"]["error"])
    _says_rename(error, f"{folder.resolve()}/bad\\xe9.txt", "its name")


def test_every_file_in_a_folder_whose_name_is_not_utf8_ends_failed(ws: Workspace) -> None:
    folder = _inputs(ws.root, os.path.join(BAD_FOLDER, b"inside.txt"))
    proc = ws.cli("run", "in")
    export = _finished(ws, proc)

    got = {path: (row["status"], row["reason"]) for path, row in export.items()}
    assert got == {"in/caf\\xe9/inside.txt": ("failed", "missing"), "in/ok.txt": ("done", None)}
    error = str(export["in/caf\\xe9/inside.txt"]["error"])
    shown = f"{folder.resolve()}/caf\\xe9"
    _says_rename(error, f"{shown}/inside.txt", f"the name of its folder {shown}")


def test_estimate_lists_such_a_name_among_the_failures(ws: Workspace) -> None:
    folder = _inputs(ws.root)
    proc = ws.cli("estimate", "in", "--json")
    assert proc.popen.returncode == 0, proc.describe()
    _clean(proc)

    report = json.loads(proc.stdout)
    assert report["documents"]["total"] == 2, report
    assert report["documents"]["extracted"] == 1, report
    [failure] = report["failures"]
    assert (failure["path"], failure["status"], failure["reason"]) == (
        "in/bad\\xe9.txt", "failed", "missing"
    )  # fmt: skip
    _says_rename(failure["error"], f"{folder.resolve()}/bad\\xe9.txt", "its name")
