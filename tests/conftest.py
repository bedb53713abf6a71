"""Shared fixtures: a clean environment for every test, the sample documents, and a
workspace for tests that drive the installed command in subprocesses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from crashkit import Workspace

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = ROOT / "sample_docs"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine running the tests; no durabatch.toml either."""
    for name in list(os.environ):
        if name.startswith(("DURABATCH_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sample_docs() -> Path:
    return SAMPLE_DOCS


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    """A database and logs in ``tmp_path``; whatever a test started is killed after it."""
    workspace = Workspace(tmp_path)
    yield workspace
    workspace.cleanup()
