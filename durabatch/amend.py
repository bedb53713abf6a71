"""What `resume` may change in the settings a run keeps, so that a halt (exit 3) can be
fixed and resumed, as the exit code promises:

- a model (``--model``, ``--summarize-model``, ``--entities-model``) or the endpoint
  (``--base-url``), given on the command line, while no step it answers has an answer
  kept (done, or a long document's saved parts): every document of a run is answered by
  one model. ``--model`` is the model of every step not named on its own in the same
  command. Only flags do this: a durabatch.toml or an environment that changed since the
  run started never swaps a run's model under it;
- a price (``[prices]`` in durabatch.toml, or ``--prices FILE``) for a model the run
  cannot price: none of its own, none in the shipped table, or a rate of it unknown. A
  price the run already has stays: the run's spend so far was counted at it.

The engine writes the changes down (a ``settings_changed`` event) once it owns the run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from durabatch.config import DEFAULTS, Settings
from durabatch.errors import UsageError
from durabatch.pricing import Price, PriceBook, parse_prices
from durabatch.store.records import MODEL_STEPS, Run

# the settings a session may change in a run it owns (the engine records each change)
AMENDABLE = ("max_cost", "model", "summarize_model", "entities_model", "base_url", "prices")
ENDPOINT = ("model", "summarize_model", "entities_model", "base_url")


def changes(settings: Settings, stored: Mapping[str, Any]) -> dict[str, Any]:
    """The amendable settings that differ from those stored with the run (a key missing
    there, from a run made before it existed, stands for its default)."""
    return {
        key: value
        for key in AMENDABLE
        if (value := getattr(settings, key)) != stored.get(key, getattr(DEFAULTS, key))
    }


def for_resume(
    run: Run,
    kept: Settings,
    asked: Mapping[str, str | None],
    prices: Mapping[str, Any],
    answered: Callable[[str], int],
    note: Callable[[str], None],
) -> Settings:
    """``kept``: the run's own settings; ``asked``: the model and endpoint flags given to
    resume; ``prices``: the user's prices now; ``answered(step)``: how many of the run's
    documents have an answer kept for that step. Returns the settings to resume with."""
    new = _endpoint(run, kept, {k: v for k, v in asked.items() if k in ENDPOINT and v}, answered)
    added = _missing_prices(run, kept, new, prices, note)
    return replace(new, prices={**kept.prices, **added}) if added else new


def _endpoint(run: Run, kept: Settings, given: Mapping[str, str],
              answered: Callable[[str], int]) -> Settings:  # fmt: skip
    """The run with the models and endpoint ``given``, if no answer it keeps is from the
    ones they replace."""
    if given and kept.provider == "local":
        raise UsageError(
            f"run {run.id} runs on the embedded engine (provider local), which calls no "
            "model or endpoint: start a new run with --provider openai to use one"
        )
    swap: dict[str, Any] = {k: v for k, v in given.items() if v != getattr(kept, k)}
    if "model" in given:  # the model of every step, but for a step named on its own now
        swap |= {k: None for k in ("summarize_model", "entities_model")
                 if k not in given and getattr(kept, k)}  # fmt: skip
    new = replace(kept, **swap)
    moved = [step for step in MODEL_STEPS if new.base_url != kept.base_url
             or new.model_for(step) != kept.model_for(step)]  # fmt: skip
    counts = {step: answered(step) for step in moved}
    for step, count in counts.items():
        if not count:
            continue
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())
        # a step's own model can still change; a new endpoint is every step's
        free = [] if "base_url" in swap else [f"--{other}-model" for other, n in counts.items()
                                              if not n]  # fmt: skip
        alone = f"; {' and '.join(free)} alone can still change" if free else ""
        raise UsageError(
            f"run {run.id} already has {count} {step} answer(s) from {kept.model_for(step)}, "
            f"and every document of a run is answered by one model, so `{flags}` cannot "
            f"apply to it{alone}; or start a new run (`durabatch cancel {run.id}` first: "
            "the new run reuses the text already extracted)"
        )
    return new


def _missing_prices(run: Run, kept: Settings, new: Settings, prices: Mapping[str, Any],
                    note: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """The user's prices for the models the run would call with no price at all (not its
    own, not the shipped table's); a different price for a model it does price is noted."""
    if new.provider == "local" or not prices:
        return {}
    host = urlsplit(new.base_url).hostname if new.base_url else None
    own = PriceBook(parse_prices(kept.prices, "the run's prices"), kept.price_provider)
    offered = PriceBook(parse_prices(prices, "your prices"), kept.price_provider)
    added: dict[str, Any] = {}
    for model in sorted({new.model_for(step) for step in MODEL_STEPS}):
        has, given = own.price(new.provider, host, model), offered.price(new.provider, host, model)
        names = {model.lower(), model.lower().rsplit("/", 1)[-1]}
        entries = {k: v for k, v in prices.items() if k.lower().rsplit("/", 1)[-1] in names}
        if given is None or not entries:  # the user gave no price for this model
            continue
        if not _complete(has):  # unknown, or a rate of it unknown: calls would be blind
            added |= entries
        elif _rates(given) != _rates(has):
            note(f"run {run.id} keeps its price for {model} ({has.source}), not yours: its "
                 "spend so far was counted at it; start a new run to use another")  # fmt: skip
    return added


def _complete(price: Price | None) -> TypeGuard[Price]:
    return price is not None and price.input is not None and price.output is not None


def _rates(price: Price) -> tuple[Any, ...]:
    return price.input, price.output, price.cached_input
