"""Every command through Typer's CliRunner, asserting exit codes, output and the database."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from durabatch.cli import app

runner = CliRunner()
COMMANDS = ["run", "resume", "status", "cost", "events", "verify", "export", "cancel", "deliver",
            "compact"]  # fmt: skip


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def run_samples(sample_docs: Path, *extra: str) -> str:
    result = invoke("run", str(sample_docs), *extra)
    assert result.exit_code == 1, result.output  # the one broken sample fails
    return str(result.stdout.splitlines()[0])


def rows(db: str = "durabatch.db", sql: str = "", *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def export_jsonl(run_id: str) -> list[dict[str, Any]]:
    result = invoke("export", run_id)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example: durabatch " + command in " ".join(result.stdout.split())


def test_top_level_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_compact_of_an_unknown_run_is_a_usage_error(sample_docs: Path) -> None:
    assert invoke("run", str(sample_docs)).exit_code == 1
    result = invoke("compact", "no-such-run")
    assert result.exit_code == 2
    assert "no run 'no-such-run'" in result.stderr and "Traceback" not in result.output


def test_run_sample_docs_prints_run_id_first_and_the_broken_files_reason(
    sample_docs: Path,
) -> None:
    result = invoke("run", str(sample_docs))
    assert result.exit_code == 1
    run_id = result.stdout.splitlines()[0]
    assert rows(sql="SELECT id FROM runs") == [(run_id,)]
    # the summary table names the reason; a long path may fold inside its cell
    assert "malformed" in result.stdout and "documents that did not finish" in result.stdout
    assert f"failed {sample_docs}/damaged_report.pdf (malformed" in result.stderr
    statuses = dict(rows(sql="SELECT path, status FROM documents"))
    assert len(statuses) == 9
    assert statuses.pop(f"{sample_docs}/damaged_report.pdf") == "failed"
    assert set(statuses.values()) == {"done"}
    # plain timestamped lines with the run id, because stdout is not a terminal
    assert f"run={run_id} done " in result.stderr


def test_export_jsonl_has_the_contract_keys(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    records = export_jsonl(run_id)
    assert len(records) == 9
    for record in records:
        assert {"path", "sha256", "status", "summary", "entities", "error", "cost_usd"} <= set(
            record
        )
    done = [r for r in records if r["status"] == "done"]
    assert all(r["summary"] and len(r["sha256"]) == 64 for r in done)
    assert all({"text", "type"} == set(e) for r in done for e in r["entities"])
    broken = next(r for r in records if r["path"].endswith("damaged_report.pdf"))
    assert broken["reason"] == "malformed" and broken["error"] and broken["summary"] is None


def test_export_csv_to_a_file(sample_docs: Path, tmp_path: Path) -> None:
    run_id = run_samples(sample_docs)
    result = invoke("export", run_id, "--format", "csv", "-o", "out.csv")
    assert result.exit_code == 0
    table = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert len(table) == 9
    assert {"path", "sha256", "status", "summary", "entities", "error", "cost_usd"} <= set(table[0])
    again = invoke("export", run_id, "-o", "out.csv")  # never overwritten by surprise
    assert again.exit_code == 2 and "out.csv already exists; add --force" in again.stderr
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))) == 9
    forced = invoke("export", run_id, "-o", "out.csv", "--force")
    assert forced.exit_code == 0 and (tmp_path / "out.csv").read_text().startswith('{"path"')
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_status_json_of_one_run_has_the_contract_keys(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    result = invoke("status", run_id, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["run_id"] == run_id and data["status"] == "done"
    assert data["documents"] == {
        "total": 9, "done": 8, "failed": 1, "skipped": 0, "pending": 0, "running": 0,
    }  # fmt: skip
    assert data["cost"]["total_usd"] == 0.0
    assert data["cost"]["by_model"]["local"]["calls"] == 16
    assert data["interruptions"] == 0
    assert data["failures"][0]["reason"] == "malformed"
    assert len(data["sessions"]) == 1 and data["sessions"][0]["outcome"] == "finished"
    assert "api_key" not in data["settings"]
    # a run without --deliver-to has no deliver step, done or otherwise
    assert sorted(data["steps"]) == ["entities", "extract", "summarize"], data["steps"]


def test_status_lists_all_runs(sample_docs: Path) -> None:
    first = run_samples(sample_docs)
    second = run_samples(sample_docs)
    result = invoke("status", "--json")
    assert [r["run_id"] for r in json.loads(result.stdout)] == [first, second]
    table = invoke("status")
    assert table.exit_code == 0 and "durabatch runs" in table.stdout


def test_status_human_view_of_one_run(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    result = invoke("status", run_id)
    assert result.exit_code == 0
    assert "documents done" in result.stdout and "malformed" in result.stdout


def test_events_are_the_audit_trail(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    result = invoke("events", run_id, "--json")
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run_created" and types[-1] == "session_ended"
    assert types.count("document_discovered") == 9
    assert types.count("step_completed") == 8 * 3
    assert types.count("document_finished") == 9
    plain = invoke("events", run_id, "--after", str(events[-2]["seq"]))
    assert plain.stdout.count("\n") == 1 and "session_ended" in plain.stdout


def test_verify_passes_on_a_clean_run(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    result = invoke("verify", run_id)
    assert result.exit_code == 0, result.stdout
    assert "matches" in result.stdout


def test_verify_finds_a_table_that_disagrees_with_the_events(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    with sqlite3.connect("durabatch.db") as conn:
        conn.execute("UPDATE documents SET status = 'done' WHERE status = 'failed'")
        conn.execute(
            "UPDATE steps SET output = '\"forged\"' WHERE step = 'summarize' AND doc_id ="
            " (SELECT MIN(doc_id) FROM steps WHERE step = 'summarize')"
        )
    result = invoke("verify", run_id, "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert any("damaged_report.pdf: status" in p for p in problems)
    assert any("output" in p for p in problems)


def test_verify_finds_damaged_text_in_a_file_and_in_the_database(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "small.txt").write_text("Alice Morgan met the board in Rotterdam. " * 10)
    (docs / "large.txt").write_text("Bob Stone signed the lease in Leeds today. " * 2000)
    ran = invoke("run", str(docs))
    assert ran.exit_code == 0, ran.output
    run_id = str(ran.stdout.splitlines()[0])
    assert invoke("verify", run_id).exit_code == 0
    texts = rows(sql="SELECT s.artifact, t.digest FROM steps s LEFT JOIN texts t"
                 " ON t.digest = s.artifact WHERE s.artifact IS NOT NULL")  # fmt: skip
    in_files = [a for a, t in texts if t is None]
    in_db = [a for a, t in texts if t is not None]
    assert len(in_files) == 1 and len(in_db) == 1  # the large text has a file of its own
    (tmp_path / "durabatch.db.d" / "artifacts" / in_files[0][:2] / in_files[0]).write_text("x")
    with sqlite3.connect("durabatch.db") as conn:
        conn.execute("UPDATE texts SET text = 'tampered'")
    result = invoke("verify", run_id)
    assert result.exit_code == 1
    assert result.stdout.count("missing or damaged") == 2, result.stdout


def test_events_cannot_be_edited_or_deleted(sample_docs: Path) -> None:
    run_samples(sample_docs)
    with sqlite3.connect("durabatch.db") as conn:
        for sql in ("UPDATE events SET type = 'x'", "DELETE FROM events"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql)


def test_database_and_its_files_are_private(sample_docs: Path, tmp_path: Path) -> None:
    run_samples(sample_docs)
    assert stat.S_IMODE((tmp_path / "durabatch.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "durabatch.db.d").stat().st_mode) == 0o700


def test_api_key_never_reaches_the_database(sample_docs: Path, tmp_path: Path) -> None:
    secret = "sk-test-never-store-me-0123456789"
    result = invoke("run", str(sample_docs), env={"DURABATCH_API_KEY": secret})
    assert result.exit_code == 1
    assert secret not in result.output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_resume_of_a_finished_run_does_nothing(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    result = invoke("resume", run_id)
    assert result.exit_code == 1  # finished, with one failed document
    assert "already finished" in result.stderr
    assert rows(sql="SELECT COUNT(*) FROM sessions") == [(1,)]


def test_resume_without_unfinished_runs_says_so_and_exits_0(sample_docs: Path) -> None:
    run_samples(sample_docs)
    result = invoke("resume")
    assert result.exit_code == 0
    assert "nothing to resume" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status", "no-such-run"],
        ["resume", "no-such-run"],
        ["events", "no-such-run"],
        ["verify", "no-such-run"],
        ["export", "no-such-run"],
    ],
)
def test_unknown_run_id_is_a_usage_error(sample_docs: Path, args: list[str]) -> None:
    run_samples(sample_docs)
    result = invoke(*args)
    assert result.exit_code == 2
    assert "no run 'no-such-run'" in result.stderr
    assert "Traceback" not in result.output


def test_missing_path_is_a_usage_error_and_creates_no_run() -> None:
    result = invoke("run", "nowhere/")
    assert result.exit_code == 2
    assert "no such file or folder: nowhere/" in result.stderr
    assert not Path("durabatch.db").exists()


def test_reading_commands_do_not_create_a_database() -> None:
    result = invoke("status")
    assert result.exit_code == 2
    assert "no durabatch database" in result.stderr
    assert not Path("durabatch.db").exists()


def test_a_file_that_is_not_a_database_halts_with_exit_3(sample_docs: Path) -> None:
    Path("junk.db").write_bytes(b"this is not sqlite" * 100)
    result = invoke("run", str(sample_docs), "--db", "junk.db")
    assert result.exit_code == 3
    assert "cannot use database junk.db" in result.stderr
    assert "Traceback" not in result.output


def test_bad_flag_values_are_usage_errors(sample_docs: Path) -> None:
    assert invoke("run", str(sample_docs), "--provider", "nope").exit_code == 2
    assert invoke("run", str(sample_docs), "--concurrency", "0").exit_code == 2
    assert invoke("export", "x", "--format", "xml").exit_code == 2


def test_include_and_exclude_globs(sample_docs: Path) -> None:
    result = invoke("run", str(sample_docs), "--include", "*.md", "--include", "*.pdf",
                    "--exclude", "damaged_*")  # fmt: skip
    assert result.exit_code == 0, result.output
    paths = sorted(p.rsplit("/", 1)[-1] for (p,) in rows(sql="SELECT path FROM documents"))
    assert paths == [
        "harbourline_board_minutes.pdf", "kestrel_roadmap_meeting.md",
        "northwind_acquisition_release.pdf", "riverton_council_budget.md",
    ]  # fmt: skip


def test_paths_are_shown_relative_to_where_the_run_started(sample_docs: Path) -> None:
    Path("docs").mkdir()
    Path("docs/a.txt").write_text("Alpha beta gamma. Delta epsilon.")
    Path("docs/.hidden.txt").write_text("never seen")
    result = invoke("run", "docs")
    assert result.exit_code == 0, result.output
    assert rows(sql="SELECT path FROM documents") == [("docs/a.txt",)]


def test_the_database_folder_is_never_processed_as_input() -> None:
    Path("a.txt").write_text("Alpha beta gamma. Delta epsilon.")
    first = invoke("run", ".")
    second = invoke("run", ".")
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert rows(sql="SELECT DISTINCT path FROM documents") == [("a.txt",)]


def test_settings_layers_toml_then_env_then_flags(sample_docs: Path) -> None:
    Path("durabatch.toml").write_text("concurrency = 2\ngrace = 5\nextract_timeout = 30\n")
    env = {"DURABATCH_GRACE": "7"}
    run_id = run_samples(sample_docs, "--extract-timeout", "9")
    settings = json.loads(
        rows("durabatch.db", "SELECT settings FROM runs WHERE id = ?", run_id)[0][0]
    )
    assert (settings["concurrency"], settings["grace"], settings["extract_timeout"]) == (2, 5, 9)
    result = invoke("run", str(sample_docs), "--db", "other.db", env=env)
    settings = json.loads(rows("other.db", "SELECT settings FROM runs")[0][0])
    assert result.exit_code == 1 and settings["grace"] == 7


def test_a_bad_toml_file_is_a_usage_error(sample_docs: Path) -> None:
    Path("durabatch.toml").write_text("concurrency = [oops\n")
    result = invoke("run", str(sample_docs))
    assert result.exit_code == 2
    assert "durabatch.toml is not valid TOML" in result.stderr


def test_long_documents_checkpoint_each_chunk(tmp_path: Path) -> None:
    sentences = [f"Report {i}: Dr. Maria Lopez met Acme Corp. in London." for i in range(400)]
    Path("long.txt").write_text(" ".join(sentences))
    result = invoke("run", "long.txt", env={"DURABATCH_MAX_INPUT_TOKENS": "300"})
    assert result.exit_code == 0, result.output
    partials = rows(sql="SELECT step, COUNT(*) FROM partials GROUP BY step ORDER BY step")
    assert partials and all(n > 5 for _, n in partials)
    run_id = rows(sql="SELECT id FROM runs")[0][0]
    assert invoke("verify", run_id).exit_code == 0
    (record,) = export_jsonl(run_id)
    assert record["summary"] and {"text": "London", "type": "LOCATION"} in record["entities"]


def test_verify_flags_a_step_that_completed_twice_in_the_history(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    with sqlite3.connect("durabatch.db") as conn:
        conn.execute(
            "INSERT INTO events (run_id, at, type, doc_id, step, data) SELECT run_id, at, type,"
            " doc_id, step, data FROM events WHERE type = 'step_completed' LIMIT 1"
        )
    result = invoke("verify", run_id)
    assert result.exit_code == 1
    assert "completed while done, not running" in result.stdout


def test_a_resumed_run_keeps_its_chunking(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs, "--concurrency", "2")
    stored = json.loads(rows("durabatch.db", "SELECT settings FROM runs")[0][0])
    assert stored["max_input_tokens"] is None
    from durabatch.config import load

    later = load({}, env={"DURABATCH_MAX_INPUT_TOKENS": "50", "DURABATCH_CONCURRENCY": "3"})
    resumed = later.with_run(stored)
    assert (resumed.max_input_tokens, resumed.concurrency) == (None, 3), run_id


def test_documents_in_flight_default_to_the_engines_own(tmp_path: Path) -> None:
    """Without --concurrency the embedded engine works on 64 documents at once, and a
    remote model or a webhook to deliver to on 4; a resumed run takes the default of its
    own engine, whatever the provider of the session; a value given anywhere wins, and
    the run records what it began with."""
    from durabatch.config import load

    remote = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    assert load({}, env={}, cwd=tmp_path).in_flight == 64
    assert load(remote, env={}, cwd=tmp_path).in_flight == 4
    stored = load(remote, env={}, cwd=tmp_path).run_settings()
    assert stored["concurrency"] == 4
    assert load({}, env={}, cwd=tmp_path).with_run(stored).in_flight == 4
    given = load({"concurrency": 7}, env={}, cwd=tmp_path)
    assert (given.in_flight, given.with_run(stored).in_flight) == (7, 7)
    assert load({}, env={"DURABATCH_CONCURRENCY": "3"}, cwd=tmp_path).in_flight == 3
    webhook = {"deliver_to": "http://127.0.0.1:9/hook"}
    assert load(webhook, env={}, cwd=tmp_path).in_flight == 4
    assert load({"deliver_to": str(tmp_path / "out")}, env={}, cwd=tmp_path).in_flight == 64
    said = " ".join(invoke("run", "--help").stdout.replace("│", " ").split())
    assert "default 64 on the embedded engine, 4 with a remote model" in said, said


def test_a_run_stored_before_a_setting_existed_keeps_its_default() -> None:
    """A run made before the PDF engine or deliveries could be chosen read its PDFs with
    pypdf and delivered nothing: whatever the environment says now, it still does."""
    from durabatch.config import load

    now = load({}, env={"DURABATCH_PDF_ENGINE": "pdfium", "DURABATCH_DELIVER_TO": "out",
                        "DURABATCH_ON_FAILURE": "compensate"})  # fmt: skip
    old = now.with_run({"provider": "local", "model": None})
    assert (old.pdf_engine, old.deliver_to, old.on_failure) == ("pypdf", None, "keep")
    newer = now.with_run({"provider": "local", "pdf_engine": "pdfium", "deliver_to": "out"})
    assert (newer.pdf_engine, newer.deliver_to) == ("pdfium", "out")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("concurrency = 'x'", "concurrency must be a whole number, not 'x'"),
        ("grace = true", "grace must be a number"),
        ("include = 3", "include must be a list of globs"),
        ("colour = 'red'", "unknown setting(s) colour"),
    ],
)
def test_settings_of_the_wrong_type_are_usage_errors(
    sample_docs: Path, toml: str, message: str
) -> None:
    Path("durabatch.toml").write_text(toml + "\n")
    result = invoke("run", str(sample_docs))
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_single_glob_string_in_toml_is_one_glob(sample_docs: Path) -> None:
    Path("durabatch.toml").write_text('exclude = "*.pdf"\n')
    result = invoke("run", str(sample_docs))
    assert result.exit_code == 0, result.output
    paths = [p for (p,) in rows(sql="SELECT path FROM documents")]
    assert len(paths) == 6 and not any(p.endswith(".pdf") for p in paths)


def test_a_run_that_finds_nothing_says_why(sample_docs: Path) -> None:
    result = invoke("run", str(sample_docs), "--include", "*.PDF")
    assert result.exit_code == 0
    assert "no documents found" in result.stderr and "--include/--exclude" in result.stderr


def test_export_to_an_unwritable_place_is_a_usage_error(sample_docs: Path) -> None:
    run_id = run_samples(sample_docs)
    result = invoke("export", run_id, "-o", "no/such/folder/out.jsonl")
    assert result.exit_code == 2
    assert "cannot write no/such/folder/out.jsonl" in result.stderr


def test_openai_provider_without_base_url_is_refused_before_a_run_is_created(
    sample_docs: Path,
) -> None:
    result = invoke("run", str(sample_docs), "--provider", "openai", "--model", "m")
    assert result.exit_code == 2
    assert "needs --base-url" in result.stderr
    assert not Path("durabatch.db").exists()
    result = invoke("run", str(sample_docs), "--provider", "openai", "--base-url", "http://x/v1")
    assert result.exit_code == 2 and "needs --model" in result.stderr


def test_an_api_key_with_a_trailing_newline_is_trimmed_and_one_with_spaces_refused(
    sample_docs: Path,
) -> None:
    from durabatch.config import load

    assert load({}, env={"DURABATCH_API_KEY": "sk-abc\n"}).api_key == "sk-abc"
    result = invoke("run", str(sample_docs), env={"OPENAI_API_KEY": "sk abc"})
    assert result.exit_code == 2
    assert "OPENAI_API_KEY contains spaces" in result.stderr and "sk abc" not in result.output


def test_version_and_short_help() -> None:
    from durabatch import __version__

    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"durabatch {__version__}"
    short = CliRunner().invoke(app, ["status", "-h"])
    assert short.exit_code == 0 and "status [OPTIONS]" in short.stdout


def test_only_a_database_with_a_migration_to_apply_imports_the_migration_library(
    tmp_path: Path,
) -> None:
    """sqlite-utils (about 40 ms of a command's start-up) migrates an older database, and
    is imported only then: a new database is made from the schema the migrations leave,
    and one up to date is just opened."""
    import subprocess
    import sys

    from sqlite_utils import Database

    from durabatch.store.schema import migrations

    script = (
        "import sys; from durabatch.cli import main\n"
        "sys.argv = ['durabatch', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('sqlite_utils' in sys.modules)\n"
    )

    def imports_it(*argv: str) -> bool:
        done = subprocess.run([sys.executable, "-c", script, *argv], cwd=tmp_path,
                              capture_output=True, text=True, check=False)  # fmt: skip
        return {"True": True, "False": False}[done.stdout.strip().splitlines()[-1]]

    (tmp_path / "empty").mkdir()
    assert not imports_it("run", "empty", "--db", "new.db")  # made at once
    assert not imports_it("status", "--db", "new.db")
    older = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrations.apply(Database(older), stop_before="m017_cheaper_step_record")
    older.close()
    assert imports_it("status", "--db", "old.db")  # migrated to m017
    assert not imports_it("status", "--db", "old.db")


def test_a_run_imports_no_parser_nor_http_client_in_its_own_process(
    sample_docs: Path, tmp_path: Path
) -> None:
    """Parsing happens in the parser processes, and a run that delivers nothing needs no
    HTTP client: the run's own process starts without them (about a quarter of its
    start-up)."""
    import subprocess
    import sys

    script = (
        "import sys; from durabatch.cli import main\n"
        "sys.argv = ['durabatch', 'run', sys.argv[1], '--db', sys.argv[2]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('charset_normalizer', 'markdown_it', 'pypdf', 'docx', 'httpx', 'lxml')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(sample_docs), str(tmp_path / "r.db")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
    summary = sqlite3.connect(tmp_path / "r.db").execute(
        "SELECT COUNT(*) FROM documents WHERE status = 'done'"
    )
    assert summary.fetchone()[0] > 0  # it did parse its documents, elsewhere
