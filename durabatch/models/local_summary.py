"""Extractive summaries by sentence centrality (LexRank).

Each sentence becomes a TF-IDF vector over lowercased, stopword-free,
lightly stemmed words. Sentences are nodes of a graph weighted by cosine
similarity; a damped power iteration (PageRank over that graph) scores how
central each one is to the document. The best few, not too alike and
within a character budget, are returned in their original order. Ties go
to the earlier sentence, so the same text always gives the same summary.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from durabatch.models.local_lexicon import stopwords
from durabatch.models.local_segments import segments, truncate_words

MAX_SENTENCES = 400
MAX_SUMMARY_CHARS = 800
MIN_CONTENT_WORDS = 4
NEIGHBOURS = 25  # edges kept per sentence: bounds the power iteration's cost
MIN_SIMILARITY = 0.05
DUPLICATE_OVERLAP = 0.7
DAMPING = 0.85
MAX_ITERATIONS = 60
TOLERANCE = 1e-7

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TERMINAL = re.compile(r"[.!?\u2026\"'\u201d\u2019)\]]$")

Vector = dict[str, float]


def summarize(text: str) -> str:
    """An extractive summary of ``text``; empty for blank input."""
    sentences = segments(text, MAX_SENTENCES)
    if not sentences:
        return ""
    terms = [_terms(sentence) for sentence in sentences]
    scores = _centrality(_tfidf(terms))
    chosen = _select(
        sentences, [frozenset(t) for t in terms], scores, _target_count(len(sentences))
    )
    return " ".join(_finish(sentences[i]) for i in chosen)


def _target_count(n: int) -> int:
    for size, count in ((2, 1), (5, 2), (12, 3), (30, 4)):
        if n <= size:
            return count
    return 5


def _terms(sentence: str) -> list[str]:
    stop = stopwords()
    words = _WORD.findall(sentence.lower())
    return [_stem(word) for word in words if len(word) > 1 and word not in stop]


def _stem(word: str) -> str:
    """A crude suffix strip, so "engines" meets "engine" and "ranked" "rank"."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 5 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _tfidf(documents: list[list[str]]) -> list[Vector]:
    n = len(documents)
    df: Counter[str] = Counter()
    for terms in documents:
        df.update(set(terms))
    vectors: list[Vector] = []
    for terms in documents:
        weights = {t: c * math.log(n / df[t]) for t, c in Counter(terms).items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        vectors.append({t: w / norm for t, w in weights.items() if w} if norm else {})
    return vectors


def _similarities(vectors: list[Vector]) -> list[dict[int, float]]:
    """Cosine similarity of every pair that shares a term, via postings."""
    postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for i, vector in enumerate(vectors):
        for term, weight in vector.items():
            postings[term].append((i, weight))
    sims: list[dict[int, float]] = [defaultdict(float) for _ in vectors]
    for entries in postings.values():
        for a, (i, wi) in enumerate(entries):
            row = sims[i]
            for j, wj in entries[a + 1 :]:
                row[j] += wi * wj
    return sims


def _graph(vectors: list[Vector]) -> list[list[tuple[int, float]]]:
    """Each sentence's strongest neighbours, weights normalised to sum to 1."""
    n = len(vectors)
    edges: list[dict[int, float]] = [{} for _ in range(n)]
    for i, row in enumerate(_similarities(vectors)):
        for j, sim in row.items():
            if sim >= MIN_SIMILARITY:
                edges[i][j] = sim
                edges[j][i] = sim
    graph: list[list[tuple[int, float]]] = []
    for row in edges:
        best = sorted(row.items(), key=lambda item: (-item[1], item[0]))[:NEIGHBOURS]
        total = sum(weight for _, weight in best)
        graph.append([(j, weight / total) for j, weight in best])
    return graph


def _centrality(vectors: list[Vector]) -> list[float]:
    n = len(vectors)
    graph = _graph(vectors)
    scores = [1.0 / n] * n
    for _ in range(MAX_ITERATIONS):
        # A sentence with no neighbours spreads its score evenly (PageRank's
        # dangling-node rule), so the scores keep summing to one.
        dangling = sum(scores[i] for i in range(n) if not graph[i])
        base = (1.0 - DAMPING) / n + DAMPING * dangling / n
        fresh = [base] * n
        for i, row in enumerate(graph):
            share = DAMPING * scores[i]
            for j, weight in row:
                fresh[j] += share * weight
        delta = sum(abs(a - b) for a, b in zip(fresh, scores, strict=True))
        scores = fresh
        if delta < TOLERANCE:
            break
    return scores


def _select(
    sentences: list[str], terms: list[frozenset[str]], scores: list[float], count: int
) -> list[int]:
    """Indices of the best sentences, in document order."""
    order = sorted(range(len(sentences)), key=lambda i: (-round(scores[i], 12), i))
    substantial = [i for i in order if len(terms[i]) >= MIN_CONTENT_WORDS]
    if len(substantial) >= count:
        order = substantial + [i for i in order if len(terms[i]) < MIN_CONTENT_WORDS]
    chosen: list[int] = []
    size = 0
    for i in order:
        if len(chosen) == count:
            break
        if size + len(sentences[i]) + 1 > MAX_SUMMARY_CHARS or _repeats(i, chosen, terms):
            continue
        chosen.append(i)
        size += len(sentences[i]) + 1
    if not chosen:
        return [order[0]]
    return sorted(chosen)


def _repeats(i: int, chosen: list[int], terms: list[frozenset[str]]) -> bool:
    """Whether sentence ``i`` mostly repeats the words of one already chosen."""
    for j in chosen:
        union = terms[i] | terms[j]
        if not union or len(terms[i] & terms[j]) / len(union) > DUPLICATE_OVERLAP:
            return True
    return False


def _finish(sentence: str) -> str:
    """A segment as it reads in a summary: bounded, and ending like a sentence."""
    sentence = truncate_words(sentence, MAX_SUMMARY_CHARS)
    return sentence if _TERMINAL.search(sentence) else sentence + "."
