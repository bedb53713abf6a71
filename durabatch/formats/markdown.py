"""Markdown documents: rendered to HTML, then read like any web page.

Rendering first (rather than stripping ``#`` and ``*`` by hand) gets links,
emphasis, code spans, tables and inline HTML right, and reuses the HTML rules
for what is visible.
"""

from __future__ import annotations

from markdown_it import MarkdownIt

from durabatch.formats.decode import decode_bytes
from durabatch.formats.html import html_to_text


def markdown_to_text(source: str) -> str:
    """Visible text of a Markdown document (CommonMark plus tables)."""
    renderer = MarkdownIt("commonmark").enable("table")
    return html_to_text(renderer.render(source))


def extract_markdown(data: bytes) -> str:
    """Text of a ``.md`` file."""
    return markdown_to_text(decode_bytes(data))
