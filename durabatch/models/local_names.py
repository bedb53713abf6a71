"""PERSON, ORG, LOCATION and OTHER from runs of capitalised words.

A run ("Dr. Jane Doe", "Bank of England", "Clean Air Act") is cut at
capitalised function words ("The", "However") and possessives, then read by
rules, most specific first: a known place or organisation; an event or law
word at the end (OTHER); an organisation word with its modifiers (ORG); a
place word ("River", "County") or a direction before a known place
(LOCATION); a title before a name, a known given name before a surname, or
a name beside "said" (PERSON); an acronym (ORG). Anything else is left
out: precision matters more than recall.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

from durabatch.models.base import EntityType
from durabatch.models.local_lexicon import given_names, known_orgs, places, stopwords
from durabatch.models.local_patterns import MONTHS, WEEKDAYS


def _words(text: str) -> frozenset[str]:
    """A word list written as one string, as a set."""
    return frozenset(text.split())


Found = tuple[int, str, EntityType]

_CONTEXT_CHARS = 20

_UPPER = "A-Z\u00c0-\u00d6\u00d8-\u00de"
_WORD = rf"(?:(?:[{_UPPER}]\.){{2,}}|[{_UPPER}][\w'\u2019&-]*\.?)"
_LINK = r"(?:of|for|de|del|della|di|da|do|dos|du|la|le|van|von|der|den|bin|ibn|al|the|and|on|&)"
_GAP = r"(?:[ \t]+|[ \t]*\n[ \t]*)"  # a run may wrap onto the next line, not past a blank one
RUN = re.compile(rf"{_WORD}(?:{_GAP}(?:{_LINK}{_GAP})*{_WORD})*")
_TOKEN = re.compile(rf"{_WORD}|{_LINK}")
_WORD_RE = re.compile(_WORD)
_ACRONYM = re.compile(r"[A-Z]{2,6}|[A-Z]{1,4}&[A-Z]{1,4}")
_NAME_WORD = re.compile(rf"[{_UPPER}][a-z\u00df-\u00ff'\u2019-]+(?:[A-Z][a-z]+)?|[{_UPPER}]\.")
_SAID_BEFORE = re.compile(r"(?:\bsaid|\bsays|\baccording to|\btold|\bwrote)[ \t]+$")
_SAID_AFTER = re.compile(r"^,?[ \t]+(?:said|says|told|added|explained|noted|wrote|who)\b")

ORG_WORDS = _words(
    """
    Inc Incorporated Corp Corporation Ltd Limited LLC LLP PLC Plc GmbH AG SA NV BV Co Company
    Companies Group Holdings Partners Ventures Bank Bancorp University College Institute Academy
    School Agency Council Ministry Department Committee Commission Foundation Association
    Authority Board Bureau Office Services Court Parliament Congress Senate Assembly
    Party Union Federation Organization Organisation Society Trust Fund Reserve Exchange
    Airlines Airways Motors Labs Laboratories Laboratory Pharmaceuticals Industries Enterprises
    Studios Hospital Clinic Center Centre Museum Library Police Army Navy Forces Church Club
    Coalition Alliance Times Journal"""
)
EVENT_WORDS = _words(
    """
    Act Treaty Agreement Accord Accords Conference Summit Olympics Games Cup Championship
    Championships Festival Expo Award Awards Prize War Convention Protocol Declaration"""
)
PLACE_WORDS = _words(
    """
    City County Province Region District River Lake Island Islands Valley Bay Sea Ocean
    Mountains Street Avenue Road Boulevard Square Airport Peninsula Desert Coast"""
)
PLACE_HEADS = _words("Lake Mount Mt Cape Port Fort")
DIRECTIONS = _words(
    """
    North South East West Northern Southern Eastern Western Central Greater Upper Lower
    Northeast Northwest Southeast Southwest"""
)
STRONG_TITLES = _words(
    """
    Mr Mrs Ms Miss Mx Dr Prof Professor Sir Dame Lord Lady President Senator Sen Rep
    Representative Congressman Congresswoman Governor Gov Mayor Judge Chancellor Pope King Queen
    Prince Princess CEO CFO CTO COO Chairman Chairwoman Ambassador Commissioner Captain Capt
    Colonel Col Lieutenant Lt Sergeant Sgt Detective Coach Rev Reverend Minister Secretary"""
)
WEAK_TITLES = _words(
    "General Gen Chief Executive Chair Justice Director Prime Vice Founder Officer Deputy"
)
NOT_ORG_ACRONYMS = _words(
    """
    CEO CFO CTO COO CIO CMO EVP SVP VP USD EUR GBP JPY CNY RMB CHF GDP AI API PDF HTML JSON CSV
    XML URL HTTP HTTPS SQL CPU GPU RAM SSD TV PM AM OK FAQ ID IT HR PR QA UI UX VAT ETA FYI ASAP
    DIY NB PS RSVP TBD LLM NLP ML IPO ESG KPI ROI USB DNA RNA LED LCD MBA PHD BC AD CE BCE II
    III IV VI VII VIII IX XI XII XIII XIV XV XX AND THE FOR NOT YES NO TODO NOTE FY CO SMS GPS
    PIN ATM EV EVS OS PC MP"""
)
_NOT_NAMES = ORG_WORDS | PLACE_WORDS
_JOINTS = _words("and the on")
TITLES = STRONG_TITLES | WEAK_TITLES
ABBREVIATIONS = TITLES | _words("Inc Corp Ltd Co Jr Sr St Mt Bros Plc")
_CALENDAR = _words(f"{MONTHS}|{WEEKDAYS}".replace("|", " "))
_NAME_LINKS = _words("de del della di da do dos du la le van von der den bin ibn al")


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    link: bool  # a lowercase joiner ("of", "van", "&") rather than a word

    @property
    def bare(self) -> str:
        return self.text.rstrip(".")


def read_run(run: re.Match[str], text: str) -> list[Found]:
    """The entities in one run of capitalised words."""
    start, end = run.span()
    before = text[max(0, start - _CONTEXT_CHARS) : start]
    found = _read(run.group(), before, text[end : end + _CONTEXT_CHARS])
    return [(start + offset, value, kind) for offset, value, kind in found]


@lru_cache(maxsize=4096)
def _read(run: str, before: str, after: str) -> list[Found]:
    """A run's entities, offsets relative to the run: a document repeats its names."""
    text = before + run + after
    tokens = [
        Token(m.group(), len(before) + m.start(), not _WORD_RE.fullmatch(m.group()))
        for m in _TOKEN.finditer(run)
    ]
    found: list[Found] = []
    for part in _cut(tokens):
        whole = _join(part)
        if whole in places() or whole in known_orgs():
            found.append((part[0].start, whole, "LOCATION" if whole in places() else "ORG"))
            continue
        end = part[-1].start + len(part[-1].text)
        context = text[max(0, part[0].start - _CONTEXT_CHARS) : part[0].start]
        found.extend(_classify(part, context, text[end : end + _CONTEXT_CHARS]))
    return [(offset - len(before), value, kind) for offset, value, kind in found]


def _cut(tokens: list[Token]) -> list[list[Token]]:
    """Split a run at capitalised function words, possessives and "Inc." ends."""
    parts: list[list[Token]] = [[]]
    stop = stopwords()
    for token in tokens:
        if (
            not token.link
            and token.text.lower() in stop
            and not token.text.isupper()
            # "Theresa May" keeps her surname; "May we" loses the verb.
            and not (token.text in _CALENDAR and parts[-1])
        ):
            parts.append([])
            continue
        possessive = token.text.endswith(("'s", "\u2019s"))
        if possessive:
            token = Token(token.text[:-2], token.start, False)
        # A period after a plain word ends its sentence; after "Inc." it may.
        full_stop = token.text.endswith(".") and not _keeps_period(token.bare)
        if full_stop:
            token = Token(token.bare, token.start, False)
        parts[-1].append(token)
        if possessive or full_stop or (token.text.endswith(".") and token.bare in ORG_WORDS):
            parts.append([])
    return [trimmed for part in parts if (trimmed := _trim(part))]


def _keeps_period(bare: str) -> bool:
    return bare in ABBREVIATIONS or len(bare) == 1 or "." in bare


def _trim(part: list[Token]) -> list[Token]:
    start, end = 0, len(part)
    while start < end and part[start].link:
        start += 1
    while end > start and part[end - 1].link:
        end -= 1
    return part[start:end]


def _join(part: list[Token]) -> str:
    return " ".join(token.text for token in part)


def _classify(part: list[Token], before: str, after: str) -> list[Found]:
    words = [t for t in part if not t.link]
    if len(words) >= 2 and words[-1].bare in EVENT_WORDS:
        return [(part[0].start, _join(part), "OTHER")]
    org = _org_span(part)
    if org is not None:
        left, right = org
        return [
            *_classify_rest(part[:left], before, ""),
            (part[left].start, _join(part[left:right]), "ORG"),
            *_classify_rest(part[right:], "", after),
        ]
    joints = [i for i, t in enumerate(part) if t.text in _JOINTS]
    if joints:
        # "Paris and Berlin", "the EU and the UK": each side on its own.
        edges = [-1, *joints, len(part)]
        return [
            found
            for a, b in pairwise(edges)
            for found in _classify_rest(part[a + 1 : b], before if a < 0 else "", after)
        ]
    return _place(part) or _person(part, before, after) or _acronym(part, before, after)


def _classify_rest(part: list[Token], before: str, after: str) -> list[Found]:
    part = _trim(part)
    if not part:
        return []
    whole = _join(part)
    if whole in places() or whole in known_orgs():
        return [(part[0].start, whole, "LOCATION" if whole in places() else "ORG")]
    return _classify(part, before, after)


def _org_span(part: list[Token]) -> tuple[int, int] | None:
    """Where the organisation named around its rightmost ORG word lies."""
    heads = [i for i, t in enumerate(part) if not t.link and t.bare in ORG_WORDS]
    if not heads:
        return None
    head = heads[-1]
    left = head
    while left > 0 and _extends_left(part, left - 1):
        left -= 1
    right = head + 1
    while right < len(part) and _extends_right(part[right]):
        right += 1
    span = _trim(part[left:right])
    if sum(1 for t in span if not t.link) < 2:
        return None
    left = part.index(span[0])
    return left, left + len(span)


def _extends_left(part: list[Token], i: int) -> bool:
    token = part[i]
    if token.link:
        # "Bank of America Corp." but not "Jane Doe of Acme Corp."
        if token.text in ("of", "for"):
            return i > 0 and part[i - 1].bare in ORG_WORDS
        return token.text in ("&", "and", "de")
    return token.bare not in TITLES


def _extends_right(token: Token) -> bool:
    if token.link:
        return token.text in ("of", "for", "&", "de")
    return token.bare not in TITLES and token.text.lower() not in given_names()


def _place(part: list[Token]) -> list[Found]:
    words = [t for t in part if not t.link]
    if len(words) < 2:
        return []
    tail = _join(part[1:])
    if (
        words[-1].bare in PLACE_WORDS
        or words[0].bare in PLACE_HEADS
        or (words[0].text in DIRECTIONS and tail in places())
    ):
        return [(part[0].start, _join(part), "LOCATION")]
    return []


def _person(part: list[Token], before: str, after: str) -> list[Found]:
    titles = 0
    while titles < len(part) and part[titles].bare in TITLES:
        titles += 1
    name = _name_words(part[titles:])
    strong = any(t.bare in STRONG_TITLES for t in part[:titles])
    said = bool(_SAID_BEFORE.search(before) or _SAID_AFTER.search(after))
    if name and (
        strong
        or (titles and len(name) >= 2)
        or (name[0].text.lower() in given_names() and len(name) >= 2)
        or (said and len(name) >= 2 and len(name) == len(part))
    ):
        rest = part[part.index(name[-1]) + 1 :]
        return [(name[0].start, _join(name), "PERSON"), *_classify_rest(rest, "", after)]
    # "Analyst Jane Doe": a known given name further in may still start a name.
    for k in range(1, len(part)):
        if not part[k].link and part[k].text.lower() in given_names():
            tail = _person(part[k:], "", after)
            if tail and tail[0][2] == "PERSON":
                return _known_inside(part[:k]) + tail
    return _known_inside(part)


def _name_words(part: list[Token]) -> list[Token]:
    """The leading tokens that can make up a person's name (at most four words)."""
    name: list[Token] = []
    for token in part:
        if token.link:
            if token.text not in _NAME_LINKS:
                break
        elif not _is_name_word(token, first=not name):
            break
        name.append(token)
        if sum(1 for t in name if not t.link) == 4:
            break
    return _trim(name)


def _is_name_word(token: Token, first: bool) -> bool:
    text = token.text
    if not _NAME_WORD.fullmatch(text):
        return False
    if text.lower() in stopwords() and text not in _CALENDAR:
        return False
    if text in places() or text in known_orgs() or token.bare in _NOT_NAMES:
        return False
    return not (first and text in _CALENDAR)


def _known_inside(part: list[Token]) -> list[Found]:
    """Known places and organisations inside an otherwise unreadable run."""
    found: list[Found] = []
    i = 0
    while i < len(part):
        for j in range(min(len(part), i + 4), i, -1):
            phrase = _join(part[i:j])
            if phrase in places() or phrase in known_orgs():
                kind: EntityType = "LOCATION" if phrase in places() else "ORG"
                found.append((part[i].start, phrase, kind))
                i = j - 1
                break
        i += 1
    return found


def _acronym(part: list[Token], before: str, after: str) -> list[Found]:
    if len(part) != 1:
        return []
    text = part[0].text
    if not _ACRONYM.fullmatch(text) or text in NOT_ORG_ACRONYMS:
        return []
    # In a line of capitals (a heading, a shout) every word looks like an acronym.
    neighbours = before.split()[-1:] + after.split()[:1]
    if any(_ACRONYM.fullmatch(w.strip(".,;:()")) for w in neighbours):
        return []
    return [(part[0].start, text, "ORG")]
