"""Hostile inputs through the real `durabatch run`: every file ends in its reason or its text.

The corpus (``hostile_corpus.py``) is written at test time. One run goes over all of it
with ``--concurrency 1``; while its slow first page holds the only parser, the test deletes
a file that discovery has already recorded, so that file is gone between discovery and
extraction.

The unreadable file is mode 000. Root reads such a file anyway (CAP_DAC_OVERRIDE), and
these tests often run as root; so when the test runs as root, the run is started through
``setpriv`` with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped from its capability
bounding set. It is still root and owns everything else in the workspace, but it cannot
open the mode-000 file: exactly the position of a user whose file is not theirs. Without
``setpriv`` the test is skipped with that reason rather than pretending.
"""

from __future__ import annotations

import os
import random
import shutil
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from crashkit import SLOW_TEXT, EventLog, Proc, Workspace, doc_ids, has_step_event, query
from crashkit import slow_html as make_slow_html
from hostile_corpus import DELETED, MAX_BYTES, SLOW, UNREADABLE, Corpus, write_corpus

from durabatch import names
from durabatch.discovery import discover
from durabatch.errors import DocumentError, DocumentSkipped
from durabatch.formats import extract_text
from durabatch.formats.decode import decode_bytes
from durabatch.formats.markdown import markdown_to_text

FAILED = 1
NO_DAC = ("--bounding-set", "-dac_override,-dac_read_search")


@dataclass
class _Workspace(Workspace):
    prefix: tuple[str, ...] = ()

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [*self.prefix, *super()._argv(args)]


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[_Workspace]:
    workspace = _Workspace(tmp_path)
    yield workspace
    workspace.cleanup()
    _restore_modes(tmp_path / "in")


def _restore_modes(folder: Path) -> None:
    """Give the mode-000 file its permissions back, so tmp_path can be cleaned up."""
    unreadable = folder / UNREADABLE
    if unreadable.exists():
        unreadable.chmod(0o644)


def _without_read_override() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, which reads mode-000 files, and setpriv is not installed")
    return (setpriv, *NO_DAC)


def _text(ws: Workspace, run_id: str) -> dict[str, str]:
    """Extracted text by path, as the extract steps committed it: in the database when
    small, else in an artifact file."""
    rows = query(
        ws.db,
        "SELECT d.path, s.artifact, t.text FROM documents d JOIN steps s ON s.doc_id = d.id"
        " LEFT JOIN texts t ON t.digest = s.artifact"
        " WHERE d.run_id = ? AND s.step = 'extract' AND s.status = 'done'",
        (run_id,),
    )
    store = ws.root / "d.db.d" / "artifacts"
    return {
        r["path"]: r["text"]
        if r["text"] is not None
        else (store / r["artifact"][:2] / r["artifact"]).read_text("utf-8")
        for r in rows
    }


def _delete_after_discovery(proc: Proc, log: EventLog, victim: Path, shown: str) -> None:
    """Delete ``victim`` once it is discovered and the slow first page is being parsed."""
    slow = f"in/{SLOW}"
    deadline = time.monotonic() + 60
    while True:
        events = log.refresh()
        if shown in doc_ids(events) and has_step_event(events, "step_started", slow, "extract"):
            break
        assert proc.popen.poll() is None, f"exited before the deletion point:\n{proc.describe()}"
        assert time.monotonic() < deadline, f"deletion point not reached:\n{proc.describe()}"
        time.sleep(0.01)
    victim.unlink()
    # the point of the test: the slow page still holds the parser, so this one waits
    assert not has_step_event(log.refresh(), "step_started", shown, "extract")


@pytest.mark.timeout(300)  # the run alone is given 110 s, near the 120 s default
def test_every_hostile_input_ends_in_its_reason_or_its_text(ws: _Workspace) -> None:
    ws.prefix = _without_read_override()
    corpus = write_corpus(ws.root / "in", slow_html=make_slow_html(3, SLOW_TEXT))
    proc = ws.spawn("run", "in", "--concurrency", "1")
    _delete_after_discovery(proc, EventLog(ws.db), corpus.folder / DELETED, f"in/{DELETED}")
    assert proc.wait(110) == FAILED, proc.describe()
    ws.prefix = ()
    for output in (proc.stdout, proc.stderr):
        assert "Traceback" not in output, proc.describe()

    [run_id] = ws.run_ids()
    export = ws.export(run_id)
    got = {path: (row["status"], row["reason"]) for path, row in export.items()}
    assert got == {f"in/{name}": (o.status, o.reason) for name, o in corpus.outcomes.items()}
    _assert_texts(ws, run_id, corpus)
    for path, row in export.items():
        if row["status"] != "done":
            assert row["error"] and "Traceback" not in row["error"], (path, row)
            assert "; " in row["error"], f"{path}: no next step in {row['error']!r}"
    assert "loop of links" in export["in/loop_a.txt"]["error"]
    assert "Permission denied" in export[f"in/{UNREADABLE}"]["error"]
    assert "does not exist" in export[f"in/{DELETED}"]["error"]
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()


def _assert_texts(ws: Workspace, run_id: str, corpus: Corpus) -> None:
    texts = _text(ws, run_id)
    for name, outcome in corpus.outcomes.items():
        if outcome.status != "done":
            continue
        text = texts[f"in/{name}"]
        for word in outcome.words:
            assert word in text, f"{name}: {word!r} not in {text[:300]!r}"
        assert "Ã" not in text and "Ð" not in text, f"{name}: mojibake in {text[:300]!r}"


# -- focused: the size limit ---------------------------------------------------------------


def test_a_file_over_the_limit_is_refused_without_being_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as file:
        file.truncate(MAX_BYTES + 1)
    tracemalloc.start()
    try:
        with pytest.raises(DocumentError) as caught:
            extract_text(huge, max_bytes=MAX_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "too_large", caught.value
    assert peak < 1_000_000, f"{peak:,} bytes allocated to refuse a file by its size"


def test_the_size_limit_is_configurable(ws: _Workspace) -> None:
    folder = ws.root / "in"
    folder.mkdir()
    (folder / "big.txt").write_text("A long note about Riverton. " * 100, encoding="utf-8")
    (folder / "small.txt").write_text("A short note about Riverton.", encoding="utf-8")
    proc = ws.cli("run", "in", env={"DURABATCH_MAX_BYTES": "1000"})
    assert proc.popen.returncode == 0, proc.describe()
    [run_id] = ws.run_ids()
    export = ws.export(run_id)
    assert (export["in/big.txt"]["status"], export["in/big.txt"]["reason"]) == (
        "skipped",
        "too_large",
    )
    assert "1,000-byte limit" in export["in/big.txt"]["error"]
    assert export["in/small.txt"]["status"] == "done"


# -- focused: the fixes --------------------------------------------------------------------


def test_links_that_lead_nowhere_are_documents_and_folder_links_are_not_walked(
    tmp_path: Path,
) -> None:
    """Regression: a loop of links and a broken link vanished from the run silently."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "note.txt").write_text("A note.", encoding="utf-8")
    os.symlink("loop_b.txt", folder / "loop_a.txt")
    os.symlink("loop_a.txt", folder / "loop_b.txt")
    os.symlink("gone.txt", folder / "broken.txt")
    os.symlink("..", folder / "sub" / "up")
    found = {d.path: d for d in discover(["in"], tmp_path)}
    assert sorted(found) == ["in/broken.txt", "in/loop_a.txt", "in/loop_b.txt", "in/note.txt"]
    assert found["in/loop_a.txt"].source == str(folder.resolve() / "loop_a.txt")
    for name, why in [("loop_a.txt", "loop of links"), ("broken.txt", "link to gone.txt")]:
        with pytest.raises(DocumentError) as caught:
            extract_text(Path(found[f"in/{name}"].source), max_bytes=MAX_BYTES)
        assert caught.value.reason == "missing"
        assert why in str(caught.value)


def test_each_source_is_the_real_path_however_the_folder_was_reached(tmp_path: Path) -> None:
    """Discovery resolves only links, one by one: any other file's source is its folder's
    real path and its name. Whichever way in (the folder itself, ".", a link to it, a
    path through "..", a folder that holds the one the run starts in), each document's
    source is what resolving it gives, its size is its file's, and it is shown relative
    to where the run started when it is inside it."""
    tmp = tmp_path.resolve()
    real = tmp / "elsewhere" / "real"
    (real / "deeper").mkdir(parents=True)
    (real / "target.txt").write_text("The target.", encoding="utf-8")
    (real / "deeper" / "inner.md").write_text("# Inner", encoding="utf-8")
    base = tmp / "base"
    (base / "in" / "sub").mkdir(parents=True)
    (base / "in" / "a.txt").write_text("A.", encoding="utf-8")
    (base / "in" / "sub" / "b.txt").write_text("Bee.", encoding="utf-8")
    os.symlink(real / "target.txt", base / "in" / "sub" / "to_target.txt")
    os.symlink(real, base / "to_real")  # a folder link given by name is walked
    weird = os.fsdecode(b"caf\xe9 \xc3\xbc.txt")  # one name: a Latin-1 byte, then UTF-8
    (base / "in" / weird).write_text("Weird.", encoding="utf-8")
    givens = [["in"], ["."], ["to_real"], ["to_real/.."], ["in/../in/sub"], [str(real)],
              [str(base / "to_real")], [str(tmp)]]  # fmt: skip
    for given in givens:
        found = list(discover(given, base))
        assert found, given
        for doc in found:
            written = base / doc.path  # a name that is not UTF-8 is stored written out
            on_disk = undone[0] if (undone := names.undo(written)) else written
            assert doc.source == names.storable(str(on_disk.resolve())), (given, doc)
            assert doc.size == os.stat(on_disk).st_size, (given, doc)
    target, inner = str(real / "target.txt"), str(real / "deeper" / "inner.md")
    expected = {  # given -> {path shown: source}
        "to_real": {"to_real/deeper/inner.md": inner, "to_real/target.txt": target},
        "to_real/..": {"to_real/../real/deeper/inner.md": inner,
                       "to_real/../real/target.txt": target},  # resolved: ../ of the link's target
        str(real): {inner: inner, target: target},  # outside: shown as given
        str(tmp): {  # it holds the base: what is inside the base is shown relative to it
            inner: inner, target: target, "in/a.txt": str(base / "in" / "a.txt"),
            "in/sub/b.txt": str(base / "in" / "sub" / "b.txt"),
            "in/sub/to_target.txt": target,
            "in/caf\\xe9 \u00fc.txt": names.storable(str(base / "in" / weird)),
        },
    }  # fmt: skip
    for given, wanted in expected.items():
        assert {d.path: d.source for d in discover([given], base)} == wanted, given


def test_utf8_with_a_damaged_byte_stays_utf8() -> None:
    """Regression: one bad byte sent the whole file to the statistical guess: mojibake."""
    text = "Café Müller in Zürich, déjà vu.\n" * 3
    data = text.encode() + b"cut here: \xe2\x82 then more\n" + text.encode()
    decoded = decode_bytes(data)
    assert "Café Müller in Zürich" in decoded
    assert decoded.count("\ufffd") == 1
    legacy = decode_bytes(text.encode("cp1252"))  # no well-formed UTF-8: not taken for it
    assert "Café Müller in Zürich" in legacy and "\ufffd" not in legacy
    assert decode_bytes("Правление порта Ривертон".encode("cp1251")) == "Правление порта Ривертон"


def test_high_bytes_that_fit_no_encoding_are_binary(tmp_path: Path) -> None:
    """Regression (found by fuzzing): random bytes without NUL or control characters,
    named .txt, came out as a page of cp1252 mojibake and went on to be summarised."""
    noise = bytes(byte | 0x80 for byte in random.Random(4).randbytes(4096))
    path = tmp_path / "noise.txt"
    path.write_bytes(noise)
    with pytest.raises(DocumentSkipped) as caught:
        extract_text(path, max_bytes=MAX_BYTES)
    assert caught.value.reason == "unsupported_type"
    assert "no text encoding fits" in caught.value.message
    accented = "Café Müller in Zürich; naïve façade, déjà vu. " * 5
    assert decode_bytes(accented.encode("cp1252")).startswith("Café Müller")


@pytest.mark.parametrize(
    ("source", "words"),
    [
        (">" * 50_000 + " Quoted far too deep.\n", ["Quoted far too deep."]),
        ("Top.\n\n" + "- " * 30 + "Deep item.\n\nAfter.\n", ["Top.", "Deep item.", "After."]),
        ("Top.\n\n" + "> " * 25 + "Deep.\n\n\nAfter.\n", ["Top.", "Deep.", "After."]),
    ],
)
def test_markdown_nested_past_the_parser_limit_keeps_its_words(
    source: str, words: list[str]
) -> None:
    """Regression: markdown-it drops everything below 20 levels, to the end of the file."""
    text = markdown_to_text(source)
    for word in words:
        assert word in text, (word, text[:200])


def test_markdown_within_the_limit_is_still_rendered() -> None:
    text = markdown_to_text("# Title\n\n" + "> " * 5 + "**bold** [link](http://x.example)\n")
    assert text == "Title\n\nbold link"
