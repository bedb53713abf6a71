"""Never pay twice across runs: a model step with the same inputs reuses its answer."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeAPI
from typer.testing import CliRunner

from durabatch.cli import app
from durabatch.formats import SUFFIXES
from durabatch.steps import extract

runner = CliRunner()


@pytest.fixture
def api() -> Any:
    with FakeAPI() as server:
        yield server


def run(api: FakeAPI, *extra: str, model: str = "gpt-5.4-mini") -> str:
    result = runner.invoke(app, ["run", "docs", "--provider", "openai", "--base-url",
                                 api.base_url, "--model", model, "--price-provider", "gmi",
                                 *extra])  # fmt: skip
    assert result.exit_code == 0, result.output
    return str(result.stdout.splitlines()[0])


def export(run_id: str) -> dict[str, Any]:
    lines = runner.invoke(app, ["export", run_id]).stdout.splitlines()
    return {r["path"]: (r["summary"], r["entities"]) for r in map(json.loads, lines)}


def cost(run_id: str) -> dict[str, Any]:
    return dict(json.loads(runner.invoke(app, ["cost", run_id, "--json"]).stdout,
                           parse_float=Decimal))  # fmt: skip


@pytest.fixture(autouse=True)
def docs() -> None:
    Path("docs").mkdir()
    for n in range(1, 5):
        Path(f"docs/d{n}.txt").write_text(f"DOC-{n} The harbour board met on {n} May 2025.")


def test_a_second_run_over_the_same_files_pays_nothing(api: FakeAPI) -> None:
    first = run(api)
    paid = len(api.completions())
    assert paid == 8
    second = run(api)
    assert len(api.completions()) == paid
    assert export(second) == export(first)
    saved = cost(second)["saved_by_cache"]
    assert saved["steps"] == 8
    assert saved["cost_usd"] == cost(first)["useful"]["cost_usd"] == 8 * Decimal("0.00009")
    assert cost(second)["total"]["calls"] == 0
    assert runner.invoke(app, ["verify", second]).exit_code == 0


def test_no_cache_pays_again(api: FakeAPI) -> None:
    run(api)
    run(api, "--no-cache")
    assert len(api.completions()) == 16


def test_only_changed_files_and_other_models_are_paid_for(api: FakeAPI) -> None:
    run(api)
    Path("docs/d2.txt").write_text("DOC-2 The board changed its mind in June.")
    run(api)
    assert len(api.completions()) == 8 + 2  # d2's summary and entities
    run(api, model="another-model")
    assert len(api.completions()) == 10 + 8


def test_another_server_is_another_answer(api: FakeAPI) -> None:
    run(api)
    with FakeAPI() as other:
        run(other)
        assert len(other.completions()) == 8


# each name's extension as Path(...).suffix gave it up to Python 3.13 (3.14 reads "a." as ".")
SUFFIXES_OF = {"a.txt": ".txt", "B.PDF": ".PDF", "archive.tar.gz": ".gz", ".bashrc": "",
               ".hidden.md": ".md", "a.": "", "a..": "", "..": "", "...": "", "..foo": ".foo",
               "noext": "", "dir.d/file": "", "a.b.": "", "é.Html": ".Html",
               "x\udcff.docx": ".docx", "dir.d/.x": ""}  # fmt: skip


@pytest.mark.parametrize("name", SUFFIXES_OF)
@pytest.mark.parametrize("engine", ["pypdf", "pdfium"])
def test_a_files_extension_is_read_as_pathlib_read_it(name: str, engine: str) -> None:
    """The extraction's key takes the extension from the path as text, not from a Path:
    it must be the extension pathlib gave, or text kept by earlier versions (their keys
    made with pathlib) would no longer be found."""
    source = f"/docs/{name}"
    assert extract.suffix_of(source) == SUFFIXES_OF[name]
    suffix = SUFFIXES_OF[name].lower()  # as earlier versions read it
    pdf = engine != "pypdf" and SUFFIXES.get(suffix, "pdf") == "pdf"
    version = f"{extract.EXTRACTOR_VERSION}+{engine}" if pdf else extract.EXTRACTOR_VERSION
    assert extract.extractor_version(source, engine) == version
    earlier = json.dumps(["ab" * 32, "extract", version, suffix]).encode()
    assert extract.content_key("ab" * 32, source, engine) == hashlib.sha256(earlier).hexdigest()
