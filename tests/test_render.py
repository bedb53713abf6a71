"""What people see: plain log lines under cron, Rich progress on a terminal, NO_COLOR."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from durabatch.render import PlainObserver, RichObserver, run_detail, stderr_console
from durabatch.store.records import Counts, DocStatus, Document, Run, RunStatus, Step, Work

ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def work(path: str = "docs/a.pdf") -> Work:
    doc = Document(1, "r1", 1, path, "/" + path, 10, None, DocStatus.RUNNING, Step.EXTRACT,
                   None, None)  # fmt: skip
    return Work(doc, Step.EXTRACT, 1)


RUN = Run("r1", RunStatus.RUNNING, {}, [], "t0", "t0", 0, True)


def test_plain_lines_are_timestamped_and_carry_the_run_id() -> None:
    out = io.StringIO()
    observer = PlainObserver("r1", out)
    observer.started(RUN, Counts(total=2, pending=2))
    observer.step_done(work(), "malformed: cannot read", DocStatus.FAILED)
    observer.step_done(work("docs/b.txt"), "", None)  # a step in the middle: no line
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.match(stamp + r" run=r1 started: 2 documents known, 2 to do$", lines[0])
    assert re.match(stamp + r" run=r1 failed docs/a.pdf \(malformed: cannot read\)$", lines[1])


@pytest.mark.parametrize("no_color", [False, True])
def test_rich_progress_prints_failures_and_honours_no_color(
    monkeypatch: pytest.MonkeyPatch, no_color: bool
) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    observer = RichObserver(console)
    observer.started(RUN, Counts(total=2, pending=2))
    observer.step_done(work(), "malformed: cannot read", DocStatus.FAILED)
    observer.close()
    text = out.getvalue()
    assert "failed docs/a.pdf: malformed: cannot read" in ESCAPE.sub("", text)
    has_colour = "\x1b[31m" in text
    assert has_colour is not no_color


def test_run_detail_names_counts_and_unknown_cost() -> None:
    summary = {
        "run_id": "r1", "status": "running", "interruptions": 2, "owner": None,
        "documents": {"total": 3, "done": 1, "failed": 1, "skipped": 0, "pending": 1,
                      "running": 0},
        "cost": {"total_usd": None}, "steps": {"extract": {"done": 2, "failed": 1}},
        "sessions": [], "failures": [{"path": "a.pdf", "status": "failed", "step": "extract",
                                      "reason": "encrypted", "error": "decrypt it"}],
    }  # fmt: skip
    out = io.StringIO()
    console = stderr_console(out)
    for part in run_detail(summary):
        console.print(part)
    text = out.getvalue()
    for words in ("run r1: running", "interruptions survived", "unknown", "encrypted",
                  "decrypt it", "extract"):  # fmt: skip
        assert words in text
