"""Unit prices for a call, and where they came from.

A price is looked up once per (provider, model), in this order:

1. the user's prices (``[prices]`` in durabatch.toml, or ``--prices FILE``);
2. the table shipped with durabatch (``data/prices.json``), for providers the
   library below lacks, such as GMI Cloud;
3. the offline snapshot bundled with ``genai-prices`` (never auto-updated:
   nothing is fetched at run time).

The provider is ``--price-provider`` when given, else guessed from the base
URL's host. A rate nobody knows stays ``None``: the cost of a call that needs
it is unknown, shown as unknown, never as zero. Each call row keeps the rates
it was charged at and their source, so a later price change rewrites nothing.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from durabatch.errors import UsageError

PER_TOKENS = Decimal(1_000_000)
HOSTS = {"api.gmi-serving.com": "gmi"}  # providers genai-prices does not know by URL


@dataclass(frozen=True)
class Price:
    """Dollars per one million tokens; None where the rate is not known."""

    input: Decimal | None
    output: Decimal | None
    cached_input: Decimal | None = None
    source: str = ""

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> Decimal | None:
        cached = min(cached_tokens, input_tokens)
        cached_rate = self.cached_input if self.cached_input is not None else self.input
        parts = ((input_tokens - cached, self.input), (cached, cached_rate),
                 (output_tokens, self.output))  # fmt: skip
        if any(tokens and rate is None for tokens, rate in parts):
            return None
        return sum((tokens * (rate or 0) for tokens, rate in parts), Decimal(0)) / PER_TOKENS


FREE = Price(Decimal(0), Decimal(0), Decimal(0), "local engine: free")


def parse_prices(raw: Mapping[str, Any], source: str) -> dict[str, Price]:
    """``{"model" or "provider/model": {"input": .., "output": .., "cached_input": ..}}``."""
    prices = {}
    for name, rates in raw.items():
        if name.startswith("_"):
            continue
        if not isinstance(rates, Mapping):
            raise UsageError(
                f"{source}: the price of {name} must be a table like "
                "{input = 0.40, output = 2.50} (dollars per 1M tokens)"
            )
        prices[name.lower()] = Price(
            _rate(rates.get("input")),
            _rate(rates.get("output")),
            _rate(rates.get("cached_input")),
            source,
        )
    return prices


def _rate(value: Any) -> Decimal | None:
    try:
        rate = None if value is None else Decimal(str(value))
    except ArithmeticError as exc:
        raise UsageError(f"price {value!r} is not a number of dollars per 1M tokens") from exc
    if rate is not None and not (rate.is_finite() and rate >= 0):  # a budget counts up
        raise UsageError(f"price {value!r} must be 0 or more dollars per 1M tokens")
    return rate


def read_price_file(path: Path) -> dict[str, Any]:
    """A --prices file: TOML or JSON, ``{model: {input, output, cached_input}}``."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read prices from {path}: {exc}") from exc
    prices = data.get("prices", data)
    parse_prices(prices, str(path))  # fail now, not at the first call
    return dict(prices)


class PriceBook:
    def __init__(self, user: Mapping[str, Price] | None = None,
                 provider: str | None = None) -> None:  # fmt: skip
        self.user = dict(user or {})
        self.provider = provider
        raw = json.loads(resources.files("durabatch").joinpath("data/prices.json").read_text())
        self.shipped = {
            provider_id: parse_prices(models, f"durabatch table ({provider_id})")
            for provider_id, models in raw.items()
            if not provider_id.startswith("_")
        }
        self._cache: dict[tuple[str, str, str], Price | None] = {}

    def price(self, engine: str, host: str | None, model: str) -> Price | None:
        """The rates for one call of ``model`` made by ``engine`` to ``host``."""
        if engine == "local":
            return FREE
        key = (engine, host or "", model)
        if key not in self._cache:
            self._cache[key] = self._look_up(host, model)
        return self._cache[key]

    def _look_up(self, host: str | None, model: str) -> Price | None:
        provider = self.provider or HOSTS.get(host or "")
        names = [model.lower(), model.lower().rsplit("/", 1)[-1]]
        for name in names:
            for key in ([f"{provider}/{name}"] if provider else []) + [name]:
                if key in self.user:
                    return self.user[key]
        table = self.shipped.get(provider or "", {})
        for name in names:
            if name in table:
                return table[name]
        return _library_price(model, provider, host)


def _library_price(model: str, provider: str | None, host: str | None) -> Price | None:
    from genai_prices import Usage, __version__, calc_price

    where: dict[str, Any] = {"provider_id": provider} if provider else {}
    if not where and host:
        where["provider_api_url"] = f"https://{host}"
    if not where:
        return None  # never guess a provider from the model name alone

    def rate(**usage: int) -> tuple[Decimal, str]:
        # priced at an ordinary call's size, so a tiered price takes its usual tier
        found = calc_price(Usage(**usage), model, **where)
        return (found.input_price + found.output_price) * 1000, found.provider.id

    try:
        input_rate, provider_id = rate(input_tokens=1000)
        output_rate, _ = rate(output_tokens=1000)
        cached_rate, _ = rate(input_tokens=1000, cache_read_tokens=1000)
    except (LookupError, ValueError):
        return None
    source = f"genai-prices {__version__} snapshot ({provider_id})"
    return Price(input_rate, output_rate, cached_rate, source)
