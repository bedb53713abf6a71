"""`durabatch estimate`: dollars before spending, within the stated margin; the text it
extracts is kept, so the run that follows parses nothing again."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from crashkit import NOT_FINISHED, clean_env, durabatch_bin, note_text, query, slow_html
from fakeapi import FakeAPI, realistic
from typer.testing import CliRunner

from durabatch.cli import app

runner = CliRunner()
PEOPLE = ["Maria Okafor", "Tomas Lindqvist", "Priya Raman", "Daniel Osei", "Helen Achterberg"]
ORGS = ["Harbourline Logistics", "Riverton Council", "Kestrel Systems", "Northwind Foods"]
PLACES = ["Rotterdam", "Leeds", "Porto", "Gdansk", "Halifax"]
NOUNS = ["budget", "contract", "warehouse", "shipment", "audit", "roadmap", "tender", "pilot"]
FILLER = [
    "The committee reviewed the quarterly figures and agreed that further work was needed.",
    "Several members asked for a clearer breakdown of costs before any final decision.",
    "It was noted that delivery times had improved although storage remained expensive.",
    "A short discussion followed about staffing levels during the busy winter period.",
    "The draft will be circulated to all parties for comment within the coming weeks.",
]
SIZES = [3, 6, 10, 18, 30, 45, 60, 90, 120, 160]  # sentences: short notes to long reports


def prose(rng: random.Random, sentences: int) -> str:
    out = []
    for n in range(sentences):
        if rng.random() < 0.4:
            out.append(
                f"{rng.choice(PEOPLE)} of {rng.choice(ORGS)} met the team in "
                f"{rng.choice(PLACES)} on {rng.randint(1, 28)} March {rng.randint(2019, 2026)} "
                f"to discuss the {rng.choice(NOUNS)} and the {rng.choice(NOUNS)}."
            )
        else:
            out.append(rng.choice(FILLER))
        if n % 6 == 5:
            out.append("\n\n")
    return " ".join(out).replace(" \n\n ", "\n\n")


@pytest.fixture
def corpus() -> Path:
    rng = random.Random(20261126)
    folder = Path("corpus")
    folder.mkdir()
    for n, size in enumerate(SIZES):
        (folder / f"report_{n:02d}.txt").write_text(prose(rng, size))
    (folder / "notes.md").write_text("# Notes\n\n" + prose(rng, 25))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<")  # cannot be extracted
    return folder


def openai_args(api: FakeAPI) -> list[str]:
    return ["--provider", "openai", "--base-url", api.base_url, "--model", "gpt-5.4-mini",
            "--price-provider", "gmi", "--max-input-tokens", "800"]  # fmt: skip


def estimated(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["estimate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout, parse_float=Decimal))


def cost(run_id: str) -> dict[str, Any]:
    result = runner.invoke(app, ["cost", run_id, "--json"])
    return dict(json.loads(result.stdout, parse_float=Decimal))


def test_the_estimate_is_within_its_margin_of_what_the_run_then_costs(corpus: Path) -> None:
    with FakeAPI() as api:
        api.default = realistic
        estimate = estimated(str(corpus), *openai_args(api))
        assert api.completions() == []  # an estimate calls no model
        result = runner.invoke(app, ["run", str(corpus), *openai_args(api)])
        assert result.exit_code == 1, result.output  # broken.pdf fails, the rest finish
    run_id = result.stdout.splitlines()[0]
    report = cost(run_id)
    margin = estimate["margin"]
    assert margin == Decimal("0.25")
    actual = {row["step"]: row for row in report["by_step"]}
    for row in estimate["steps"]:
        real = actual[row["step"]]
        assert abs(row["expected_usd"] - real["cost_usd"]) <= margin * real["cost_usd"], row
        assert row["low_usd"] <= real["cost_usd"] <= row["high_usd"], (row, real)
        assert real["cost_usd"] <= row["most_usd"]
    entities = next(row for row in estimate["steps"] if row["step"] == "entities")
    assert entities["calls"] == actual["entities"]["calls"]  # the same pieces as the run
    total = report["total"]["cost_usd"]
    assert estimate["total"]["low_usd"] <= total <= estimate["total"]["high_usd"]
    assert estimate["documents"] == {"total": 12, "extracted": 11, "parsed": 11, "reused": 0,
                                     "not_extracted": 1}  # fmt: skip
    [failure] = estimate["failures"]
    assert failure["path"].endswith("broken.pdf") and failure["reason"] == "malformed"


def test_the_run_after_an_estimate_reuses_its_extraction(corpus: Path) -> None:
    estimated(str(corpus))
    again = estimated(str(corpus))  # a second estimate parses nothing either
    assert again["documents"]["parsed"] == 0 and again["documents"]["reused"] == 11
    result = runner.invoke(app, ["run", str(corpus)])
    run_id = result.stdout.splitlines()[0]
    rows = query(Path("durabatch.db"), "SELECT s.cached_from, s.status FROM steps s"
                 " JOIN documents d ON d.id = s.doc_id WHERE s.step = 'extract'"
                 " AND d.run_id = ?", [run_id])  # fmt: skip
    reused = [row["cached_from"] for row in rows if row["status"] == "done"]
    assert len(reused) == 11 and all(r.startswith("estimate:corpus/") for r in reused)
    assert cost(run_id)["saved_by_cache"]["extractions"] == 11
    assert runner.invoke(app, ["verify", run_id]).exit_code == 0


def test_a_second_run_reuses_the_first_runs_text_unless_told_not_to(corpus: Path) -> None:
    first = runner.invoke(app, ["run", str(corpus)]).stdout.splitlines()[0]
    second = runner.invoke(app, ["run", str(corpus)]).stdout.splitlines()[0]
    fresh = runner.invoke(app, ["run", str(corpus), "--no-cache"]).stdout.splitlines()[0]
    sql = ("SELECT s.cached_from FROM steps s JOIN documents d ON d.id = s.doc_id"
           " WHERE s.step = 'extract' AND s.status = 'done' AND d.run_id = ?")  # fmt: skip
    assert {r["cached_from"].split(":")[0] for r in query(Path("durabatch.db"), sql, [second])} == {
        first
    }
    assert {r["cached_from"] for r in query(Path("durabatch.db"), sql, [fresh])} == {None}
    fields = ("path", "sha256", "status", "reason", "summary", "entities")
    exports = [
        [{k: row[k] for k in fields} for row in map(json.loads, out.splitlines())]
        for out in (runner.invoke(app, ["export", run]).stdout for run in (first, second, fresh))
    ]
    assert exports[0] == exports[1] == exports[2] and len(exports[0]) == 12


def test_a_changed_file_is_extracted_again(corpus: Path) -> None:
    estimated(str(corpus))
    (corpus / "notes.md").write_text("# Notes\n\nMaria Okafor signed the new tender today.")
    report = estimated(str(corpus))
    assert report["documents"]["parsed"] == 1 and report["documents"]["reused"] == 10


def test_an_unknown_price_is_unknown_not_zero(corpus: Path) -> None:
    with FakeAPI() as api:
        args = ["--provider", "openai", "--base-url", api.base_url, "--model", "mystery-9"]
        report = estimated(str(corpus), *args)
        table = runner.invoke(app, ["estimate", str(corpus), *args])
    assert all(row["expected_usd"] is None and row["most_usd"] is None for row in report["steps"])
    assert report["total"]["expected_usd"] is None
    assert report["steps"][0]["input_tokens"] > 0
    assert table.exit_code == 0 and "unknown" in table.stdout and "--prices" in table.stdout


def test_the_local_engine_estimates_zero_dollars(corpus: Path) -> None:
    report = estimated(str(corpus))
    assert report["total"]["expected_usd"] == 0 == report["total"]["most_usd"]
    assert {row["price_source"] for row in report["steps"]} == {"local engine: free"}


def test_estimate_of_a_missing_path_is_a_usage_error() -> None:
    result = runner.invoke(app, ["estimate", "nowhere"])
    assert result.exit_code == 2 and "no such file" in result.output


def test_an_interrupted_estimate_says_its_text_is_kept(tmp_path: Path) -> None:
    """Ctrl-C mid-estimate exits 75 and says that running it again goes on (it used to say
    only "interrupted by SIGINT")."""
    docs = tmp_path / "many"
    docs.mkdir()
    for n in range(3000):
        (docs / f"note_{n:04d}.txt").write_text(note_text(n), encoding="utf-8")
    db = tmp_path / "e.db"
    proc = subprocess.Popen([durabatch_bin(), "estimate", str(docs), "--db", str(db)],
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (db.exists() and _extracted(db)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == NOT_FINISHED, err
    assert "the text extracted so far is kept" in err and "Traceback" not in err, err


def test_a_signal_during_a_long_parse_stops_the_estimate_at_once(tmp_path: Path) -> None:
    """The first signal stops the estimate without waiting for the parse in flight (it
    waited for it, seconds on a big page); a second one exits at once."""
    docs = tmp_path / "slow"
    docs.mkdir()
    (docs / "slow.html").write_text(slow_html(40, "A slow page."))  # many seconds to parse
    db = tmp_path / "e.db"
    for signals in ([signal.SIGINT], [signal.SIGTERM, signal.SIGTERM]):
        proc = subprocess.Popen([durabatch_bin(), "estimate", str(docs), "--db", str(db)],
                                cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while not _parsing(proc.pid):  # a parser process has the page
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        sent = time.monotonic()
        for sig in signals:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - sent < 5, err  # the parse alone takes far longer
        assert proc.returncode == NOT_FINISHED, err
        assert "Traceback" not in err, err
        if len(signals) == 1:
            assert "the text extracted so far is kept" in err


def _parsing(pid: int) -> bool:
    """The estimate ``pid`` has a parser process that is busy (using the CPU)."""
    # a process started by a thread is listed as that thread's child
    listed = Path(f"/proc/{pid}/task").glob("*/children")
    for child in (c for path in listed for c in path.read_text().split()):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[11]) > 20:  # utime, in clock ticks: well past starting up
                return True
    return False


def _extracted(db: Path) -> int:
    try:
        return len(query(db, "SELECT 1 FROM extractions LIMIT 1"))
    except sqlite3.OperationalError:  # not made yet
        return 0
