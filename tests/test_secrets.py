"""Secrets and files: the key is nowhere on disk, files are private, odd names are safe."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
from crashkit import EventLog, Workspace, of_type, signal_when
from fakeapi import FakeAPI

SECRET = "sk-live-4f1c9a7e2b5d8c3a6e9f0b1d2c4e7a9b"
ODD_NAMES = [
    "line\nbreak.txt",
    "tab\tand\x1b[31mred.txt",
    "dots..in..name...txt",
    "[bold red]markup[link=x].txt",
    "right\u202eto-left.txt",
    "e\u0301tude-nfd.txt",
    "\u00e9tude-nfc.txt",
    "日本語の文書.txt",
    "emoji-\U0001f4c4.txt",
    "-starts-with-dash.txt",
]


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_the_api_key_is_nowhere_on_disk_after_a_killed_and_resumed_run(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for n in range(1, 13):
        (tmp_path / "in" / f"d{n}.txt").write_text(f"DOC-{n} The board met on {n} May 2025.")
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": SECRET})
    try:
        with FakeAPI(latency=0.1) as api:
            args = ["run", "in", "--provider", "openai", "--model", "gpt-5.4-mini",
                    "--base-url", api.base_url, "--concurrency", "2"]  # fmt: skip
            proc = ws.spawn(*args)
            log = EventLog(ws.db)

            def some_done(events: list[Any]) -> bool:
                return len(of_type(events, "step_completed")) >= 8

            signal_when(proc, log, some_done, signal.SIGKILL)
            proc.wait(30)
            [run_id] = ws.run_ids()
            assert ws.cli("resume", run_id).popen.returncode == 0
            sent = {r["headers"].get("authorization") for r in api.completions()}
        for command in (("status", run_id, "--json"), ("cost", run_id), ("events", run_id),
                        ("export", run_id, "-o", "out.jsonl"),
                        ("export", run_id, "--format", "csv", "-o", "out.csv")):  # fmt: skip
            assert ws.cli(*command).popen.returncode == 0
    finally:
        ws.cleanup()
    assert sent == {f"Bearer {SECRET}"}  # the key was used, so it could have leaked
    files = every_file(tmp_path)
    names = {p.name for p in files}
    assert {"d.db", "out.jsonl", "out.csv", "01-run.err", "02-resume.err"} <= names
    leaked = [p for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []


@pytest.mark.parametrize("userinfo", ["user:hunter2", "sk-live-key-as-user-name"])
def test_a_base_url_with_credentials_is_refused_before_anything_is_stored(
    tmp_path: Path, userinfo: str
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Alpha beta.")
    ws = Workspace(tmp_path)
    try:
        url = f"https://{userinfo}@proxy.example/v1"
        refused = ws.cli("run", "in", "--provider", "openai", "--model", "m", "--base-url", url)
    finally:
        ws.cleanup()
    assert refused.popen.returncode == 2, refused.describe()
    assert "carries a user name or password" in refused.stderr
    assert "DURABATCH_API_KEY" in refused.stderr and userinfo not in refused.stderr
    assert not ws.db.exists()


def test_database_artifacts_and_locks_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    # over 64 KiB of text: kept as an artifact file, not in the database
    (tmp_path / "in" / "a.txt").write_text("Maria Okafor met Acme Corp in Leeds. " * 2000)
    ws = Workspace(tmp_path)
    try:
        assert ws.cli("run", "in").popen.returncode == 0
    finally:
        ws.cleanup()
    store_files = [p for p in every_file(tmp_path) if p.name.startswith("d.db")]
    store_files += every_file(tmp_path / "d.db.d")
    names = {p.name for p in store_files}
    assert "d.db" in names  # and its journals, while they exist
    assert any(p.parent.name == "locks" for p in store_files)
    assert any("artifacts" in p.parts for p in store_files), store_files
    for path in store_files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    for folder in [
        tmp_path / "d.db.d",
        *(p for p in (tmp_path / "d.db.d").rglob("*") if p.is_dir()),
    ]:
        assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0, folder


def test_odd_file_names_are_stored_exactly_and_shown_safely(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n, name in enumerate(ODD_NAMES):
        (folder / name).write_text(f"Document {n}. Maria Okafor met Acme Corp in Leeds.")
    ws = Workspace(tmp_path)
    try:
        ran = ws.cli("run", "in")
        [run_id] = ws.run_ids()
        exported = ws.cli("export", run_id).stdout
        table = ws.cli("status", run_id).stdout
        cost = ws.cli("cost", run_id).stdout
        verified = ws.cli("verify", run_id)
    finally:
        ws.cleanup()
    assert ran.popen.returncode == 0, ran.describe()
    rows = [json.loads(line) for line in exported.splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(f"in/{n}" for n in ODD_NAMES)
    assert all(row["status"] == "done" for row in rows)
    # every log line is one event: a newline or escape in a name is written out, not obeyed
    for line in ran.stderr.splitlines():
        assert line.startswith("20") and f"run={run_id}" in line, line
    for text in (ran.stderr, table, cost):
        assert "\x1b" not in text and "\u202e" not in text
    assert "Traceback" not in ran.stderr + table + cost
    assert verified.popen.returncode == 0
    # outputs are named by content, never by the document's name (small texts are kept
    # in the database, so there may be no file at all)
    artifacts = [p.name for p in every_file(tmp_path / "d.db.d") if p.suffix != ".lock"]
    assert all(len(name) == 64 and int(name, 16) >= 0 for name in artifacts)
    assert os.listdir(tmp_path / "in") and sorted(os.listdir(tmp_path / "in")) == sorted(ODD_NAMES)
