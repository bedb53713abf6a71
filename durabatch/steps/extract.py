"""extract: a file's visible text, parsed in a worker process under a deadline."""

from __future__ import annotations

from pathlib import Path

from durabatch.steps.context import StepContext
from durabatch.store.records import StepResult, Work


def run(work: Work, ctx: StepContext) -> StepResult:
    settings = ctx.settings
    extracted = ctx.parsers.extract(
        Path(work.document.source),
        max_bytes=settings.max_bytes,
        timeout=settings.extract_timeout,
    )
    digest = ctx.artifacts.put_text(extracted.text)
    output = {"kind": extracted.kind, "chars": len(extracted.text), "pages": extracted.pages}
    return StepResult(output=output, artifact=digest, sha256=extracted.sha256)
