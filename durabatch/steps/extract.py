"""extract: a file's visible text, parsed in a worker process under a deadline.

Text is kept by content: when the same bytes were extracted before in this
database (by a run, or by ``durabatch estimate``), their text is reused and the
file is not parsed again. The key is the bytes' SHA-256, the file's extension
(which picks the parser) and the extractor's version, which names the PDF
engine when it is not pypdf: text PDFium read is never reused by a pypdf run,
nor the reverse, while pypdf's keys are the ones they always were.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from durabatch import artifacts
from durabatch.artifacts import ArtifactStore
from durabatch.formats import SUFFIXES, Extracted
from durabatch.steps.context import Reuse, StepContext
from durabatch.store.records import CachedStep, StepResult, Work

# change when extraction gives different text for the same bytes: older text is not reused
EXTRACTOR_VERSION = "extract-1"
# a file up to this size is hashed from one read: hashlib.file_digest allocates a fresh
# 256 KiB buffer a call, which cost the writer's thread 80 us a small file
SMALL_FILE_BYTES = 64 << 10


def run(work: Work, ctx: StepContext) -> StepResult:
    if (found := reused(work, ctx)) is not None:
        return found
    settings = ctx.settings
    extracted = ctx.parsers.extract(
        Path(work.document.source), max_bytes=settings.max_bytes, timeout=settings.extract_timeout
    )
    return result_of(work, extracted, ctx)


def reused(work: Work, ctx: StepContext, most: int | None = None) -> StepResult | None:
    """The step's result from text extracted earlier from the same bytes, if there is any.
    ``most``: the largest file to hash for it (a larger one is parsed, not reused)."""
    if ctx.reuse is None:
        return None
    settings = ctx.settings
    limit = settings.max_bytes if most is None else min(most, settings.max_bytes)
    found = reusable(ctx.reuse, ctx.artifacts, work.document.source, limit,
                     settings.pdf_engine)  # fmt: skip
    if found is None:
        return None
    key, digest, hit = found
    return StepResult(hit.output, artifact=hit.artifact, sha256=digest, cache_key=key,
                      cached_from=hit.source)  # fmt: skip


def result_of(work: Work, extracted: Extracted, ctx: StepContext) -> StepResult:
    """The step's result from the text a parser just gave."""
    text = extracted.text
    small = artifacts.inline(text)  # kept in the database, in the step's own commit
    digest = artifacts.digest_of(text) if small else ctx.artifacts.put_text(text)
    key = content_key(extracted.sha256, work.document.source, ctx.settings.pdf_engine)
    return StepResult(output=describe(extracted), artifact=digest, text=text if small else None,
                      sha256=extracted.sha256, cache_key=key)  # fmt: skip


def text_of(work: Work, ctx: StepContext) -> str:
    """The document's extracted text, for the steps after extract."""
    if work.text is not None:
        return work.text
    assert work.text_artifact is not None, f"{work.step} needs the extracted text"
    return ctx.artifacts.get_text(work.text_artifact)


def describe(extracted: Extracted) -> dict[str, Any]:
    """The extract step's output; the text itself is an artifact."""
    return {"kind": extracted.kind, "chars": len(extracted.text), "pages": extracted.pages}


def reusable(lookup: Reuse, store: ArtifactStore, source: str, max_bytes: int,
             pdf_engine: str) -> tuple[str, str, CachedStep] | None:  # fmt: skip
    """(key, sha256, earlier extraction) when these bytes were extracted before and
    their text is still on disk."""
    digest = file_sha256(source, max_bytes)
    if digest is None:
        return None
    key = content_key(digest, source, pdf_engine)
    hit = lookup(key, digest)
    if hit is None or hit.artifact is None:
        return None
    if not hit.inline and not store.path(hit.artifact).exists():
        return None
    return key, digest, hit


def content_key(sha256: str, source: str, pdf_engine: str) -> str:
    inputs = [sha256, "extract", extractor_version(source, pdf_engine), suffix_of(source).lower()]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def extractor_version(source: str, pdf_engine: str) -> str:
    """What made a file's text: the PDF engine counts for a file that may be a PDF
    (``.pdf``, or an extension we do not know, recognised by its magic)."""
    if pdf_engine == "pypdf" or SUFFIXES.get(suffix_of(source).lower(), "pdf") != "pdf":
        return EXTRACTOR_VERSION
    return f"{EXTRACTOR_VERSION}+{pdf_engine}"


def suffix_of(source: str) -> str:
    """A file's extension, by the rule of ``Path(source).suffix`` up to Python 3.13,
    without making a Path (the writer's thread asks for every document, and a Path cost
    more than the rest of the key). The rule is kept as it is: the extraction keys made
    with it must not change with the Python that runs (3.14's pathlib reads "a." as ".")."""
    name = source.rpartition(os.sep)[2]
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def file_sha256(path: str | Path, max_bytes: int) -> str | None:
    """The hash of a regular file small enough to extract; None for anything else,
    which the parser then turns into its reason (missing, too large, ...)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is then no regular file)
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
                return None
            if info.st_size <= SMALL_FILE_BYTES:  # file_digest's 256 KiB buffer costs more
                data = handle.read(SMALL_FILE_BYTES + 1)
                if len(data) <= SMALL_FILE_BYTES:
                    return hashlib.sha256(data).hexdigest()
                handle.seek(0)  # it grew since fstat
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None
