"""--max-cost: no paid call starts whose worst case would pass the budget, across crashes."""

from __future__ import annotations

import re
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from crashkit import EventLog, Workspace, of_type, query, signal_when
from fakeapi import FakeAPI

MODEL = "gpt-5.4-mini"
PRICES = '[prices."gpt-5.4-mini"]\ninput = 10\noutput = 10\n'  # $10 per 1M tokens each way


@pytest.fixture
def ws(tmp_path: Path) -> Any:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(1, 31):
        (folder / f"doc_{n:02d}.txt").write_text(f"DOC-{n} The harbour board met in May 2025.")
    (tmp_path / "prices.toml").write_text(PRICES)
    workspace = Workspace(tmp_path, extra_env={"DURABATCH_MAX_OUTPUT_TOKENS": "50"})
    yield workspace
    workspace.cleanup()


def run_args(api: FakeAPI, *extra: str) -> list[str]:
    return ["run", "in", "--provider", "openai", "--base-url", api.base_url, "--model", MODEL,
            "--prices", "prices.toml", "--concurrency", "16", *extra]  # fmt: skip


def spent(ws: Workspace) -> tuple[int, Decimal, int]:
    sql = ("SELECT COUNT(*) AS n, COALESCE(SUM(cost_pico), 0) AS pico,"
           " (SELECT COUNT(*) FROM reservations) AS held FROM model_calls")  # fmt: skip
    (row,) = query(ws.db, sql)
    return row["n"], Decimal(row["pico"]) / 10**12, row["held"]


def test_the_budget_pauses_the_run_before_it_is_passed_then_resume_raises_it(
    ws: Workspace,
) -> None:
    with FakeAPI(latency=0.05) as api:
        paused = ws.cli(*run_args(api, "--max-cost", "0.01"))
        assert paused.popen.returncode == 75, paused.describe()
        assert "budget of $0.01 is reached" in paused.stderr and "--max-cost 0.02" in paused.stderr
        # the figures say why: what is left is less than the next call's worst case
        said = re.search(r"\$([\d.]+) left, and the next call could cost up to \$([\d.]+)",
                         paused.stderr)  # fmt: skip
        assert said is not None, paused.stderr
        assert Decimal(said[1]) < Decimal(said[2]), said[0]
        calls, usd, held = spent(ws)
        assert 0 < usd <= 0.01 and held == 0 and calls < 60
        [run_id] = ws.run_ids()
        assert ws.status(run_id)["status"] == "paused"
        assert ws.status(run_id)["documents"]["failed"] == 0
        again = ws.cli("resume", run_id)  # the stored budget still holds
        assert again.popen.returncode == 75
        assert spent(ws)[1] <= 0.01
        finished = ws.cli("resume", run_id, "--max-cost", "1")
        assert finished.popen.returncode == 0, finished.describe()
    calls, usd, held = spent(ws)
    assert calls == 60 and usd <= 1 and held == 0


def test_a_kill_in_the_middle_releases_the_dead_owners_reservations(ws: Workspace) -> None:
    # answers slow enough that the kill lands with calls in flight however late it comes
    # (at 0.3 s a loaded machine once saw the whole run finish before the kill)
    with FakeAPI(latency=2.0) as api:
        proc = ws.spawn(*run_args(api, "--max-cost", "0.2"))
        log = EventLog(ws.db)

        def paying(events: list[Any]) -> bool:
            # extracts and some calls done, and calls in flight: between two waves of
            # answers no call may be, so the kill waits for the next call's reservation
            return len(of_type(events, "step_completed")) >= 35 and spent(ws)[2] > 0

        signal_when(proc, log, paying, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, proc.describe()
        assert spent(ws)[2] > 0  # the dead owner still held reservations
        [run_id] = ws.run_ids()
        api.latency = 0.05
        resumed = ws.cli("resume", run_id)
        assert resumed.popen.returncode in (0, 75), resumed.describe()
    _, usd, held = spent(ws)
    assert usd <= 0.2 and held == 0


def test_an_unknown_price_under_a_budget_halts_instead_of_paying_blind(ws: Workspace) -> None:
    with FakeAPI() as api:
        args = ["run", "in", "--provider", "openai", "--base-url", api.base_url, "--model",
                "mystery-model", "--max-cost", "5"]  # fmt: skip
        proc = ws.cli(*args)
        assert proc.popen.returncode == 3, proc.describe()
        assert "price of mystery-model" in proc.stderr and "[prices]" in proc.stderr
        assert api.completions() == []
    [run_id] = ws.run_ids()
    assert ws.status(run_id)["documents"]["failed"] == 0


def test_a_zero_budget_pays_for_nothing_and_a_raised_budget_is_kept(ws: Workspace) -> None:
    with FakeAPI() as api:
        nothing = ws.cli(*run_args(api, "--max-cost", "0"))
        assert nothing.popen.returncode == 75, nothing.describe()
        assert api.completions() == []
        [run_id] = ws.run_ids()
        assert ws.cli("resume", run_id, "--max-cost", "1").popen.returncode == 0
    assert ws.status(run_id)["settings"]["max_cost"] == 1
    assert ws.verify(run_id).popen.returncode == 0


def test_a_refused_attempt_keeps_what_the_call_already_spent() -> None:
    from fakeapi import ok_content

    from durabatch import budget
    from durabatch.errors import BudgetReached
    from durabatch.models.openai import OpenAIProvider

    asked: list[int] = []

    def guard(*_: object) -> None:
        asked.append(1)
        if len(asked) > 1:
            raise BudgetReached("over")

    with FakeAPI() as api:
        api.script(ok_content("not json at all"))
        provider = OpenAIProvider(base_url=api.base_url, api_key=None)
        token = budget.current.set(budget.Guard(guard, limited=True))
        try:
            with pytest.raises(BudgetReached) as refused:
                provider.entities("text", MODEL)
        finally:
            budget.current.reset(token)
            provider.close()
    (paid,) = refused.value.calls  # the invalid-JSON answer was paid for: it is kept
    assert paid.http_status == 200 and paid.error_class == "InvalidJSON"
    assert api.completions()[0]["json"]["max_tokens"] == 2048
