"""`durabatch cost`: every figure is a sum of call rows; waste and resume savings add up."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

from crashkit import EventLog, Workspace, of_type, query, signal_when
from fakeapi import FakeAPI, rate_limited, server_error
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


def test_a_run_killed_twice_with_429s_shows_waste_and_what_resume_and_cache_saved(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(1, 9):
        (folder / f"doc_{n}.txt").write_text(f"DOC-{n} The harbour board met on {n} May 2025.")
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": "sk-test"})
    args = ["run", "in", "--provider", "openai", "--model", MODEL, "--concurrency", "2",
            "--price-provider", "gmi"]  # fmt: skip

    def model_steps(at_least: int) -> Any:
        def reached(events: list[Any]) -> bool:  # ... and a call is out on the wire
            done = of_type(events, "step_completed")
            if sum(e.step != "extract" for e in done) < at_least:
                return False
            return bool(query(ws.db, "SELECT 1 FROM reservations"))

        return reached

    try:
        with FakeAPI(latency=0.2) as api:
            api.script(rate_limited("0"), rate_limited("0"))  # the first two calls: 429
            proc = ws.spawn(*args, "--base-url", api.base_url)
            log = EventLog(ws.db)
            signal_when(proc, log, model_steps(3), signal.SIGKILL)
            proc.wait(30)
            [run_id] = ws.run_ids()
            proc = ws.spawn("resume", run_id)
            signal_when(proc, log, model_steps(8), signal.SIGKILL)
            proc.wait(30)
            api.script(server_error(503))  # the last session's first call fails once
            assert ws.cli("resume", run_id).popen.returncode == 0
            served = len(api.completions())
            again = ws.cli(*args, "--base-url", api.base_url)  # the same files once more
            assert again.popen.returncode == 0, again.describe()
            assert len(api.completions()) == served  # nothing paid twice
        report = json.loads(ws.cli("cost", run_id, "--json").stdout, parse_float=Decimal)
        second = json.loads(ws.cli("cost", "--json").stdout, parse_float=Decimal)
        table = ws.cli("cost", run_id).stdout
        assert ws.verify(run_id).popen.returncode == 0
    finally:
        ws.cleanup()

    total, useful, wasted = report["total"], report["useful"], report["wasted"]
    assert report["interruptions"] == 2
    assert useful["calls"] == 16  # one committed call per document and model step
    assert total["calls"] == useful["calls"] + wasted["calls"]
    # every call the server answered is a row; so is every call cut off by the kills
    lost = report["lost_in_flight"]["calls"]
    assert total["calls"] - lost <= served <= total["calls"] and lost >= 1
    assert wasted["failed_calls"] >= 3  # two 429s and a 503
    assert report["saved_by_resume"]["calls"] >= 8
    # every figure is a sum of call rows
    pico = "SELECT COALESCE(SUM(cost_pico), 0) AS pico, COUNT(*) AS n FROM model_calls"
    (rows,) = query(ws.db, pico + " WHERE run_id = ?", [run_id])
    (lost,) = query(ws.db, pico + " WHERE run_id = ? AND kept = 0", [run_id])
    assert total["cost_usd"] == Decimal(rows["pico"]) / 10**12 and total["calls"] == rows["n"]
    assert wasted["cost_usd"] == Decimal(lost["pico"]) / 10**12 and wasted["calls"] == lost["n"]
    assert useful["cost_usd"] == 16 * PER_CALL
    assert total["cost_usd"] == useful["cost_usd"] + wasted["cost_usd"]
    by_step = {row["step"]: row["calls"] for row in report["by_step"]}
    assert sum(by_step.values()) == total["calls"]
    assert second["total"]["calls"] == 0
    assert second["saved_by_cache"] == {"steps": 16, "extractions": 8,
                                        "cost_usd": 16 * PER_CALL}  # fmt: skip
    assert "wasted" in table and "saved by resume" in table and "interruptions survived: 2" in table


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


def test_calls_a_drain_gives_up_on_are_recorded_as_lost_in_flight(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for n in range(1, 5):
        (tmp_path / "in" / f"d{n}.txt").write_text(f"DOC-{n} The board met on {n} May.")
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": "sk-test"})
    try:
        with FakeAPI(latency=30) as api:  # no answer comes back before the grace ends
            proc = ws.spawn("run", "in", "--provider", "openai", "--model", MODEL,
                            "--base-url", api.base_url, "--price-provider", "gmi",
                            "--grace", "0.5", "--concurrency", "2")  # fmt: skip
            log = EventLog(ws.db)
            signal_when(proc, log, lambda _: len(api.completions()) >= 2, signal.SIGTERM)
            assert proc.wait(30) == 75, proc.describe()
            [run_id] = ws.run_ids()
            report = json.loads(ws.cli("cost", run_id, "--json").stdout, parse_float=Decimal)
            assert ws.verify(run_id).popen.returncode == 0
    finally:
        ws.cleanup()
    lost = report["lost_in_flight"]
    assert lost["calls"] == 2 == report["wasted"]["calls"] == report["total"]["calls"]
    assert lost["input_tokens"] > 0 and lost["cost_usd"] > 0  # the prompt, at the input rate
    rows = query(ws.db, "SELECT error, kept, output_tokens FROM model_calls")
    assert all(r["error"].startswith("lost in flight") and r["kept"] == 0 for r in rows)
    assert not query(ws.db, "SELECT 1 FROM reservations")
