"""`durabatch cost`: every figure is a sum of call rows; waste and resume savings add up."""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from crashkit import EventLog, Workspace, of_type, query, signal_when
from fakeapi import FakeAPI, server_error
from typer.testing import CliRunner

from durabatch.cli import app

MODEL = "gpt-5.4-mini"
PER_CALL = Decimal("0.00009")  # the fake's usage, 100 in and 20 out, at $0.40 / $2.50 per 1M


def test_cost_of_a_local_run_is_zero_and_all_useful(sample_docs: Path) -> None:
    runner = CliRunner()
    run_id = runner.invoke(app, ["run", str(sample_docs)]).stdout.splitlines()[0]
    result = runner.invoke(app, ["cost", run_id, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total"]["calls"] == 16 == report["useful"]["calls"]
    assert report["total"]["cost_usd"] == 0.0 and report["wasted"]["calls"] == 0
    assert {row["step"] for row in report["by_step"]} == {"summarize", "entities"}
    assert len(report["top_documents"]) == 8
    table = runner.invoke(app, ["cost"])  # the latest run, as tables
    assert table.exit_code == 0 and "wasted" in table.stdout and "by step" in table.stdout


def test_cost_without_runs_or_with_an_unknown_run_is_a_usage_error(sample_docs: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["run", str(sample_docs), "--include", "nothing-matches"])
    assert runner.invoke(app, ["cost", "nope"]).exit_code == 2


def test_a_killed_and_retried_run_shows_waste_and_what_resume_saved(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(1, 9):
        (folder / f"doc_{n}.txt").write_text(f"DOC-{n} The harbour board met on {n} May 2025.")
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": "sk-test"})
    args = ["run", "in", "--provider", "openai", "--model", MODEL, "--concurrency", "2",
            "--price-provider", "gmi"]  # fmt: skip
    try:
        with FakeAPI(latency=0.2) as api:
            proc = ws.spawn(*args, "--base-url", api.base_url)
            log = EventLog(ws.db)

            def three_model_steps(events: list[Any]) -> bool:
                done = of_type(events, "step_completed")
                return sum(e.step != "extract" for e in done) >= 3

            signal_when(proc, log, three_model_steps, signal.SIGKILL)
            proc.wait(30)
            time.sleep(0.3)
            [run_id] = ws.run_ids()
            api.script(server_error(503))  # the resumed session's first call fails once
            assert ws.cli("resume", run_id).popen.returncode == 0
            served = len(api.completions())
        report = json.loads(ws.cli("cost", run_id, "--json").stdout, parse_float=Decimal)
    finally:
        ws.cleanup()

    total, useful, wasted = report["total"], report["useful"], report["wasted"]
    assert useful["calls"] == 16  # one committed call per document and model step
    assert total["calls"] == useful["calls"] + wasted["calls"] <= served
    assert wasted["failed_calls"] >= 1  # the 503
    assert report["interruptions"] == 1
    assert report["saved_by_resume"]["calls"] >= 3
    (rows,) = query(ws.db, "SELECT SUM(cost_pico) AS pico, COUNT(*) AS n FROM model_calls")
    assert total["cost_usd"] == Decimal(rows["pico"]) / 10**12 and total["calls"] == rows["n"]
    assert useful["cost_usd"] == 16 * PER_CALL
    assert total["cost_usd"] == useful["cost_usd"] + wasted["cost_usd"]
    by_step = {row["step"]: row["calls"] for row in report["by_step"]}
    assert sum(by_step.values()) == total["calls"]


def test_dollars_are_exact_per_call_per_step_per_document_and_per_run(tmp_path: Path) -> None:
    """Rates of $0.1 and $0.2 per 1M tokens drift as floats; the sums here must not."""
    (tmp_path / "docs").mkdir()
    for n in range(1, 9):
        (tmp_path / "docs" / f"d{n}.txt").write_text(f"DOC-{n} The board met on {n} May.")
    (tmp_path / "prices.toml").write_text('[prices."m"]\ninput = 0.1\noutput = 0.2\n')
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": "sk-test"})
    try:
        with FakeAPI() as api:
            done = ws.cli("run", "docs", "--provider", "openai", "--model", "m",
                          "--base-url", api.base_url, "--prices", "prices.toml")  # fmt: skip
            assert done.popen.returncode == 0, done.describe()
        [run_id] = ws.run_ids()
        report = json.loads(ws.cli("cost", run_id, "--json").stdout, parse_float=Decimal)
        exported = [json.loads(line, parse_float=Decimal)
                    for line in ws.cli("export", run_id).stdout.splitlines()]  # fmt: skip
    finally:
        ws.cleanup()
    per_call = Decimal("0.000014")  # 100 x 0.1 + 20 x 0.2 dollars per 1M tokens
    calls = query(ws.db, "SELECT cost_pico FROM model_calls")
    assert [row["cost_pico"] for row in calls] == [14_000_000] * 16
    assert {row["step"]: row["cost_usd"] for row in report["by_step"]} == {
        "entities": 8 * per_call, "summarize": 8 * per_call}  # fmt: skip
    assert all(row["cost_usd"] == 2 * per_call for row in report["top_documents"])
    assert all(row["cost_usd"] == 2 * per_call for row in exported)
    assert report["total"]["cost_usd"] == Decimal("0.000224") == 16 * per_call
    assert report["wasted"]["cost_usd"] == 0
