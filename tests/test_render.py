"""What people see: plain log lines under cron, Rich progress on a terminal, NO_COLOR."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
from rich.console import Console

from durabatch.render import PlainObserver, RichObserver, run_detail, run_table, stderr_console
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


class Writes(io.StringIO):
    """Counts the writes that reach the stream."""

    count = 0

    def write(self, text: str) -> int:
        self.count += 1
        return super().write(text)


def test_plain_lines_for_a_commits_finished_documents_go_out_in_one_write() -> None:
    out = Writes()
    observer = PlainObserver("r1", out)
    observer.finished([work("docs/a.txt"), work("docs/evil\nname.txt"), work("docs/c.md")])
    lines = out.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert [re.sub(stamp, "T", line) for line in lines] == [
        "T run=r1 done docs/a.txt",
        "T run=r1 done docs/evil\\nname.txt",  # a newline in a name is written out
        "T run=r1 done docs/c.md",
    ]
    assert out.count == 1


def test_rich_progress_counts_a_commits_finished_documents() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    observer = RichObserver(console)
    observer.started(RUN, Counts(total=5, pending=5))
    observer.finished([work("docs/a.txt"), work("docs/b.txt")])
    observer.finished([work("docs/c.txt")])
    assert observer.progress.tasks[0].completed == 3
    observer.close()


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


def test_the_runs_table_keeps_status_progress_and_cost_whole_at_80_columns() -> None:
    runs = [{"run_id": "20261127T080332-1a15d6", "status": "interrupted", "interruptions": 3,
             "documents": {"done": 290, "total": 300, "failed": 0, "skipped": 0, "pending": 10,
                           "running": 0},
             "cost": {"total_usd": Decimal("12.50")}}]  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(run_table(runs))
    row = next(line for line in out.getvalue().splitlines() if "20261127T080332" in line)
    for whole in ("20261127T080332-1a15d6", "interrupted", "290/300", "$12.50"):
        assert whole in row, out.getvalue()
