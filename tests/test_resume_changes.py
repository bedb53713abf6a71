"""A halt (exit 3) is fixed, then resumed: `resume` takes a model no step has answered
yet, the right endpoint, and a price for a model the run had none for. What the run
already has stays: a model that answered some documents, a price it counted at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crashkit import Workspace, of_type, query
from fakeapi import FakeAPI, model_not_found

from durabatch.config import Settings
from durabatch.errors import UsageError
from durabatch.store import open_store

GOOD = "gpt-5.4-mini"
DOCS = 6


@pytest.fixture
def ws(tmp_path: Path) -> Any:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(1, DOCS + 1):
        (folder / f"doc_{n}.txt").write_text(f"DOC-{n} Alice Morgan met the board in Rotterdam.")
    workspace = Workspace(tmp_path)
    yield workspace
    workspace.cleanup()


def unknown(api: FakeAPI, model: str) -> None:
    api.on(lambda r: (r["json"] or {}).get("model") == model, model_not_found(model))


def models_asked(api: FakeAPI) -> list[str]:
    return [r["json"]["model"] for r in api.completions()]


def changed(ws: Workspace) -> list[dict[str, Any]]:
    return [e.data for e in of_type(ws.events(), "settings_changed")]


def test_an_unknown_model_halts_and_resume_with_the_right_one_finishes(ws: Workspace) -> None:
    with FakeAPI() as api:
        unknown(api, "gpt-nope")
        args = ["--provider", "openai", "--base-url", api.base_url, "--model", "gpt-nope"]
        halted = ws.cli("run", "in", *args)
        assert halted.popen.returncode == 3, halted.describe()
        assert "durabatch resume --model NAME" in halted.stderr
        [run_id] = ws.run_ids()

        again = ws.cli("resume", run_id)  # nothing fixed: halts the same way
        assert again.popen.returncode == 3, again.describe()
        asked_before = len(api.completions())

        fixed = ws.cli("resume", run_id, "--model", GOOD)
        assert fixed.popen.returncode == 0, fixed.describe()
        assert set(models_asked(api)[asked_before:]) == {GOOD}
    status = ws.status(run_id)
    assert status["status"] == "done" and status["documents"]["done"] == DOCS
    assert status["settings"]["model"] == GOOD
    assert changed(ws) == [{"model": GOOD}]
    assert ws.verify(run_id).popen.returncode == 0
    later = ws.cli("resume", run_id)  # the change was kept with the run
    assert later.popen.returncode == 0 and "already finished" in later.stderr


def test_a_model_that_answered_some_documents_is_not_swapped(ws: Workspace) -> None:
    with FakeAPI() as api:
        unknown(api, "gpt-nope")
        args = ["--provider", "openai", "--base-url", api.base_url, "--summarize-model", GOOD,
                "--entities-model", "gpt-nope", "--concurrency", "1"]  # fmt: skip
        halted = ws.cli("run", "in", *args)
        assert halted.popen.returncode == 3, halted.describe()
        [run_id] = ws.run_ids()
        answered = query(ws.db, "SELECT COUNT(*) AS n FROM steps WHERE step = 'summarize'"
                                " AND status = 'done'")[0]["n"]  # fmt: skip
        assert answered >= 1  # a document's entities step follows its summary

        refused = ws.cli("resume", run_id, "--model", "gpt-other")
        assert refused.popen.returncode == 2, refused.describe()
        assert f"{answered} summarize answer(s) from {GOOD}" in refused.stderr
        assert f"durabatch cancel {run_id}" in refused.stderr
        assert "--entities-model alone can still change" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert ws.status(run_id)["settings"]["entities_model"] == "gpt-nope"

        fixed = ws.cli("resume", run_id, "--entities-model", GOOD)  # nothing answered it yet
        assert fixed.popen.returncode == 0, fixed.describe()
    status = ws.status(run_id)
    assert status["documents"]["done"] == DOCS
    assert status["settings"]["summarize_model"] == GOOD
    assert changed(ws) == [{"entities_model": GOOD}]


def test_a_wrong_endpoint_halts_and_resume_with_the_right_one_finishes(ws: Workspace) -> None:
    with FakeAPI() as api:
        wrong = api.base_url.replace("/v1", "/api/v1")
        halted = ws.cli("run", "in", "--provider", "openai", "--base-url", wrong, "--model", GOOD)
        assert halted.popen.returncode == 3, halted.describe()
        assert "durabatch resume --base-url URL" in halted.stderr
        [run_id] = ws.run_ids()
        fixed = ws.cli("resume", run_id, "--base-url", api.base_url)
        assert fixed.popen.returncode == 0, fixed.describe()
        right = [r for r in api.completions() if r["path"] == "/v1/chat/completions"]
        assert len(right) == 2 * DOCS
    assert ws.status(run_id)["settings"]["base_url"] == api.base_url
    assert changed(ws) == [{"base_url": api.base_url}]


def budgeted(api: FakeAPI, model: str) -> list[str]:
    return ["run", "in", "--provider", "openai", "--base-url", api.base_url, "--model", model,
            "--max-cost", "5"]  # fmt: skip


def test_an_unknown_price_under_a_budget_is_given_in_the_toml_then_resumed(
    ws: Workspace,
) -> None:
    with FakeAPI() as api:
        halted = ws.cli(*budgeted(api, "mystery-model"))
        assert halted.popen.returncode == 3, halted.describe()
        assert api.completions() == []
        [run_id] = ws.run_ids()
        (ws.root / "durabatch.toml").write_text('[prices."mystery-model"]\ninput = 1\noutput = 2\n')
        fixed = ws.cli("resume", run_id)
        assert fixed.popen.returncode == 0, fixed.describe()
        assert len(api.completions()) == 2 * DOCS
    cost = ws.status(run_id)["cost"]
    assert float(cost["total_usd"]) > 0
    assert changed(ws) == [{"prices": {"mystery-model": {"input": 1, "output": 2}}}]
    assert ws.verify(run_id).popen.returncode == 0


def test_prices_from_a_file_on_resume_and_a_kept_price_stays(ws: Workspace) -> None:
    (ws.root / "first.toml").write_text('[prices."known-model"]\ninput = 1\noutput = 1\n')
    (ws.root / "later.toml").write_text(
        '[prices."known-model"]\ninput = 50\noutput = 50\n'
        '[prices."mystery-model"]\ninput = 3\noutput = 4\n'
    )
    with FakeAPI() as api:
        args = [*budgeted(api, "known-model"), "--summarize-model", "mystery-model",
                "--prices", "first.toml"]  # fmt: skip
        halted = ws.cli(*args)
        assert halted.popen.returncode == 3, halted.describe()
        [run_id] = ws.run_ids()
        fixed = ws.cli("resume", run_id, "--prices", "later.toml")
        assert fixed.popen.returncode == 0, fixed.describe()
    assert "keeps its price for known-model" in fixed.stderr
    prices = ws.status(run_id)["settings"]["prices"]
    assert prices == {"known-model": {"input": 1, "output": 1},
                      "mystery-model": {"input": 3, "output": 4}}  # fmt: skip
    charged = query(ws.db, "SELECT DISTINCT model, input_price FROM model_calls"
                           " WHERE cost_pico IS NOT NULL ORDER BY model")  # fmt: skip
    assert [(r["model"], r["input_price"]) for r in charged] == [
        ("known-model", "1"),
        ("mystery-model", "3"),
    ]


def test_a_changed_toml_never_swaps_the_model_of_a_run(ws: Workspace) -> None:
    with FakeAPI() as api:
        unknown(api, "gpt-nope")
        halted = ws.cli("run", "in", "--provider", "openai", "--base-url", api.base_url,
                        "--model", "gpt-nope")  # fmt: skip
        assert halted.popen.returncode == 3, halted.describe()
        (ws.root / "durabatch.toml").write_text(f'model = "{GOOD}"\n')
        again = ws.cli("resume")
        assert again.popen.returncode == 3, again.describe()
        assert GOOD not in models_asked(api)
    assert changed(ws) == []


def test_the_embedded_engine_has_no_model_to_change_and_says_an_endpoint_is_unused(
    ws: Workspace,
) -> None:
    with FakeAPI() as api:
        local = ws.cli("run", "in", "--base-url", api.base_url)  # --provider openai forgotten
        assert local.popen.returncode == 0, local.describe()
        assert f"base url {api.base_url}: not used, the provider is local" in local.stderr
        assert api.completions() == []
    store = open_store(str(ws.db))  # a local run, created but not yet processed
    run_id = store.create_run(Settings().run_settings() | {"cwd": str(ws.root)}, ["in"]).id
    store.close()
    refused = ws.cli("resume", run_id, "--model", GOOD)
    assert refused.popen.returncode == 2, refused.describe()
    assert "embedded engine (provider local)" in refused.stderr
    assert changed(ws) == []


def test_a_model_priced_by_the_shipped_table_is_not_repriced_by_a_later_toml(
    ws: Workspace,
) -> None:
    with FakeAPI() as api:
        args = [*budgeted(api, GOOD), "--price-provider", "gmi",  # GMI's table prices GOOD
                "--summarize-model", "mystery-model"]  # fmt: skip
        halted = ws.cli(*args)
        assert halted.popen.returncode == 3, halted.describe()
        [run_id] = ws.run_ids()
        (ws.root / "durabatch.toml").write_text(
            f'[prices."{GOOD}"]\ninput = 99\noutput = 99\n'
            '[prices."mystery-model"]\ninput = 3\noutput = 4\n'
        )
        fixed = ws.cli("resume", run_id)
        assert fixed.popen.returncode == 0, fixed.describe()
    assert f"keeps its price for {GOOD}" in fixed.stderr
    assert changed(ws) == [{"prices": {"mystery-model": {"input": 3, "output": 4}}}]
    charged = query(ws.db, "SELECT DISTINCT model, input_price FROM model_calls"
                           " WHERE cost_pico IS NOT NULL ORDER BY model")  # fmt: skip
    assert [(r["model"], r["input_price"]) for r in charged] == [
        (GOOD, "0.40"),
        ("mystery-model", "3"),
    ]


def test_prices_for_other_models_change_nothing_and_say_nothing() -> None:
    from durabatch import amend
    from durabatch.store.records import Run, RunStatus

    kept = Settings(provider="openai", base_url="http://127.0.0.1:9/v1", model="known-model",
                    prices={"known-model": {"input": 1, "output": 1}})  # fmt: skip
    run = Run("r1", RunStatus.HALTED, kept.run_settings(), [], "t0", "t0", 0, True)
    notes: list[str] = []
    given = {"other-model": {"input": 5, "output": 5}}  # a toml written for another run
    resumed = amend.for_resume(run, kept, {}, given, lambda step: 0, notes.append)
    assert resumed.prices == kept.prices and notes == []
    # the same model at another price: kept, and said
    resumed = amend.for_resume(run, kept, {}, {"known-model": {"input": 9, "output": 9}},
                               lambda step: 0, notes.append)  # fmt: skip
    assert resumed.prices == kept.prices and len(notes) == 1 and "keeps its price" in notes[0]
    # a new endpoint is every step's: no step flag is offered instead
    with pytest.raises(UsageError) as refused:
        amend.for_resume(run, kept, {"base_url": "http://127.0.0.1:8/v1"}, {},
                         lambda step: 1 if step == "summarize" else 0, notes.append)  # fmt: skip
    assert "alone can still change" not in refused.value.message
