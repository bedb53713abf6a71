"""What `resume` may change in the settings a run keeps, so that a halt (exit 3) can be
fixed and resumed, as the exit code promises:

- a model (``--model``, ``--summarize-model``, ``--entities-model``) or the endpoint
  (``--base-url``), given on the command line, while no step it answers has an answer
  kept (done, or a long document's saved parts): every document of a run is answered by
  one model. ``--model`` is the model of every step not named on its own in the same
  command. Only flags do this: a durabatch.toml or an environment that changed since the
  run started never swaps a run's model under it;
- a price (``[prices]`` in durabatch.toml, or ``--prices FILE``) for a model the run has
  no price of its own for. A price the run already has stays: the run's spend so far was
  counted at it.

The engine writes the changes down (a ``settings_changed`` event) once it owns the run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from durabatch.config import DEFAULTS, Settings
from durabatch.errors import UsageError
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
    given = {k: v for k, v in asked.items() if k in ENDPOINT and v}
    if given and kept.provider == "local":
        raise UsageError(
            f"run {run.id} runs on the embedded engine (provider local), which calls no "
            "model or endpoint: start a new run with --provider openai to use one"
        )
    changes: dict[str, Any] = {k: v for k, v in given.items() if v != getattr(kept, k)}
    if "model" in given:  # the model of every step, but for a step named on its own now
        changes |= {k: None for k in ("summarize_model", "entities_model")
                    if k not in given and getattr(kept, k)}  # fmt: skip
    new = replace(kept, **changes)
    for step in MODEL_STEPS:
        if new.model_for(step) == kept.model_for(step) and new.base_url == kept.base_url:
            continue
        count = answered(step)
        if count:
            flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())
            raise UsageError(
                f"run {run.id} already has {count} {step} answer(s) from "
                f"{kept.model_for(step)}, and every document of a run is answered by one "
                f"model, so `{flags}` cannot apply to it; start a new run with it "
                f"(`durabatch cancel {run.id}` first: the new run reuses the text already "
                "extracted)"
            )
    added = {name: price for name, price in prices.items()
             if name.lower() not in {kept_name.lower() for kept_name in kept.prices}}  # fmt: skip
    for name, price in prices.items():
        own = next((v for k, v in kept.prices.items() if k.lower() == name.lower()), None)
        if own is not None and own != price:
            note(f"run {run.id} keeps its own price for {name} ({own}), not {price}: its spend "
                 "so far was counted at it; start a new run to use another")  # fmt: skip
    if added:
        new = replace(new, prices={**kept.prices, **added})
    return new
