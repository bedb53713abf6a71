"""Settings a user can get wrong: each is a usage error before anything runs, and none
can leave a run that never ends or a process that never exits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from crashkit import Workspace, clean_env, query

from durabatch.errors import Reason


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--max-cost", "nan"], {}, "--max-cost"),
        (["--max-cost", "-1"], {}, "--max-cost"),
        (["--extract-timeout", "nan"], {}, "--extract-timeout"),
        (["--read-timeout", "-1"], {}, "--read-timeout"),
        (["--max-input-tokens", "0"], {}, "--max-input-tokens"),
        (["--grace", "inf"], {}, "--grace"),
        ([], {"DURABATCH_MAX_BYTES": "-1"}, "DURABATCH_MAX_BYTES"),
        ([], {"DURABATCH_LEASE_TTL": "0"}, "DURABATCH_LEASE_TTL"),
        ([], {"DURABATCH_RETRY_SECONDS": "nan"}, "DURABATCH_RETRY_SECONDS"),
        # a setting that has a flag, given by its variable: the variable is named
        ([], {"DURABATCH_MAX_COST": "nan"}, "DURABATCH_MAX_COST"),
        ([], {"DURABATCH_EXTRACT_TIMEOUT": "0"}, "DURABATCH_EXTRACT_TIMEOUT"),
        ([], {"DURABATCH_CONCURRENCY": "0"}, "DURABATCH_CONCURRENCY"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error_and_starts_no_run(
    ws: Workspace, sample_docs: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    proc = ws.cli("run", str(sample_docs), *args, env=env)
    assert proc.popen.returncode == 2, proc.describe()
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {named} must be ") and "Traceback" not in proc.stderr
    assert ws.run_ids() == []


@pytest.mark.parametrize("kind", ["a folder", "a file it cannot read"])
def test_a_settings_file_that_cannot_be_read_is_a_usage_error(ws: Workspace, kind: str) -> None:
    config = ws.root / "durabatch.toml"
    if kind == "a folder":
        config.mkdir()
    else:
        config.write_text("concurrency = 2\n")
        config.chmod(0)
        try:
            config.read_text()
            pytest.skip("this user reads files whatever their permissions (root)")
        except PermissionError:
            pass
    proc = ws.cli("status")
    assert proc.popen.returncode == 2, proc.describe()
    assert f"cannot read {config}" in proc.stderr and "Traceback" not in proc.stderr


def test_summaries_that_do_not_shorten_fail_the_document_instead_of_looping(
    ws: Workspace, sample_docs: Path
) -> None:
    """With pieces this small, the embedded engine's summaries of the release's two pieces
    stay as long as they were: summarizing them again went round for ever. The letter's
    shorten, and it still gets its summary."""
    docs = ws.root / "docs"
    docs.mkdir()
    for name in ("northwind_acquisition_release.pdf", "supplier_letter_cp1252.txt"):
        shutil.copy(sample_docs / name, docs)
    proc = ws.cli("run", str(docs), "--max-input-tokens", "100", timeout=60)
    assert proc.popen.returncode == 1, proc.describe()
    release, letter = query(ws.db, "SELECT status, reason, error FROM documents ORDER BY path")
    assert (release["status"], release["reason"]) == ("failed", Reason.CONTEXT_LENGTH)
    assert "raise --max-input-tokens" in release["error"]
    assert letter["status"] == "done"


def test_a_parser_pool_left_open_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    """Parser processes ignore SIGTERM (the parent drains them); an error that skipped
    closing the pool used to leave the process waiting for them at exit, for good."""
    (tmp_path / "a.txt").write_text("hello")
    script = (
        "from pathlib import Path\n"
        "from durabatch.sandbox import ParserPool\n"
        "pool = ParserPool()  # still referred to at exit, as an engine's pool is\n"
        f"text = pool.extract(Path({str(tmp_path / 'a.txt')!r}), max_bytes=100, timeout=60).text\n"
        "print(text.strip(), flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=clean_env(), timeout=60,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "hello"), done.stderr


def test_a_number_out_of_range_in_the_settings_file_names_the_file(
    ws: Workspace, sample_docs: Path
) -> None:
    (ws.root / "durabatch.toml").write_text("grace = -5\n")
    proc = ws.cli("run", str(sample_docs))
    assert proc.popen.returncode == 2, proc.describe()
    assert f"error: {ws.root / 'durabatch.toml'}: grace must be at least 0" in proc.stderr
    (ws.root / "durabatch.toml").unlink()
    infinite = ws.cli("run", str(sample_docs), "--max-cost", "inf")
    assert "--max-cost must be a finite number, not inf" in infinite.stderr
