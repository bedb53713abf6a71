"""Prices: user first, then the shipped table, then genai-prices' offline snapshot."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from fakeapi import FakeAPI
from typer.testing import CliRunner

from durabatch.cli import app
from durabatch.errors import UsageError
from durabatch.pricing import FREE, Price, PriceBook, parse_prices, read_price_file


def test_the_local_engine_is_free_and_says_so() -> None:
    assert PriceBook().price("local", None, "anything") == FREE
    assert FREE.cost(1000, 1000) == 0 and "free" in FREE.source


def test_gmi_rates_come_from_the_shipped_table() -> None:
    price = PriceBook().price("openai", "api.gmi-serving.com", "openai/gpt-5.4-mini")
    assert price == Price(Decimal("0.40"), Decimal("2.50"), None, "durabatch table (gmi)")
    assert price.cost(1_000_000, 1_000_000) == Decimal("2.90")


def test_a_rate_nobody_knows_makes_the_cost_unknown_not_zero() -> None:
    price = PriceBook(provider="gmi").price("openai", "127.0.0.1", "DeepSeek-V4-Pro")
    assert price is not None and price.output is None
    assert price.cost(1000, 0) == Decimal("0.00139")
    assert price.cost(1000, 1) is None


def test_known_providers_come_from_genai_prices_offline_snapshot() -> None:
    price = PriceBook().price("openai", "api.openai.com", "gpt-4o-mini")
    assert price is not None and price.source.startswith("genai-prices")
    assert price.input == Decimal("0.15") and price.output == Decimal("0.6")
    # cached input is cheaper where the API reports it
    assert price.cached_input is not None and price.cached_input < price.input
    assert price.cost(1000, 0, cached_tokens=1000) < price.cost(1000, 0)  # type: ignore[operator]


def test_a_local_server_is_never_priced_by_guessing_from_the_model_name() -> None:
    assert PriceBook().price("openai", "127.0.0.1", "gpt-4o-mini") is None


def test_user_prices_win_and_can_name_a_provider() -> None:
    user = parse_prices({"gmi/gpt-5.4-mini": {"input": 0.1, "output": 0.2}}, "your prices")
    price = PriceBook(user, "gmi").price("openai", None, "gpt-5.4-mini")
    assert price == Price(Decimal("0.1"), Decimal("0.2"), None, "your prices")


def test_a_bad_price_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a number"):
        parse_prices({"m": {"input": "cheap"}}, "x")
    path = tmp_path / "p.toml"
    path.write_text('[prices."my-model"]\ninput = 0.5\noutput = 1.5\n')
    assert read_price_file(path) == {"my-model": {"input": 0.5, "output": 1.5}}


def test_a_price_that_is_not_a_table_is_refused_before_a_run(tmp_path: Path) -> None:
    Path("docs").mkdir()
    Path("docs/a.txt").write_text("Alpha beta gamma. Delta epsilon.")
    Path("durabatch.toml").write_text('[prices]\nlocal = "free"\n')
    result = CliRunner().invoke(app, ["run", "docs"])
    assert result.exit_code == 2 and "must be a table" in result.stderr
    assert not Path("durabatch.db").exists()


def test_a_prices_file_reaches_the_call_rows(tmp_path: Path) -> None:
    Path("docs").mkdir()
    Path("docs/a.txt").write_text("Alpha beta gamma. Delta epsilon.")
    Path("p.json").write_text(json.dumps({"gpt-5.4-mini": {"input": "1", "output": "2"}}))
    with FakeAPI() as api:
        result = CliRunner().invoke(app, ["run", "docs", "--provider", "openai", "--base-url",
                                          api.base_url, "--model", "gpt-5.4-mini",
                                          "--prices", "p.json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with sqlite3.connect("durabatch.db") as conn:
        rows = conn.execute("SELECT input_price, output_price, price_source, cost_pico,"
                            " input_tokens, output_tokens FROM model_calls").fetchall()  # fmt: skip
    assert len(rows) == 2
    for input_price, output_price, source, cost, tokens_in, tokens_out in rows:
        assert (input_price, output_price, source) == ("1", "2", "your prices")
        assert cost == (tokens_in * 1 + tokens_out * 2) * 10**6  # picodollars, exactly
