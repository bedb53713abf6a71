"""The durabatch command line: parse, resolve settings, call one function, render."""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import json
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from durabatch import __version__, amend, config, discovery, money, names, reports
from durabatch.errors import DatabaseDamaged, DurabatchError, ExitCode, NotFinished, UsageError
from durabatch.pricing import read_price_file
from durabatch.render import (
    PlainObserver,
    RichObserver,
    cell,
    cost_views,
    estimate_views,
    note,
    run_detail,
    run_table,
    shown,
    stderr_console,
    stdout_console,
)
from durabatch.store import Store, open_store
from durabatch.store.connection import damaged, damaged_error
from durabatch.store.records import UNDOABLE, Run, RunStatus
from durabatch.verify import verify as verify_run

if TYPE_CHECKING:  # the engine pulls in the parsers: imported when a run starts, so
    from durabatch.engine import Observer, Outcome  # every other command starts fast

app = typer.Typer(
    help="Durable batch LLM processing of documents: every step checkpointed, resumable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(given: bool) -> None:
    if given:
        print(f"durabatch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Durable batch LLM processing of documents: every step checkpointed, resumable."""


DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database file (env DURABATCH_DB; default ./durabatch.db)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
RunArg = Annotated[str, typer.Argument(help="The run id (see `durabatch status`).")]
Concurrency = Annotated[
    int | None,
    typer.Option(
        help=f"Documents in flight at once (default {config.LOCAL_CONCURRENCY} on the embedded "
        f"engine, {config.DEFAULT_CONCURRENCY} with a remote model or a webhook to deliver to).",
        min=1,
    ),
]
Grace = Annotated[
    float | None,
    typer.Option(help="Seconds in-flight steps get to finish after SIGINT/SIGTERM (25).", min=0),
]
ReadTimeout = Annotated[
    float | None,
    typer.Option(help="Seconds to wait for a model's answer before retrying (20)."),
]
NoCache = Annotated[
    bool,
    typer.Option("--no-cache", help="Pay again for steps an earlier run already answered."),
]
MaxCost = Annotated[
    float | None,
    typer.Option(help="Dollars this run may spend; it pauses (exit 75) before passing them."),
]
ExtractTimeout = Annotated[
    float | None, typer.Option(help="Seconds one document may take to parse (60).")
]
PdfEngine = Annotated[
    str | None,
    typer.Option(
        help="What reads PDFs: pypdf (default) or pdfium, ~4x faster to extract (needs "
        "the pdfium extra: pip install 'pypdfium2>=5')."
    ),
]
WatchSpot = Annotated[
    str | None,
    typer.Option(
        help="Drain when the cloud announces a spot reclaim or preemption: aws, gcp or a "
        "URL (200 = notice, 404 = none)."
    ),
]
SpotBaseUrl = Annotated[
    str | None, typer.Option(help="Metadata server for --watch-spot aws/gcp (the cloud's own).")
]
SpotInterval = Annotated[
    float | None, typer.Option(help="Seconds between two looks for a spot notice (5).")
]
DeliverTo = Annotated[
    str | None,
    typer.Option(help="Deliver each finished document to this folder or http(s) webhook."),
]
OnFailure = Annotated[
    str | None,
    typer.Option(
        help="A run ending with failed documents: keep its deliveries (default) or "
        "compensate (withdraw them all)."
    ),
]
CompensateUrl = Annotated[
    str | None,
    typer.Option(help="Where webhook deliveries are withdrawn (DELETE); {id} and {key} filled in."),
]


Paths = Annotated[list[str], typer.Argument(help="Files and folders (walked recursively).")]
Include = Annotated[
    list[str] | None, typer.Option(help="Only files matching this glob (repeatable).")
]
Exclude = Annotated[
    list[str] | None, typer.Option(help="Leave out files matching this glob (repeatable).")
]
ProviderOpt = Annotated[str | None, typer.Option(help="local (default) or openai.")]
ModelOpt = Annotated[str | None, typer.Option(help="Model for every step.")]
SummarizeModel = Annotated[str | None, typer.Option(help="Model for summarize.")]
EntitiesModel = Annotated[str | None, typer.Option(help="Model for entities.")]
BaseUrl = Annotated[
    str | None, typer.Option(help="OpenAI-compatible endpoint (env DURABATCH_BASE_URL).")
]
MaxInputTokens = Annotated[
    int | None, typer.Option(help="Tokens per model call; longer text is chunked.")
]
PriceProvider = Annotated[
    str | None,
    typer.Option(help="Whose prices apply (e.g. openai, gmi); default: from the URL."),
]
PricesFile = Annotated[
    Path | None, typer.Option(help="TOML or JSON file of prices per 1M tokens, by model.")
]


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


_opened: list[Path] = []  # the database this command opened, named if it is damaged


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """A DurabatchError becomes a one-line message and its exit code, never a traceback;
    so does a damaged page met by any read of the store (its writes say so themselves)."""
    try:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if not (damaged(exc) and _opened):
                raise
            raise damaged_error(_opened[-1], exc) from exc
    except DurabatchError as exc:
        stderr_console().print(f"[bold red]error:[/] {cell(exc.message)}", highlight=False)
        raise typer.Exit(exc.exit_code) from None


def _settings(**flags: Any) -> config.Settings:
    return config.load(flags)


def _store(settings: config.Settings, *, create: bool = False) -> Store:
    _opened.append(Path(settings.db))
    return open_store(settings.db, create=create)


def _observer(run_id: str) -> Observer:
    if sys.stdout.isatty():
        return RichObserver(stderr_console())
    return PlainObserver(run_id)


def _finish(store: Store, outcome: Outcome) -> None:
    summary = reports.run_summary(store, store.get_run(outcome.run_id))
    console = stdout_console()
    try:
        for part in run_detail(summary, full=False):
            console.print(part)
    except BrokenPipeError:  # `durabatch run x | head -1` must still exit with the run's code
        _stdout_to_devnull()
    if outcome.exit_code == ExitCode.NOT_FINISHED:
        stderr_console().print(
            f"run {outcome.run_id} is not finished; continue with: durabatch resume "
            f"{outcome.run_id}",
            highlight=False,
        )
    elif outcome.exit_code == ExitCode.CANCELLED:
        stderr_console().print(
            f"run {outcome.run_id} was cancelled and is not resumed; its deliveries can be "
            f"withdrawn with: durabatch cancel {outcome.run_id} --compensate",
            highlight=False,
        )
    raise typer.Exit(outcome.exit_code)


def _process(store: Store, run: Run, settings: config.Settings) -> Outcome:
    from durabatch.engine import process_run

    observer = _observer(run.id)
    code: int | None = None  # the run's exit code, once it has stopped
    try:
        outcome = process_run(store, run, settings, observer)
        code = outcome.exit_code
        return outcome
    finally:
        # the run has stopped, and what it committed is final: a late signal (systemd's
        # to the whole group, a second Ctrl-C) exits at once, with the run's own code,
        # not 130 or 143 (only in the program itself: a test keeps its own handlers)
        if _as_program:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _exit_with(code))
        close = getattr(observer, "close", None)
        if close:
            close()


def _ignore_late_signals() -> None:
    """Python puts the default handlers back as it tears down, once the threads are
    joined and every atexit hook has run (this one runs last: main registers it first).
    A signal then killed the process (-15) on its way out with its exit code already
    decided (a drained run's 75); from here on it is ignored. Until here the handlers
    answer it: a hook that hangs (joining a stuck child) can still be ended."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _exit_with(code: int | None) -> Callable[[int, FrameType | None], None]:
    """A handler for a signal that comes once the run has stopped: leave now, with its
    exit code (none yet: what was being raised decides, so the signal is ignored)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if code is not None:
            os._exit(code)  # the report on stdout is cut short; the run's state is not

    return handle


@app.command()
def run(
    paths: Paths,
    include: Include = None,
    exclude: Exclude = None,
    db: DbOpt = None,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    summarize_model: SummarizeModel = None,
    entities_model: EntitiesModel = None,
    base_url: BaseUrl = None,
    max_input_tokens: MaxInputTokens = None,
    price_provider: PriceProvider = None,
    prices: PricesFile = None,
    concurrency: Concurrency = None,
    grace: Grace = None,
    extract_timeout: ExtractTimeout = None,
    pdf_engine: PdfEngine = None,
    read_timeout: ReadTimeout = None,
    max_cost: MaxCost = None,
    no_cache: NoCache = False,
    watch_spot: WatchSpot = None,
    spot_base_url: SpotBaseUrl = None,
    spot_interval: SpotInterval = None,
    deliver_to: DeliverTo = None,
    on_failure: OnFailure = None,
    compensate_url: CompensateUrl = None,
) -> None:
    """Process documents in a new run; prints the run id first.

    Example: durabatch run ./contracts --include '*.pdf'
    """
    with _user_errors():
        settings = _settings(
            db=db, provider=provider, model=model, summarize_model=summarize_model,
            entities_model=entities_model, base_url=base_url, concurrency=concurrency,
            grace=grace, extract_timeout=extract_timeout, include=include or (),
            exclude=exclude or (), max_input_tokens=max_input_tokens, read_timeout=read_timeout,
            price_provider=price_provider, prices=read_price_file(prices) if prices else None,
            max_cost=max_cost, no_cache=no_cache or None, watch_spot=watch_spot,
            spot_base_url=spot_base_url, spot_interval=spot_interval, pdf_engine=pdf_engine,
            deliver_to=deliver_to, on_failure=on_failure, compensate_url=compensate_url,
        )  # fmt: skip
        config.require_pdf_engine(settings)
        _note_unused_endpoint(settings)
        discovery.check_paths(paths)
        store = _store(settings, create=True)
        stored = settings.run_settings() | {"cwd": os.getcwd()}
        new_run = store.create_run(stored, [names.storable(p) for p in paths])
        _print_run_id(new_run.id)
        _finish(store, _process(store, new_run, settings))


def _note_unused_endpoint(settings: config.Settings) -> None:
    """An endpoint or a model given to the embedded engine is not used: say so, at once
    (the records name the model given, so a forgotten --provider openai would otherwise
    read as that model's answers, for free)."""
    if settings.provider != "local":
        return
    unused = [f"{key.replace('_', ' ')} {value}" for key in amend.ENDPOINT
              if (value := getattr(settings, key))]  # fmt: skip
    if unused:
        note(f"{', '.join(unused)}: not used, the provider is local (the embedded engine, "
             "offline, one model of its own); add --provider openai (or provider = "
             "\"openai\" in durabatch.toml) to call an API")  # fmt: skip


@app.command()
def resume(
    run_id: Annotated[
        str | None, typer.Argument(help="Run id; default: latest unfinished.")
    ] = None,
    db: DbOpt = None,
    concurrency: Concurrency = None,
    grace: Grace = None,
    extract_timeout: ExtractTimeout = None,
    read_timeout: ReadTimeout = None,
    max_cost: MaxCost = None,
    model: ModelOpt = None,
    summarize_model: SummarizeModel = None,
    entities_model: EntitiesModel = None,
    base_url: BaseUrl = None,
    prices: PricesFile = None,
    no_cache: NoCache = False,
    watch_spot: WatchSpot = None,
    spot_base_url: SpotBaseUrl = None,
    spot_interval: SpotInterval = None,
) -> None:
    """Continue a run where it stopped; without an id, the latest unfinished one (for cron).

    A run keeps its models and prices. After a halt for an unknown model or endpoint,
    --model (or --summarize-model, --entities-model) and --base-url apply while no step
    they answer is done; a price for a model the run cannot price is taken from
    durabatch.toml [prices] or --prices FILE.

    Example: durabatch resume --model gpt-5.4-mini
    """
    endpoint = {"model": model, "summarize_model": summarize_model,
                "entities_model": entities_model, "base_url": base_url}  # fmt: skip
    with _user_errors():
        user = _settings(
            db=db, concurrency=concurrency, grace=grace, extract_timeout=extract_timeout,
            read_timeout=read_timeout, no_cache=no_cache or None, watch_spot=watch_spot,
            spot_base_url=spot_base_url, spot_interval=spot_interval, max_cost=max_cost,
            prices=read_price_file(prices) if prices else None, **endpoint,
        )  # fmt: skip
        store = _store(user)
        found = store.get_run(run_id) if run_id else store.latest_unfinished_run()
        if found is None:
            stderr_console().print("nothing to resume: every run in this database is finished")
            raise typer.Exit(ExitCode.OK)
        _print_run_id(found.id)
        _refuse_cancelled(found)
        if found.finished:
            _withdraw_owed(store, found, user)
            stderr_console().print(f"run {found.id} is already finished", highlight=False)
            failed = store.counts(found.id).failed
            raise typer.Exit(ExitCode.FAILED_DOCUMENTS if failed else ExitCode.OK)
        asked = {key: getattr(user, key) for key, flag in endpoint.items() if flag is not None}
        settings = amend.for_resume(found, user.with_run(found.settings), asked, user.prices,
                                    functools.partial(store.answered, found.id), note)  # fmt: skip
        if max_cost is not None:  # stored with the run (for every later resume too) once
            settings = replace(settings, max_cost=user.max_cost)  # this session owns the run
        config.require_pdf_engine(settings, resuming=True)
        _finish(store, _process(store, found, settings))


def _refuse_cancelled(found: Run) -> None:
    if found.status == RunStatus.CANCELLED or found.cancel_requested:
        raise UsageError(
            f"run {found.id} was cancelled and is not resumed; start a new run, or finish "
            f"withdrawing its deliveries with `durabatch cancel {found.id} --compensate`"
        )


def _withdraw_owed(store: Store, found: Run, settings: config.Settings) -> None:
    """A finished run under --on-failure compensate whose withdrawal was cut short."""
    from durabatch import compensate

    if compensate.owed(store, found):
        compensate.after_failure(store, found, settings.with_run(found.settings), note)


@app.command()
def cancel(
    run_id: RunArg,
    compensate_: Annotated[
        bool, typer.Option("--compensate", help="Undo every delivery, latest first.")
    ] = False,
    compensate_url: CompensateUrl = None,
    db: DbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Stop a run (a live one drains, as on SIGTERM); --compensate undoes its deliveries.

    Run it again to continue a compensation that was interrupted.
    Example: durabatch cancel 20261126T173512-ab12c3 --compensate
    """
    from durabatch import compensate

    with _user_errors():
        if compensate_url is not None and not compensate_:
            raise UsageError(
                "--compensate-url is used only with --compensate (it says where to withdraw "
                f"webhook deliveries): `durabatch cancel {run_id} --compensate "
                "--compensate-url URL`"
            )
        store = _store(_settings(db=db))
        found = store.get_run(run_id)
        settings = _settings(db=db).with_run(found.settings)
        # for webhook deliveries recorded without a DELETE URL of their own only
        settings = replace(settings, compensate_url=compensate_url)
        if compensate_url is not None:
            config.check_compensate_url(compensate_url)
        wait = settings.grace + settings.lease_ttl
        undone = compensate.cancel(store, found, settings, compensate=compensate_, note=note,
                                   wait=wait)  # fmt: skip
        counts = store.delivery_counts(run_id)
    _cancelled(run_id, undone, counts, json_)


def _cancelled(run_id: str, undone: Any, counts: dict[str, int], json_: bool) -> None:
    report = {"run_id": run_id, "status": "cancelled", "deliveries": counts,
              "compensation": asdict(undone) if undone is not None else None}  # fmt: skip
    if json_:
        print(json.dumps(report, indent=2))
    else:
        print(f"run {run_id} cancelled; deliveries: {_counted(counts)}")
    if undone is not None and any(counts.get(status) for status in UNDOABLE):
        raise typer.Exit(ExitCode.FAILED_DOCUMENTS)  # undo_failed ones: run it again


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"


@app.command()
def deliver(
    run_id: RunArg,
    to: Annotated[str, typer.Option("--to", help="A folder, or an http(s) webhook URL.")],
    db: DbOpt = None,
    read_timeout: ReadTimeout = None,
    compensate_url: CompensateUrl = None,
    json_: JsonOpt = False,
) -> None:
    """Deliver a finished run's results to a folder or webhook; no model is called.

    Documents already delivered there are skipped, so running it again continues.
    Example: durabatch deliver 20261126T173512-ab12c3 --to https://hooks.example/in
    """
    from durabatch.deliver import redeliver

    with _user_errors():
        settings = _settings(db=db, deliver_to=to, read_timeout=read_timeout,
                             compensate_url=compensate_url)  # fmt: skip
        store = _store(settings)
        found = store.get_run(run_id)
        tally = redeliver(store, found, settings, to, note)
    if json_:
        print(json.dumps({"run_id": run_id, "target": to, **asdict(tally)}, indent=2))
    else:
        print(f"run {run_id} -> {to}: {tally.delivered} delivered, {tally.already} there "
              f"already, {len(tally.failed)} refused")  # fmt: skip
    raise typer.Exit(ExitCode.FAILED_DOCUMENTS if tally.failed else ExitCode.OK)


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(help="One run; default: all runs.")] = None,
    db: DbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show all runs in a table, or one run: progress per step, failures, cost.

    Example: durabatch status 20261126T173512-ab12 --json
    """
    with _user_errors():
        store = _store(_settings(db=db))
        runs = [store.get_run(run_id)] if run_id else store.list_runs()
        summaries = [reports.run_summary(store, r) for r in runs]
    if json_:
        print(json.dumps(summaries[0] if run_id else summaries, indent=2, default=money.as_json))
    elif run_id:
        for part in run_detail(summaries[0]):
            stdout_console().print(part)
    else:
        stdout_console().print(run_table(summaries))


@app.command()
def cost(
    run_id: Annotated[str | None, typer.Argument(help="Run id; default: the latest run.")] = None,
    db: DbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """What a run cost by model, step and document; what failures wasted; what resume saved.

    Example: durabatch cost 20261126T173512-ab12c3 --json
    """
    with _user_errors():
        store = _store(_settings(db=db))
        runs = store.list_runs()
        if run_id is None and not runs:
            raise UsageError("this database has no runs yet; start one with `durabatch run PATH`")
        report = reports.cost_report(store, store.get_run(run_id) if run_id else runs[-1])
    if json_:
        print(json.dumps(report, indent=2, default=money.as_json))
        return
    for part in cost_views(report):
        stdout_console().print(part)


@app.command()
def estimate(
    paths: Paths,
    include: Include = None,
    exclude: Exclude = None,
    db: DbOpt = None,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    summarize_model: SummarizeModel = None,
    entities_model: EntitiesModel = None,
    base_url: BaseUrl = None,
    max_input_tokens: MaxInputTokens = None,
    price_provider: PriceProvider = None,
    prices: PricesFile = None,
    concurrency: Concurrency = None,
    extract_timeout: ExtractTimeout = None,
    pdf_engine: PdfEngine = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Parse again files extracted before.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Tokens and dollars a run would cost, before spending anything; no model is called.

    The text is extracted and kept, so a later `run` over the same files reuses it.

    Example: durabatch estimate ./contracts --provider openai
    --base-url https://api.openai.com/v1 --model gpt-5.4-mini
    """
    with _user_errors():
        settings = _settings(
            db=db, provider=provider, model=model, summarize_model=summarize_model,
            entities_model=entities_model, base_url=base_url, concurrency=concurrency,
            extract_timeout=extract_timeout, include=include or (), exclude=exclude or (),
            max_input_tokens=max_input_tokens, price_provider=price_provider,
            prices=read_price_file(prices) if prices else None, no_cache=no_cache or None,
            pdf_engine=pdf_engine,
        )  # fmt: skip
        config.require_pdf_engine(settings)
        _note_unused_endpoint(settings)
        discovery.check_paths(paths)
        store = _store(settings, create=True)
        report = _estimated(store, settings, list(paths))
    if json_:
        print(json.dumps(report, indent=2, default=money.as_json))
        return
    for part in estimate_views(report):
        stdout_console().print(part)


def _estimated(store: Store, settings: config.Settings, paths: list[str]) -> dict[str, Any]:
    from durabatch.estimate import Interrupted
    from durabatch.estimate import estimate as estimate_run
    from durabatch.models import make_provider

    def progress(tally: Any) -> None:
        if sys.stderr.isatty() and tally.total % 50 == 0:
            stderr_console().print(f"extracted {tally.total} documents...", highlight=False)

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        """The first signal stops the estimate between two documents; a second at once.
        Nothing here raises: an exception thrown into the work could leave a lock held."""
        if stopping.is_set():
            os.write(2, f"{signal.Signals(signum).name} again: stopping now\n".encode())
            os._exit(ExitCode.NOT_FINISHED)
        stopping.set()

    # stopped here, not by `_interrupted_early`, so the user hears that the text is kept
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return estimate_run(store, settings, make_provider(settings), paths, progress, stopping)
    except Interrupted:
        raise NotFinished(
            "estimate interrupted; the text extracted so far is kept, so running it again "
            "continues where it stopped"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def events(
    run_id: RunArg,
    db: DbOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    after: Annotated[
        int, typer.Option(help="Only events after this sequence number.", max=2**63 - 1)
    ] = 0,
) -> None:
    """Print a run's audit trail: every state change, in order.

    Example: durabatch events 20261126T173512-ab12 --json | jq .type
    """
    with _user_errors():
        store = _store(_settings(db=db))
        store.get_run(run_id)
        for event in store.events(run_id, after):
            if json_:
                row = {"seq": event.seq, "at": event.at, "type": event.type,
                       "doc_id": event.doc_id, "step": event.step, "data": event.data}  # fmt: skip
                print(json.dumps(row, ensure_ascii=False))
            else:
                where = f" doc={event.doc_id}" if event.doc_id else ""
                where += f" step={event.step}" if event.step else ""
                data = json.dumps(event.data, ensure_ascii=False)
                print(f"{event.seq}\t{event.at}\t{event.type}{where}\t{shown(data[:200])}")


@app.command()
def verify(run_id: RunArg, db: DbOpt = None, json_: JsonOpt = False) -> None:
    """Rebuild a run's state from its events alone and compare it with the tables.

    Exits 0 when they agree and the database is intact, 1 otherwise (a damaged file too).
    Example: durabatch verify 20261126T173512-ab12
    """
    with _user_errors():
        try:
            store = _store(_settings(db=db))
        except DatabaseDamaged as exc:  # too damaged to open (e.g. truncated): the finding
            problems = [exc.message]
        else:
            problems = verify_run(store, run_id)
    if json_:
        print(json.dumps({"run_id": run_id, "ok": not problems, "problems": problems}))
    elif problems:
        for problem in problems:
            print(problem)
    else:
        print(f"run {run_id}: state rebuilt from events matches the tables; database intact")
    raise typer.Exit(ExitCode.FAILED_DOCUMENTS if problems else ExitCode.OK)


@app.command()
def compact(
    run_id: RunArg,
    db: DbOpt = None,
    vacuum: Annotated[
        bool, typer.Option("--vacuum", help="Give the freed space back to the disk.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Fold a run's events into one snapshot event; `verify` still holds afterwards.

    Refused (exit 75) while a live process works on the run.
    Example: durabatch compact 20261126T173512-ab12 --vacuum
    """
    with _user_errors():
        store = _store(_settings(db=db))
        done = store.compact(run_id, vacuum=vacuum)
    size = f"database {done.bytes_before / 1e6:.1f} MB -> {done.bytes_after / 1e6:.1f} MB"
    if json_:
        print(json.dumps(asdict(done)))
    elif done.folded:
        print(
            f"run {run_id}: {done.folded} events folded into snapshot event {done.snapshot_seq};"
            f" {size}" + ("" if vacuum else " (its freed pages are reused; --vacuum returns them)")
        )
    elif vacuum:  # compacted before: the space its freed pages hold is given back now
        print(f"run {run_id}: nothing to fold ({done.events_before} event); {size}, vacuumed")
    else:
        print(f"run {run_id}: nothing to compact ({done.events_before} event)")


@app.command()
def export(
    run_id: RunArg,
    db: DbOpt = None,
    format_: Annotated[Format, typer.Option("--format", help="jsonl or csv.")] = Format.jsonl,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File; default stdout.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the -o file if it exists.")
    ] = False,
) -> None:
    """Write one record per document: path, sha256, status, summary, entities, error, cost.

    Example: durabatch export 20261126T173512-ab12 --format csv -o results.csv
    """
    with _user_errors():
        store = _store(_settings(db=db))
        store.get_run(run_id)
        rows = reports.export_rows(store, run_id)
        write = reports.write_jsonl if format_ == Format.jsonl else reports.write_csv
        if output is None or str(output) == "-":
            write(rows, sys.stdout)
            return
        count = reports.write_file(output, rows, write, force=force)
        stderr_console().print(f"wrote {count} documents to {output}", highlight=False)


def _interrupted_early(signum: int, frame: FrameType | None) -> None:
    """Before a run is being processed there is nothing to drain: stop, resumable."""
    print(
        f"interrupted by {signal.Signals(signum).name} before any step started; nothing "
        "committed is lost: `durabatch resume` continues a run this command created",
        file=sys.stderr,
    )
    raise SystemExit(ExitCode.NOT_FINISHED)


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _print_run_id(run_id: str) -> None:
    """The first line of `run` and `resume`. Output that cannot be written (a closed pipe,
    a full disk) must not leave a run made and never processed: the run goes on."""
    try:
        print(run_id, flush=True)
    except OSError as exc:
        _stdout_to_devnull()
        note(f"cannot write to standard output ({exc.strerror or exc}); run {run_id} goes on")


def _no_stdout() -> None:
    """Started with standard output closed (`>&-`): what would be printed goes nowhere."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        note("standard output is closed: results are not printed (redirect it to a file)")


_as_program = False  # set by main(): this process is the `durabatch` command


def main() -> None:
    global _as_program
    _as_program = True
    atexit.register(_ignore_late_signals)  # first, so it runs last
    # the engine installs its own drain handlers while it processes a run
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted_early)
    _no_stdout()
    try:
        app()
    except BrokenPipeError:  # the reader went away (`events RUN | head`): not an error
        _stdout_to_devnull()
    except Exception as exc:  # a bug: say so in one line; DURABATCH_DEBUG=1 shows where
        if (isinstance(exc, OSError) and exc.filename is None
                and exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT)):  # fmt: skip
            # a write with no file named: standard output (the database's own write errors
            # are StoreErrors by now, and a file's carry its name)
            print(f"error: cannot write the output: {exc.strerror}; free space where it "
                  "goes, or send it elsewhere", file=sys.stderr)  # fmt: skip
            raise SystemExit(ExitCode.HALTED) from None
        if os.environ.get("DURABATCH_DEBUG"):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc}. Committed work is safe; "
            "`durabatch resume` continues. Please report this (DURABATCH_DEBUG=1 prints "
            "the traceback).",
            file=sys.stderr,
        )
        raise SystemExit(ExitCode.HALTED) from None


__all__ = ["app", "main"]
