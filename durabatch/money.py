"""Dollars, exactly.

Costs are ``Decimal`` in Python and whole picodollars (10^-12 USD) in the
database, so SQL sums are integer sums: a run's total is exactly the sum of its
calls, with no float drift. A call's cost is tokens x (dollars per 1M tokens) /
10^6, so any rate with up to six decimal places is stored exactly; finer rates
are rounded half-even to the picodollar. A 64-bit sum holds $9.2 million.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any


def to_pico(dollars: Decimal | None) -> int | None:
    if dollars is None:
        return None
    return int(dollars.scaleb(12).to_integral_value(ROUND_HALF_EVEN))


def from_pico(pico: int | None) -> Decimal | None:
    return None if pico is None else Decimal(pico).scaleb(-12).normalize()


def as_json(value: Any) -> Any:
    """``json.dumps(default=...)``: a Decimal becomes the JSON number with its digits."""
    if isinstance(value, Decimal):
        # the shortest float repr: exact up to 15 significant digits (a picodollar
        # amount below $1,000); beyond that the last digits round, only in this output
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def text(dollars: Decimal | None) -> str | None:
    """Plain decimal text for an event's data (never exponent notation)."""
    return None if dollars is None else format(dollars, "f")


def parse(value: str | float | None) -> Decimal | None:
    """Dollars written in an event: decimal text, or a float in older events, which
    rounding to the picodollar brings back to the exact amount."""
    return None if value is None else from_pico(to_pico(Decimal(str(value))))


def digits(dollars: Decimal) -> str:
    """Dollars to at least four decimals, and to the first that differs from zero below a
    cent (a held amount of $0.00603 against $0.006 left must not read "$0.0060")."""
    exponent = dollars.normalize().as_tuple().exponent
    places = -exponent if isinstance(exponent, int) else 0  # (not NaN or infinity)
    return f"{dollars:.{min(max(places, 4), 8)}f}"
