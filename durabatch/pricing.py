"""Tokens to dollars, from the price table shipped with the package.

Prices are per one million tokens. A model missing from the table has an
unknown price: its cost is ``None``, shown as unknown, never as zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Price:
    input: float
    output: float


class PriceTable:
    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = {name.lower(): price for name, price in prices.items()}

    @classmethod
    def shipped(cls, overrides: Mapping[str, Price] | None = None) -> PriceTable:
        raw = json.loads(resources.files("durabatch").joinpath("data/prices.json").read_text())
        prices = {
            name: Price(float(value["input"]), float(value["output"]))
            for name, value in raw.items()
            if not name.startswith("_")
        }
        prices.update(overrides or {})
        return cls(prices)

    def price(self, model: str) -> Price | None:
        return self._prices.get(model.lower())

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        price = self.price(model)
        if price is None:
            return None
        return (input_tokens * price.input + output_tokens * price.output) / PER_TOKENS
