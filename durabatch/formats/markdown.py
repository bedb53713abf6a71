"""Markdown documents: rendered to HTML, then read like any web page.

Rendering first (rather than stripping ``#`` and ``*`` by hand) gets links,
emphasis, code spans, tables and inline HTML right, and reuses the HTML rules
for what is visible.

markdown-it stops at 20 levels of nested blocks (quotes, lists) and silently
drops everything below that level, to the end of the document. A document
nested that deep is read as plain text instead: its markup characters stay, but
no words are lost.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.parser_block import ParserBlock
from markdown_it.rules_block import StateBlock

from durabatch.formats.decode import decode_bytes
from durabatch.formats.html import html_to_text
from durabatch.formats.text import normalize

_TOO_DEEP = "durabatch_too_deep"


class _DepthWatchingBlock(ParserBlock):
    """The block parser, noting in ``env`` when it reaches markdown-it's nesting limit."""

    def tokenize(self, state: StateBlock, startLine: int, endLine: int) -> None:
        if state.level >= state.md.options.maxNesting:
            state.env[_TOO_DEEP] = True
        super().tokenize(state, startLine, endLine)


def markdown_to_text(source: str) -> str:
    """Visible text of a Markdown document (CommonMark plus tables)."""
    renderer = MarkdownIt("commonmark").enable("table")
    block = _DepthWatchingBlock()
    block.ruler = renderer.block.ruler
    renderer.block = block
    env: dict[str, bool] = {}
    tokens = renderer.parse(source, env)
    if env.get(_TOO_DEEP):
        return normalize(source)
    return html_to_text(renderer.renderer.render(tokens, renderer.options, env))


def extract_markdown(data: bytes) -> str:
    """Text of a ``.md`` file."""
    return markdown_to_text(decode_bytes(data))
