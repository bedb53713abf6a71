"""Delivery and document names, through the installed command on real folders.

Two documents never share a delivery file (a ``\\`` is no folder; an absolute path
never meets a relative one) and none lands outside the folder; a name with a newline,
an escape sequence, a right-to-left override or Rich markup is shown as one safe line
by `deliver`, `cancel --compensate`, `events` and `estimate`; `deliver` exits 3, and
says to run `deliver` again, when the folder cannot be written or is a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from crashkit import Proc, Workspace, query, tmpfs

HALTED = 3
FAILED = 1
TEXT = "Ada Lovelace met Charles Babbage in London on 5 June 1833.\n"
ODD = ["new\nline.txt", "esc\x1b[31mred.txt", "a[bold]b.txt", "rtl\u202eolleh.txt"]
SHOWN = ["new\\nline.txt", "esc\\x1b[31mred.txt", "a[bold]b.txt", "rtl\\u202eolleh.txt"]


def write(path: Path, text: str = TEXT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def finished_run(ws: Workspace, *args: str) -> str:
    proc = ws.cli("run", *args)
    assert proc.popen.returncode == 0, proc.describe()
    return proc.stdout.splitlines()[0]


def delivered(folder: Path) -> dict[str, str]:
    """Each file under ``folder``: the document path it holds."""
    return {str(p.relative_to(folder)): json.loads(p.read_bytes())["path"]
            for p in folder.rglob("*.json")}  # fmt: skip


def rows(ws: Workspace, run_id: str) -> list[str]:
    found = query(ws.db, "SELECT status FROM deliveries WHERE run_id = ? ORDER BY id", (run_id,))
    return [row["status"] for row in found]


def lines_starting(proc: Proc, start: str) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith(start)]


# -- file names -------------------------------------------------------------------------


def test_a_backslash_is_no_folder_and_plain_names_keep_their_files(ws: Workspace) -> None:
    for name in ("a\\b.txt", "a/b.txt", "a%5Cb.txt", "100%.txt", "sub/plain.txt"):
        write(ws.root / "bs" / name)
    run_id = finished_run(ws, "bs", "--deliver-to", "out")
    assert delivered(ws.root / "out") == {
        "bs/a%5Cb.txt.json": "bs/a\\b.txt",  # escaped, not turned into a folder
        "bs/a/b.txt.json": "bs/a/b.txt",
        "bs/a%255Cb.txt.json": "bs/a%5Cb.txt",  # a % that reads as an escape is escaped
        "bs/100%.txt.json": "bs/100%.txt",  # plain names map as they always did
        "bs/sub/plain.txt.json": "bs/sub/plain.txt",
    }
    assert rows(ws, run_id) == ["delivered"] * 5


def test_an_absolute_and_a_relative_path_never_share_a_file(
    ws: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = write(tmp_path_factory.mktemp("elsewhere") / "qq" / "a.txt")
    relative = str(outside).lstrip("/")  # the absolute path without its leading /
    write(ws.root / relative, "Grace Hopper worked at Harvard in 1944.\n")
    run_id = finished_run(ws, str(outside), relative, "--deliver-to", "out")
    assert delivered(ws.root / "out") == {
        f"%2F/{relative}.json": str(outside),  # absolute paths: under a folder of their own
        f"{relative}.json": relative,
    }
    assert rows(ws, run_id) == ["delivered"] * 2


def test_a_path_given_with_two_leading_slashes_stays_inside_the_folder(
    ws: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = write(tmp_path_factory.mktemp("elsewhere") / "a.txt")
    finished_run(ws, "/" + str(outside), "--deliver-to", "out")
    assert not Path(f"{outside}.json").exists()  # `//x` once meant /x: outside the folder
    assert delivered(ws.root / "out") == {f"%2F{outside}.json": "/" + str(outside)}


# -- names shown as one safe line --------------------------------------------------------


@pytest.fixture
def odd_run(ws: Workspace) -> str:
    for name in ODD:
        write(ws.root / "in" / name)
    return finished_run(ws, "in")


def assert_one_safe_line_each(lines: list[str], whole: str) -> None:
    assert len(lines) == len(ODD), whole
    for shown in SHOWN:
        assert sum(shown in line for line in lines) == 1, (shown, whole)
    assert "\x1b" not in whole and "\u202e" not in whole, whole


def test_deliver_shows_each_refused_name_as_one_safe_line(ws: Workspace, odd_run: str) -> None:
    for name in ODD:  # someone else's file in the way of each delivery: target_exists
        write(ws.root / "taken" / "in" / f"{name}.json", "not ours\n")
    proc = ws.cli("deliver", odd_run, "--to", "taken")
    assert proc.popen.returncode == FAILED, proc.describe()
    assert_one_safe_line_each(lines_starting(proc, "not delivered: "), proc.stderr)


def test_cancel_compensate_shows_each_withdrawn_name_as_one_safe_line(
    ws: Workspace, odd_run: str
) -> None:
    assert ws.cli("deliver", odd_run, "--to", "out").popen.returncode == 0
    proc = ws.cli("cancel", odd_run, "--compensate")
    assert proc.popen.returncode == 0, proc.describe()
    assert_one_safe_line_each(lines_starting(proc, "withdrawn: "), proc.stderr)
    assert not (ws.root / "out").exists()


def test_events_show_a_right_to_left_override_written_out(ws: Workspace, odd_run: str) -> None:
    proc = ws.cli("events", odd_run)
    assert proc.popen.returncode == 0, proc.describe()
    assert "rtl\\u202eolleh.txt" in proc.stdout
    assert "\u202e" not in proc.stdout and "\x1b" not in proc.stdout


def test_the_unknown_price_hint_names_the_prices_table(ws: Workspace) -> None:
    write(ws.root / "in" / "a.txt")
    proc = ws.cli("estimate", "in", "--provider", "openai", "--model", "mystery-9",
                  "--base-url", "http://127.0.0.1:9/v1")  # fmt: skip
    assert proc.popen.returncode == 0, proc.describe()
    assert "durabatch.toml [prices] or with --prices FILE" in proc.stdout, proc.stdout


# -- a folder that cannot take the results ------------------------------------------------


def test_deliver_to_a_file_refuses_them_all_with_exit_3(ws: Workspace) -> None:
    write(ws.root / "in" / "a.txt")
    write(ws.root / "in" / "b.txt", "Grace Hopper worked at Harvard in 1944.\n")
    run_id = finished_run(ws, "in")
    (ws.root / "afile").touch()
    proc = ws.cli("deliver", run_id, "--to", "afile")
    assert proc.popen.returncode == HALTED, proc.describe()
    assert "not a folder" in proc.stderr and "move that file away" in proc.stderr
    assert f"durabatch deliver {run_id} --to {ws.root / 'afile'}` again" in proc.stderr
    assert "resume" not in proc.stderr and "Traceback" not in proc.stderr
    assert rows(ws, run_id) == ["refused"]  # nothing written, nothing to undo
    (ws.root / "afile").unlink()
    again = ws.cli("deliver", run_id, "--to", "afile")
    assert again.popen.returncode == 0, again.describe()
    assert sorted(delivered(ws.root / "afile")) == ["in/a.txt.json", "in/b.txt.json"]


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system: EROFS, which root's privileges do not get past."""
    with tmpfs(tmp_path / "disk", "size=1m,ro") as disk:
        yield disk


def test_deliver_to_a_folder_that_cannot_be_written_says_to_deliver_again(
    ws: Workspace, read_only_disk: Path
) -> None:
    write(ws.root / "in" / "a.txt")
    run_id = finished_run(ws, "in")
    proc = ws.cli("deliver", run_id, "--to", str(read_only_disk / "out"))
    assert proc.popen.returncode == HALTED, proc.describe()
    assert "Read-only file system" in proc.stderr, proc.stderr
    assert f"durabatch deliver {run_id} --to {read_only_disk / 'out'}` again" in proc.stderr
    assert "resume" not in proc.stderr and "Traceback" not in proc.stderr
