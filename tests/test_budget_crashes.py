"""--max-cost across kill -9s with many calls in flight: what the server bills stays
within the budget, however many calls were cut off before their answer came back.

The fake server bills every request at its worst case, the way a provider may bill a
call whose client has gone: the prompt as the provider counts it, plus every output
token the request allowed (``max_tokens``). It answers with the same figures as usage,
so an answered call is recorded at what it was billed; a call cut off by the kill is
billed all the same, and durabatch only knows what it held for it.
"""

from __future__ import annotations

import json
import math
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from crashkit import EventLog, Proc, Workspace, query, signal_when
from fakeapi import FakeAPI, Reply, is_entities, ok_content, user_text

MODEL = "gpt-5.4-mini"
PRICE = Decimal(10) / 10**6  # dollars per token, input and output alike
PRICES = '[prices."gpt-5.4-mini"]\ninput = 10\noutput = 10\n'
MAX_TOKENS = 1000  # an answer may cost far more than its prompt
BUDGET = Decimal(1)
CONCURRENCY = 16
LATENCY = 2.0  # every answer takes this long: the kill lands with all 16 on the wire
KILLS = 5


def provider_tokens(request: dict[str, Any]) -> tuple[int, int]:
    """What the provider bills a request: its prompt (messages and any JSON schema) at
    four bytes a token, and all the output tokens it allowed."""
    body = request["json"]
    prompt = "\n".join(m["content"] for m in body["messages"])
    if "response_format" in body:
        prompt += json.dumps(body["response_format"])
    return math.ceil(len(prompt.encode()) / 4), body["max_tokens"]


def billing(request: dict[str, Any]) -> Reply:
    if is_entities(request):
        content = json.dumps({"entities": [{"text": "ACME", "type": "ORG"}]})
    else:
        content = "Summary: " + user_text(request)[:60]
    return ok_content(content, usage=provider_tokens(request), delay=LATENCY)


def server_bill(api: FakeAPI) -> Decimal:
    return sum((sum(provider_tokens(r)) * PRICE for r in api.completions()), Decimal(0))


def kill_with_calls_in_flight(ws: Workspace, api: FakeAPI, proc: Proc) -> bool:
    """SIGKILL once the session has sent a call from each of its workers (none can be
    answered yet); False if it ended by itself first (it paused at the budget)."""
    sent_before = len(api.completions())
    deadline = time.monotonic() + 60
    while len(api.completions()) - sent_before < CONCURRENCY:
        if proc.popen.poll() is not None:
            assert proc.popen.returncode in (0, 75), proc.describe()
            return False
        assert time.monotonic() < deadline, f"no calls in 60s:\n{proc.describe()}"
        time.sleep(0.01)
    proc.popen.kill()
    proc.wait(30)
    return True


def test_calls_cut_off_by_kills_count_at_their_worst_case_so_the_bill_stays_in_budget(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(1, 121):
        (folder / f"doc_{n:03d}.txt").write_text(f"DOC-{n} The harbour board met in May 2025.")
    (tmp_path / "prices.toml").write_text(PRICES)
    ws = Workspace(tmp_path, extra_env={"DURABATCH_MAX_OUTPUT_TOKENS": str(MAX_TOKENS)})
    try:
        with FakeAPI() as api:
            api.default = billing
            proc = ws.spawn("run", "in", "--provider", "openai", "--base-url", api.base_url,
                            "--model", MODEL, "--prices", "prices.toml", "--concurrency",
                            str(CONCURRENCY), "--max-cost", str(BUDGET))  # fmt: skip
            assert kill_with_calls_in_flight(ws, api, proc)
            [run_id] = ws.run_ids()
            kills = 1
            resume = ("resume", run_id, "--concurrency", str(CONCURRENCY))  # the budget is kept
            while kills < KILLS and kill_with_calls_in_flight(ws, api, ws.spawn(*resume)):
                kills += 1
            final = ws.cli(*resume)  # to the end, or to the budget's pause
            assert final.popen.returncode in (0, 75), final.describe()
            bill = server_bill(api)  # every request received, answered or not
            requests = api.completions()
            report = json.loads(ws.cli("cost", run_id, "--json").stdout, parse_float=Decimal)
            assert ws.verify(run_id).popen.returncode == 0
    finally:
        ws.cleanup()
    assert all(r["json"]["max_tokens"] == MAX_TOKENS for r in requests)
    lost = query(ws.db, "SELECT input_tokens, output_tokens FROM model_calls"
                        " WHERE error_class = 'LostInFlight'")  # fmt: skip
    assert kills >= 2 and len(lost) >= CONCURRENCY * kills
    recorded = report["total"]["cost_usd"]
    assert bill <= BUDGET, (
        f"the server billed ${bill} for {len(requests)} calls against a budget of ${BUDGET}; "
        f"durabatch recorded ${recorded} with {len(lost)} calls lost in flight over {kills} kills"
    )
    # a lost call is recorded at its worst case: never less than the server billed
    assert recorded >= bill and all(row["output_tokens"] == MAX_TOKENS for row in lost)
    assert report["lost_in_flight"]["calls"] == len(lost)
    assert report["lost_in_flight"]["output_tokens"] == MAX_TOKENS * len(lost)
    assert not query(ws.db, "SELECT 1 FROM reservations")


def test_calls_a_drain_gives_up_on_under_a_budget_are_recorded_at_their_worst_case(
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    for n in range(1, 5):
        (tmp_path / "in" / f"d{n}.txt").write_text(f"DOC-{n} The board met on {n} May.")
    (tmp_path / "prices.toml").write_text(PRICES)
    ws = Workspace(tmp_path, extra_env={"DURABATCH_MAX_OUTPUT_TOKENS": str(MAX_TOKENS)})
    try:
        with FakeAPI(latency=30) as api:  # no answer comes back before the grace ends
            proc = ws.spawn("run", "in", "--provider", "openai", "--base-url", api.base_url,
                            "--model", MODEL, "--prices", "prices.toml", "--max-cost", "5",
                            "--grace", "0.5", "--concurrency", "2")  # fmt: skip
            signal_when(proc, EventLog(ws.db), lambda _: len(api.completions()) >= 2,
                        signal.SIGTERM)  # fmt: skip
            assert proc.wait(30) == 75, proc.describe()
            sent = api.completions()
            [run_id] = ws.run_ids()
            report = json.loads(ws.cli("cost", run_id, "--json").stdout, parse_float=Decimal)
            assert ws.verify(run_id).popen.returncode == 0
    finally:
        ws.cleanup()
    rows = query(ws.db, "SELECT input_tokens, output_tokens, cost_pico, error FROM model_calls")
    assert len(rows) == len(sent) == 2 == report["lost_in_flight"]["calls"]
    billable = sum(sum(provider_tokens(r)) for r in sent) * PRICE
    for row in rows:
        assert row["error"].startswith("lost in flight") and "upper bound" in row["error"]
        assert row["output_tokens"] == MAX_TOKENS
        assert Decimal(row["cost_pico"]) / 10**12 == (row["input_tokens"] + MAX_TOKENS) * PRICE
    assert report["lost_in_flight"]["cost_usd"] >= billable
    assert not query(ws.db, "SELECT 1 FROM reservations")
