"""The visible text of an HTML page.

Built on the standard library's forgiving ``html.parser`` rather than a strict
parser, so that unclosed tags, stray ``</div>`` and other real-world damage
still yield the text a browser would show.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from durabatch.formats.decode import decode_bytes
from durabatch.formats.text import normalize

_HIDDEN = frozenset({"script", "style", "noscript", "template"})
_PARAGRAPH = frozenset(
    {
        *("address", "article", "aside", "blockquote", "body", "caption", "details", "dialog"),
        *("div", "dl", "fieldset", "figcaption", "figure", "footer", "form", "header", "hgroup"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "hr", "main", "nav", "ol", "p", "pre", "section"),
        *("summary", "table", "title", "ul"),
    }
)
_LINE = frozenset({"br", "dd", "dt", "li", "option", "tr"})
_CELL = frozenset({"td", "th"})
_SPACES = re.compile(r"\s+")


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden_depth = 0
        self._in_head = False
        self._in_title = False
        self._pre_depth = 0
        self._cells_in_row = 0
        self._lists: list[int] = []  # next item number per open list; 0 for <ul>
        self._marker = ""  # "- " or "3. ", written before the item's first word

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden_depth += 1
        elif tag == "head":
            self._in_head = True
        elif tag == "title":
            self._in_title = True
        elif tag in ("ul", "ol"):
            self._lists.append(0 if tag == "ul" else _ol_start(attrs))
        if tag in _PARAGRAPH or tag in _LINE or tag in _CELL:
            self._in_head = self._in_head and tag == "title"  # body content closes <head>
        self._break_before(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden_depth = max(0, self._hidden_depth - 1)
        elif tag == "head":
            self._in_head = False
        elif tag == "title":
            self._in_title = False
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
        if tag in _PARAGRAPH:
            self._break(2)
        elif tag in _LINE and tag != "br":
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self._hidden_depth or (self._in_head and not self._in_title):
            return
        if self._marker and data.strip():
            self.parts.append(self._marker)
            self._marker = ""
        self.parts.append(data if self._pre_depth else _SPACES.sub(" ", data))

    def _break(self, newlines: int) -> None:
        """End the line or paragraph; adjacent breaks merge, so ``</li><li>`` is one."""
        while self.parts and not self.parts[-1].strip():
            newlines = max(newlines, self.parts.pop().count("\n"))
        self.parts.append("\n" * newlines)

    def _break_before(self, tag: str) -> None:
        if tag == "pre":
            self._pre_depth += 1
        elif tag == "tr":
            self._cells_in_row = 0
        elif tag == "li":
            self._marker = self._next_marker()
        if tag in _PARAGRAPH:
            self._break(2)
        elif tag in _LINE:
            self._break(1)
        elif tag in _CELL:
            self.parts.append(" | " if self._cells_in_row else "")
            self._cells_in_row += 1

    def _next_marker(self) -> str:
        if not self._lists or not self._lists[-1]:
            return "- "
        self._lists[-1] += 1
        return f"{self._lists[-1] - 1}. "


def _ol_start(attrs: list[tuple[str, str | None]]) -> int:
    start = dict(attrs).get("start") or "1"
    return int(start) if start.isdigit() and int(start) > 0 else 1


def html_to_text(markup: str) -> str:
    """Visible text of ``markup``: no scripts, styles or head, blocks as paragraphs."""
    parser = _VisibleText()
    parser.feed(markup)
    parser.close()
    return normalize("".join(parser.parts))


def extract_html(data: bytes) -> str:
    """Text of an ``.html`` file, decoded with the charset the page declares."""
    return html_to_text(decode_bytes(data, html=True))
