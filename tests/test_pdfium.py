"""--pdf-engine pdfium: the same words as pypdf, the same reasons for the same bad PDFs, in
the same parser processes; its text is never reused for pypdf, nor the reverse."""

# Real prose with typographic quotes and dashes: they are the point.
# ruff: noqa: RUF001

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from crashkit import query
from fixtures_docs import encrypted_pdf, image_pdf, text_pdf
from hostile_corpus import Corpus
from hostile_corpus import _no_pages_pdf as no_pages_pdf
from hostile_corpus import _pdfs as hostile_pdfs
from test_formats import LEGACY, SAMPLE_DOCS
from typer.testing import CliRunner

from durabatch.cli import app
from durabatch.config import Settings
from durabatch.errors import DocumentError, Reason
from durabatch.formats import extract_text
from durabatch.sandbox import ParserPool
from durabatch.store import open_store

runner = CliRunner()
MAX = 10_000_000
ENGINES = ("pypdf", "pdfium")
LONG = (
    "The harbour board met in Rotterdam on 3 March 2025 and agreed £4,500 — “a fair price” — "
    "for the depot’s works; 50% is paid now, the rest (after the audit) in June. "
)
GENERATED = {
    "invoice": ("Invoice 2291 from Acme Ltd of Leeds.", "Total due: £4,500 by 3 March 2025."),
    "accents": (LEGACY["cp1252"], LEGACY["latin-1"]),
    "wrapped": (LONG * 25, LONG * 40, "Signed: Renée Müller."),
}


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def both(path: Path) -> tuple[str, str]:
    pypdf, pdfium = (extract_text(path, max_bytes=MAX, pdf_engine=e) for e in ENGINES)
    assert pypdf.pages == pdfium.pages and pypdf.sha256 == pdfium.sha256
    return pypdf.text, pdfium.text


def failures(path: Path) -> tuple[DocumentError, DocumentError]:
    found = []
    for engine in ENGINES:
        with pytest.raises(DocumentError) as caught:
            extract_text(path, max_bytes=MAX, pdf_engine=engine)
        found.append(caught.value)
    return found[0], found[1]


# --- the same text ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_pdfs_give_the_same_words(tmp_path: Path, name: str) -> None:
    pypdf, pdfium = both(write(tmp_path, f"{name}.pdf", text_pdf(*GENERATED[name])))
    assert pdfium.split() == pypdf.split()
    assert len(pdfium.split()) > 10


@pytest.mark.parametrize(
    "name", ["harbourline_board_minutes.pdf", "northwind_acquisition_release.pdf"]
)
def test_sample_pdfs_give_the_same_words(name: str) -> None:
    pypdf, pdfium = both(SAMPLE_DOCS / name)
    assert pdfium.split() == pypdf.split()
    assert "\ufffd" not in pdfium


def test_pdfium_text_has_the_shared_shape(tmp_path: Path) -> None:
    pypdf, pdfium = both(write(tmp_path, "a.pdf", text_pdf(*GENERATED["invoice"])))
    assert (
        pdfium
        == pypdf
        == ("Invoice 2291 from Acme Ltd of Leeds.\n\nTotal due: £4,500 by 3 March 2025.")
    )
    assert "\r" not in pdfium


def test_empty_user_password_is_opened_by_both(tmp_path: Path) -> None:
    data = encrypted_pdf(text_pdf("Open to all readers."), user_password="")
    assert both(write(tmp_path, "restricted.pdf", data)) == ("Open to all readers.",) * 2


# --- the same reasons -----------------------------------------------------------------------


def test_password_protected_is_encrypted_with_the_same_advice(tmp_path: Path) -> None:
    data = encrypted_pdf(text_pdf("Salaries 2025"), user_password="hunter2")
    pypdf, pdfium = failures(write(tmp_path, "salaries.pdf", data))
    assert pdfium.reason is pypdf.reason is Reason.ENCRYPTED
    assert pdfium.message == pypdf.message
    assert not pdfium.skipped


def test_scanned_pdf_needs_ocr_with_both(tmp_path: Path) -> None:
    pypdf, pdfium = failures(write(tmp_path, "scan.pdf", image_pdf(pages=3)))
    assert pdfium.reason is pypdf.reason is Reason.NO_TEXT_LAYER
    assert pdfium.message == pypdf.message
    assert "3 page(s)" in pdfium.message


CORRUPT = {
    "cut-20": text_pdf("Page one.", "Page two.")[:1000],
    "not-a-pdf": b"this is not a pdf at all, just words",
    "noise": b"%PDF-1.7\n" + bytes(range(256)) * 8,
    "no-pages": b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"trailer << /Root 1 0 R >>\n%%EOF",
}


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_pdf_is_malformed_with_both(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], keep: float
) -> None:
    data = text_pdf("Page one.", "Page two.")
    pypdf, pdfium = failures(write(tmp_path, "cut.pdf", data[: int(len(data) * keep)]))
    assert pdfium.reason is pypdf.reason is Reason.MALFORMED
    assert "corrupt or truncated" in pdfium.message and "qpdf" in pdfium.message
    assert capfd.readouterr().err == ""  # neither engine writes to stderr


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_pdf_is_malformed_with_both(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str
) -> None:
    pypdf, pdfium = failures(write(tmp_path, "bad.pdf", CORRUPT[name]))
    assert (
        (pdfium.reason, pdfium.skipped)
        == (pypdf.reason, pypdf.skipped)
        == (
            Reason.MALFORMED,
            False,
        )
    )
    assert capfd.readouterr().err == ""


def test_a_password_error_left_by_the_last_file_does_not_make_the_next_encrypted(
    tmp_path: Path,
) -> None:
    secret = write(tmp_path, "secret.pdf", encrypted_pdf(text_pdf("x"), user_password="pw"))
    no_pages = write(tmp_path, "no_pages.pdf", no_pages_pdf())  # fails with no error set
    for path, reason in [(secret, Reason.ENCRYPTED), (no_pages, Reason.MALFORMED)] * 2:
        assert failures(path)[1].reason is reason, path.name


def test_damaged_sample_is_malformed_with_both() -> None:
    pypdf, pdfium = failures(SAMPLE_DOCS / "damaged_report.pdf")
    assert pdfium.reason is pypdf.reason is Reason.MALFORMED


# --- in the parser processes ------------------------------------------------------------------


def test_the_pool_reads_with_pdfium_in_its_worker_processes(tmp_path: Path) -> None:
    good = write(tmp_path, "good.pdf", text_pdf(*GENERATED["wrapped"]))
    bad = write(tmp_path, "bad.pdf", CORRUPT["noise"])
    pool = ParserPool(size=2, pdf_engine="pdfium")
    try:
        assert pool.extract(good, max_bytes=MAX, timeout=60).text == both(good)[1]
        with pytest.raises(DocumentError) as caught:
            pool.extract(bad, max_bytes=MAX, timeout=60)
        assert caught.value.reason is Reason.MALFORMED
        with pytest.raises(DocumentError) as caught:  # the same size limit
            pool.extract(good, max_bytes=100, timeout=60)
        assert caught.value.reason is Reason.TOO_LARGE
    finally:
        pool.close()


def test_the_hostile_pdfs_end_as_they_do_with_pypdf(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path / "hostile")
    corpus.folder.mkdir()
    hostile_pdfs(corpus)  # broken and looping xref tables, encrypted, scanned, no pages...
    pool = ParserPool(size=2, pdf_engine="pdfium")
    try:
        for name, expected in sorted(corpus.outcomes.items()):
            try:
                text = pool.extract(corpus.folder / name, max_bytes=MAX, timeout=60).text
            except DocumentError as exc:
                status = "skipped" if exc.skipped else "failed"
                assert (status, str(exc.reason)) == (expected.status, expected.reason), name
                continue
            assert expected.status == "done", name
            assert all(word in text for word in expected.words), name
    finally:
        pool.close()


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def pdfs() -> Path:
    folder = Path("pdfs")
    folder.mkdir()
    for name, pages in GENERATED.items():
        (folder / f"{name}.pdf").write_bytes(text_pdf(*pages))
    (folder / "notes.txt").write_text("A plain note about the depot in Leeds.")
    return folder


def new_run(*args: str) -> str:
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output
    return str(result.stdout.splitlines()[0])


def reused_from(run_id: str) -> dict[str, str | None]:
    rows = query(Path("durabatch.db"), "SELECT d.path, s.cached_from FROM steps s JOIN documents"
                 " d ON d.id = s.doc_id WHERE s.step = 'extract' AND d.run_id = ?",
                 [run_id])  # fmt: skip
    return {Path(r["path"]).name: r["cached_from"] for r in rows}


def test_a_run_with_pdfium_matches_pypdf_and_neither_reuses_the_others_text(pdfs: Path) -> None:
    pypdf = new_run(str(pdfs))
    pdfium = new_run(str(pdfs), "--pdf-engine", "pdfium")
    reused = reused_from(pdfium)
    assert reused.pop("notes.txt", "").startswith(pypdf)  # no PDF engine reads a .txt
    assert set(reused.values()) == {None}  # every PDF parsed again, by PDFium
    again = new_run(str(pdfs), "--pdf-engine", "pdfium")
    assert all(
        v and v.startswith(pdfium) for k, v in reused_from(again).items() if k != "notes.txt"
    )
    exports = [
        {
            r["path"]: r["summary"]
            for r in map(json.loads, runner.invoke(app, ["export", run]).stdout.splitlines())
        }
        for run in (pypdf, pdfium)
    ]
    assert exports[0] == exports[1] and len(exports[0]) == 4  # same words, same local summaries
    assert runner.invoke(app, ["verify", pdfium]).exit_code == 0


def test_the_engine_is_kept_with_the_run(pdfs: Path) -> None:
    run_id = new_run(str(pdfs), "--pdf-engine", "pdfium")
    [row] = query(Path("durabatch.db"), "SELECT settings FROM runs WHERE id = ?", [run_id])
    assert json.loads(row["settings"])["pdf_engine"] == "pdfium"


def test_estimate_uses_the_engine_and_its_run_reuses_the_text(pdfs: Path) -> None:
    result = runner.invoke(app, ["estimate", str(pdfs), "--pdf-engine", "pdfium", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents"]["parsed"] == 4
    with_pypdf = reused_from(new_run(str(pdfs)))
    assert [k for k, v in with_pypdf.items() if v] == ["notes.txt"]
    with_pdfium = reused_from(new_run(str(pdfs), "--pdf-engine", "pdfium"))
    assert with_pdfium.pop("notes.txt")  # from either: no PDF engine reads a .txt
    assert all(v and v.startswith("estimate:") for v in with_pdfium.values())


def test_pdf_engine_from_durabatch_toml(pdfs: Path) -> None:
    Path("durabatch.toml").write_text('pdf_engine = "pdfium"\n')
    run_id = new_run(str(pdfs))
    [row] = query(Path("durabatch.db"), "SELECT settings FROM runs WHERE id = ?", [run_id])
    assert json.loads(row["settings"])["pdf_engine"] == "pdfium"


@pytest.mark.parametrize("where", ["flag", "toml"])
def test_an_unknown_engine_is_a_usage_error(pdfs: Path, where: str) -> None:
    args = ["run", str(pdfs)]
    if where == "flag":
        args += ["--pdf-engine", "mupdf"]
    else:
        Path("durabatch.toml").write_text('pdf_engine = "mupdf"\n')
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "must be pypdf or pdfium" in result.output
    assert not Path("durabatch.db").exists()


def cli_without_pypdfium2(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a process where ``import pypdfium2`` fails, as it does
    when the extra is not installed (a None entry in sys.modules blocks an import)."""
    code = (
        "import sys; sys.modules['pypdfium2'] = None; from durabatch.cli import main; "
        f"sys.argv = ['durabatch', *{list(args)!r}]; main()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABATCH_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize("command", ["run", "estimate"])
def test_pdfium_without_the_extra_says_how_to_install_it(pdfs: Path, command: str) -> None:
    result = cli_without_pypdfium2(command, str(pdfs), "--pdf-engine", "pdfium")
    assert result.returncode == 2
    assert "pip install 'pypdfium2>=5'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not Path("durabatch.db").exists()  # refused before a run was created


def test_resuming_a_pdfium_run_without_the_extra_says_how_to_install_it(pdfs: Path) -> None:
    store = open_store("durabatch.db")  # a pdfium run, created but not yet processed
    stored = Settings(pdf_engine="pdfium").run_settings() | {"cwd": os.getcwd()}  # as `run` does
    run_id = store.create_run(stored, [str(pdfs)]).id
    store.close()
    assert cli_without_pypdfium2("status", run_id).returncode == 0  # reading needs no engine
    result = cli_without_pypdfium2("resume", run_id)
    assert result.returncode == 2
    assert "this run reads PDFs with pdfium" in result.stderr
    assert "pip install 'pypdfium2>=5'" in result.stderr
    assert "Traceback" not in result.stderr
    assert runner.invoke(app, ["resume", run_id]).exit_code == 0  # with the extra it finishes


@pytest.mark.parametrize("command", ["run", "estimate"])
def test_help_names_the_option_and_the_extra(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--pdf-engine" in result.stdout
    flat = result.stdout.replace("│", "").replace("\n", "").replace(" ", "")
    assert "pipinstall'pypdfium2>=5'" in flat
