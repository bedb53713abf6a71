"""How runs look to people: Rich on a terminal, plain timestamped lines under cron.

Results go to stdout; progress, notes and errors to stderr. Rich honours
``NO_COLOR`` by itself.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from durabatch.clock import now_iso
from durabatch.store.records import Counts, DocStatus, Run, RunStatus, Step, Work

PIPED_WIDTH = 132  # tables in logs and pipes need not fit an 80-column terminal


def stdout_console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)


def stderr_console(file: TextIO | None = None) -> Console:
    return Console(file=file, stderr=file is None, highlight=False, soft_wrap=True)


# control characters and the marks that reorder text on screen (bidi overrides)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """Text from a file name or an error as one safe line: a newline, an escape
    sequence or a right-to-left override in a name is written out, never obeyed."""
    return _UNSAFE.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


def cell(text: str | None) -> str:
    """``shown`` text in a Rich table or markup line: brackets in a name are not markup."""
    return escape(shown(text or ""))


def note(text: str) -> None:
    """A note on stderr (what a re-delivery or a withdrawal did) as one safe line: a
    name in it is shown, never obeyed, and its brackets are not markup."""
    stderr_console().print(shown(text), markup=False)


class PlainObserver:
    """One timestamped line per event that matters, with the run id: grep-able cron logs."""

    def __init__(self, run_id: str, out: TextIO | None = None) -> None:
        self.run_id = run_id
        self.out = out or sys.stderr

    def _line(self, text: str) -> None:
        self._lines([text])

    def _lines(self, texts: Sequence[str]) -> None:
        """Written at once: each write gives up the GIL, and the run's writer thread then
        waits to get it back."""
        at = now_iso()
        self.out.write("".join(f"{at} run={self.run_id} {shown(text)}\n" for text in texts))
        self.out.flush()

    def finished(self, works: Sequence[Work]) -> None:
        self._lines([f"done {work.document.path}" for work in works])

    def started(self, run: Run, counts: Counts) -> None:
        if run.discovered:
            self._line(f"started: {counts.total} documents known, {counts.unfinished} to do")
        elif counts.total:  # a resume of a run whose walk was cut short
            self._line(f"started: {counts.total} documents known so far; discovering the rest")
        else:
            self._line("started: discovering documents")

    def discovered(self, total: int) -> None:
        self._line(f"discovered {total} documents")

    def step_done(self, work: Work, detail: str, finished: DocStatus | None) -> None:
        if finished is not None:
            tail = f" ({detail})" if detail else ""
            self._line(f"{finished.value} {work.document.path}{tail}")
        elif detail:
            self._line(f"retrying {work.step} of {work.document.path}: {detail}")

    def note(self, message: str) -> None:
        self._line(message)

    def close(self) -> None:
        return None


class RichObserver:
    """A progress bar over documents, with failures printed above it as they happen."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("documents", total=None, failed=0)
        self.failed = 0

    def started(self, run: Run, counts: Counts) -> None:
        done = counts.done + counts.failed + counts.skipped
        self.failed = counts.failed
        total = counts.total if run.discovered else None
        self.progress.update(self.task, total=total, completed=done, failed=self.failed)
        self.progress.start()

    def discovered(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def step_done(self, work: Work, detail: str, finished: DocStatus | None) -> None:
        if finished is None:
            return
        if finished != DocStatus.DONE:
            self.failed += finished == DocStatus.FAILED
            colour = "red" if finished == DocStatus.FAILED else "yellow"
            self.console.print(
                f"[{colour}]{finished.value}[/] {cell(work.document.path)}: {cell(detail)}",
                markup=True,
            )
        self.progress.update(self.task, advance=1, failed=self.failed)

    def finished(self, works: Sequence[Work]) -> None:
        self.progress.update(self.task, advance=len(works))

    def note(self, message: str) -> None:
        self.console.print(shown(message), markup=False)

    def close(self) -> None:
        self.progress.stop()


def run_table(runs: list[dict[str, Any]]) -> Table:
    rows = [_run_row(run) for run in runs]
    table = Table(title="durabatch runs")
    # what matters never shrinks on a narrow terminal (80 columns): the run, its status,
    # how far it got and its cost; the other counts give way first
    for index, name in enumerate(("run", "status", "done", "failed", "skipped", "left",
                                  "cost", "interrupted")):  # fmt: skip
        kept = name in ("run", "status", "done", "cost")
        widest = max((len(row[index]) for row in rows), default=0)
        table.add_column(name, justify="left" if index < 2 else "right", no_wrap=kept,
                         min_width=max(widest, len(name)) if kept else None)  # fmt: skip
    for row in rows:
        table.add_row(*row)
    return table


def _run_row(run: dict[str, Any]) -> tuple[str, ...]:
    docs = run["documents"]
    return (run["run_id"], run["status"], f"{docs['done']}/{docs['total']}", str(docs["failed"]),
            str(docs["skipped"]), str(docs["pending"] + docs["running"]),
            dollars(run["cost"]["total_usd"]), str(run["interruptions"]))  # fmt: skip


def run_detail(summary: dict[str, Any], *, full: bool = True) -> list[Any]:
    """The renderables that describe one run: counts, steps, sessions, cost, failures."""
    docs = summary["documents"]
    head = Table(title=f"run {summary['run_id']}: {summary['status']}", show_header=False)
    head.add_column("what")
    head.add_column("value")
    for name in ("total", "done", "failed", "skipped", "pending", "running"):
        head.add_row(f"documents {name}", str(docs[name]))
    head.add_row("interruptions survived", str(summary["interruptions"]))
    head.add_row("cost", dollars(summary["cost"]["total_usd"]))
    deliveries = summary.get("deliveries") or {}
    if deliveries:
        head.add_row("deliveries", ", ".join(f"{n} {k}" for k, n in sorted(deliveries.items())))
    owner = summary["owner"]
    if owner:
        head.add_row("owner", f"pid {owner['pid']} on {owner['host']} since {owner['since']}")
    elif summary["status"] == RunStatus.RUNNING:  # its process was killed, or never started
        if summary.get("cancel_requested"):
            head.add_row("owner", "none alive; its cancel was asked for: it is not resumed")
        else:
            head.add_row("owner", "none alive: `durabatch resume` continues the run")
    parts: list[Any] = [head]
    if full:
        parts += [_steps_table(summary["steps"]), _sessions_table(summary)]
    if summary["failures"]:
        parts.append(failures_table(summary["failures"]))
    return parts


def _steps_table(by_step: dict[str, dict[str, int]]) -> Table:
    table = Table(title="steps")
    table.add_column("step")
    for name in ("done", "failed", "running", "abandoned"):
        table.add_column(name)
    for step in Step:
        if step == Step.DELIVER and step.value not in by_step:
            continue  # a run without --deliver-to has no deliver step
        counts = by_step.get(step.value, {})
        table.add_row(step.value, *(str(counts.get(n, 0)) for n in
                                    ("done", "failed", "running", "abandoned")))  # fmt: skip
    return table


def _sessions_table(summary: dict[str, Any]) -> Table:
    table = Table(title="sessions")
    for name in ("host", "pid", "started", "ended", "how it ended"):
        table.add_column(name)
    # a session that never ended, of a run nobody owns: its process died (lost, once a
    # resume takes over and writes it down)
    unended = "running" if summary["owner"] else "gone (not yet taken over)"
    for session in summary["sessions"]:
        table.add_row(session["host"], str(session["pid"]), session["started_at"],
                      session["ended_at"] or "", session["outcome"] or unended)  # fmt: skip
    return table


def failures_table(failures: list[dict[str, Any]]) -> Table:
    table = Table(title="documents that did not finish")
    for name in ("path", "status", "step", "reason", "what to do"):
        table.add_column(name, overflow="fold")
    for row in failures:
        table.add_row(cell(row["path"]), row["status"], row["step"] or "", row["reason"],
                      cell(row["error"]))  # fmt: skip
    return table


def dollars(value: Decimal | None) -> str:
    if value is None:
        return "unknown"
    if 0 < value < Decimal("0.01"):
        return f"${value:.6f}".rstrip("0")
    return f"${value:.4f}" if 0 < value < 1 else f"${value:,.2f}"


def cost_views(report: dict[str, Any]) -> list[Any]:
    """The cost report as tables: where the money went, and what was wasted or saved."""
    head = Table(title=f"cost of run {report['run_id']} ({report['status']})")
    for name in ("", "calls", "input tokens", "output tokens", "dollars"):
        head.add_column(name, justify="right" if name else "left")
    for label, key in (("total", "total"), ("useful (committed)", "useful"),
                       ("wasted (failed, retried, redone)", "wasted"),
                       ("  of which lost in flight", "lost_in_flight"),
                       ("saved by resume", "saved_by_resume")):  # fmt: skip
        head.add_row(label, *_spend_cells(report[key]))
    if report.get("cancelled_work") is not None:
        head.add_row("cost of cancelled work", *_spend_cells(report["cancelled_work"]))
    cache = report["saved_by_cache"]
    head.caption = (
        f"interruptions survived: {report['interruptions']}; saved by cache: "
        f"{cache['steps']} steps, {dollars(cache['cost_usd'])}; extractions reused: "
        f"{cache['extractions']}"
    )
    parts: list[Any] = [head]
    for title, key, label in (("by model", "by_model", "model"), ("by step", "by_step", "step"),
                              ("top documents", "top_documents", "path")):  # fmt: skip
        table = Table(title=title)
        for name in (label, "calls", "input tokens", "output tokens", "dollars"):
            table.add_column(name, justify="left" if name == label else "right")
        for row in report[key]:
            table.add_row(cell(str(row.get(label) or "")), *_spend_cells(row))
        parts.append(table)
    return parts


def _spend_cells(row: dict[str, Any]) -> list[str]:
    dollars_text = dollars(row.get("cost_usd"))
    if row.get("unpriced_calls"):
        dollars_text += f" ({row['unpriced_calls']} calls without a price)"
    return [str(row.get("calls", 0)), f"{row.get('input_tokens', 0):,}",
            f"{row.get('output_tokens', 0):,}", dollars_text]  # fmt: skip


def estimate_views(report: dict[str, Any]) -> list[Any]:
    """What a run would cost: calls, tokens and dollars per step, with the margin."""
    docs = report["documents"]
    margin = f"±{report['margin'] * 100:.0f}%"
    table = Table(
        title=f"estimate for {docs['total']} documents ({docs['extracted']} extracted: "
        f"{docs['parsed']} parsed now, {docs['reused']} reused)"
    )
    for name in ("step", "model", "calls", "input tokens", "output tokens",
                 f"expected ({margin})", "at most", "prices"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("step", "model", "prices") else "right")
    for row in report["steps"]:
        table.add_row(row["step"], row["model"], str(row["calls"]), f"{row['input_tokens']:,}",
                      f"{row['output_tokens']:,}", _range(row), dollars(row["most_usd"]),
                      row["price_source"])  # fmt: skip
    total = report["total"]
    table.add_row("total", "", "", "", "", _range(total), dollars(total["most_usd"]), "")
    table.caption = (
        f"Tokens are estimated from the text; the expected dollars are within {margin} for "
        "ordinary prose. 'At most' is what --max-cost would hold: every answer as long as "
        "max_output_tokens. The text is kept: a `run` over these files will not parse them "
        "again."
    )
    parts: list[Any] = [table]
    if None in (row["expected_usd"] for row in report["steps"]):
        parts.append("[yellow]A price is unknown[/]: give it in durabatch.toml \\[prices] or "
                     "with --prices FILE (dollars per 1M tokens).")  # fmt: skip
    if report["failures"]:
        failed = Table(title="documents that could not be extracted (not in the estimate)")
        for name in ("path", "status", "reason", "what to do"):
            failed.add_column(name, overflow="fold")
        for row in report["failures"]:
            failed.add_row(cell(row["path"]), row["status"], row["reason"], cell(row["error"]))
        parts.append(failed)
    return parts


def _range(row: dict[str, Any]) -> str:
    if row["expected_usd"] is None:
        return "unknown"
    if row["expected_usd"] == 0:
        return dollars(row["expected_usd"])
    return (
        f"{dollars(row['expected_usd'])} ({dollars(row['low_usd'])} to {dollars(row['high_usd'])})"
    )
