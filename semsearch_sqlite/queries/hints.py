"""What to offer someone with no query yet, or with a word the database doesn't know:
the labels (with counts and a sample photo), example searches made from the
collection's own kinds, and the known words spelt most like an unknown one (the same
suggestions on the page, in the CLI and in Python)."""

from __future__ import annotations

import difflib
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semsearch_sqlite.errors import SemsearchError, UnknownWordsError
from semsearch_sqlite.queries.search import Results, similar_images
from semsearch_sqlite.storage import rows
from semsearch_sqlite.text.vocabulary import WordSpace, word_space

SUGGESTIONS = 5
# difflib's similarity ratio a suggestion needs (0..1): 0.75 keeps "elefant" -> "elephant"
# and drops words that merely share a few letters
SUGGESTION_CUTOFF = 0.75
EXAMPLES = 6


@dataclass
class Label:
    """One label and how many images carry it."""

    name: str
    images: int
    known: bool  # whether the label is a word of the vocabulary (then a search finds it by name)
    sample: rows.ImageRow | None = None  # one of its photos, shown beside it


@dataclass
class StartingPoints:
    """The labels, most images first, and a few example queries."""

    labels: list[Label] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    # the examples with the labels each finds
    found: list[Example] = field(default_factory=list)


def suggest_words(conn: sqlite3.Connection, word: str, n: int = SUGGESTIONS) -> list[str]:
    """The stored words spelt most like ``word``: labels first, then by similarity.

    The word has no vector, so "nearest" is by spelling (difflib's ratio). A vectorised
    letter-count bound (difflib's ``quick_ratio``) first drops the words that can't pass.
    """
    word = word.lower().strip()
    if not word:
        return []
    words, counts, lengths = _letter_counts(word_space(conn))
    q = _counts(word)
    # quick_ratio: 2 * shared letters / total length, an upper bound of ratio
    bound = 2 * np.minimum(counts, q).sum(axis=1) / (lengths + len(word))
    candidates = np.flatnonzero((bound >= SUGGESTION_CUTOFF) & (np.abs(lengths - len(word)) <= 2))
    labels = {name.lower() for name in rows.label_counts(conn)}
    matcher = difflib.SequenceMatcher(b=word)  # difflib caches what it learns of b
    scored = []
    for i in candidates:
        w = words[int(i)]
        if w == word:
            continue
        matcher.set_seq1(w)
        ratio = matcher.ratio()
        if ratio >= SUGGESTION_CUTOFF:
            # a label (a word the images are known to show) wins over a closer spelling
            scored.append((w not in labels, -ratio, w))
    return [w for _, _, w in sorted(scored)[:n]]


_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_letters_cache: dict[int, tuple[WordSpace, list[str], np.ndarray, np.ndarray]] = {}


def _counts(word: str) -> np.ndarray:
    out = np.zeros(len(_ALPHABET) + 1, dtype=np.int16)
    for ch in word:
        i = _ALPHABET.find(ch)
        out[i if i >= 0 else -1] += 1
    return out


def _letter_counts(space: WordSpace) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The vocabulary's words, letter counts and lengths (kept for the latest space)."""
    hit = _letters_cache.get(id(space))
    if hit is not None and hit[0] is space:
        return hit[1], hit[2], hit[3]
    words = list(space.ids)
    counts = np.stack([_counts(w) for w in words]) if words else np.zeros((0, len(_ALPHABET) + 1), np.int16)
    lengths = np.array([len(w) for w in words], dtype=np.int32)
    _letters_cache.clear()
    _letters_cache[id(space)] = (space, words, counts, lengths)
    return words, counts, lengths


def suggestions(conn: sqlite3.Connection, words: Sequence[str]) -> dict[str, list[str]]:
    """For each of ``words``: the known words spelt like it (:func:`suggest_words`), the
    same answer the search page gives under "Did you mean"."""
    out = {}
    for word in words:
        try:
            out[word] = suggest_words(conn, word)
        except SemsearchError:  # no vocabulary: nothing to suggest from
            out[word] = []
    return out


@dataclass
class SuggestedResults(Results):
    """:class:`~semsearch_sqlite.queries.search.Results` with ``suggestions``: for each
    unknown word, the known words spelt like it (what the page offers as "Did you mean")."""

    suggestions: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "suggestions": self.suggestions}


def with_suggestions(conn: sqlite3.Connection, results: Results) -> SuggestedResults:
    """``results`` with the spelling suggestions for its unknown words."""
    found = SuggestedResults(results.hits, results.unknown, results.note, results.strong)
    found.suggestions = suggestions(conn, results.unknown) if results.unknown else {}
    return found


def explained(conn: sqlite3.Connection, error: UnknownWordsError) -> UnknownWordsError:
    """``error`` again, with the spelling suggestions in its message and ``suggestions``."""
    return UnknownWordsError(error.words, suggestions(conn, error.words))


@dataclass
class Example:
    """A search worth trying here: a kind the collection's photos come in, and the labels
    whose photos it finds."""

    query: str
    finds: list[str]


# an example finds at most this share of the labels ("object" finds everything: no example)
EXAMPLE_SHARE = 0.6
# the kinds tried (in GloVe's order of frequency, the commonest first) to find the examples
EXAMPLE_CANDIDATES = 24
_examples_cache: dict[str, list[Example]] = {}


def starting_points(conn: sqlite3.Connection, examples: int = EXAMPLES) -> StartingPoints:
    """The labels with their counts and a sample photo each, and ``examples`` searches
    worth trying here: words that aren't labels but name a kind the photos come in
    ("bird" for a collection of roosters and flamingos), each checked to find a strong
    match, so the page shows what words this collection answers."""
    counts = rows.label_counts(conn)
    try:
        space: WordSpace | None = word_space(conn)
    except SemsearchError:  # no vocabulary yet: the labels alone still help
        space = None
    known = set(space.ids) if space is not None else set()
    samples = rows.label_samples(conn)
    labels = sorted(
        (Label(name, n, name.lower() in known, samples.get(name)) for name, n in counts.items()),
        key=lambda lab: (-lab.images, lab.name),
    )
    found = kind_examples(conn, space, examples) if space is not None else []
    if not found:  # no kinds stored (or none finds its photos): the labels that are words
        found = [Example(lab.name.lower(), [lab.name]) for lab in labels if lab.known][:examples]
    return StartingPoints(labels, [e.query for e in found], found)


def kind_examples(conn: sqlite3.Connection, space: WordSpace, n: int = EXAMPLES) -> list[Example]:
    """Up to ``n`` tag words that photos of two or more labels share (their WordNet kinds,
    stored at ingest) and that are no label's word, commonest first, each finding a strong
    match among its own labels' photos; two examples never find the same labels. Kept per database version."""
    key = f"{rows.database_key(conn)}:{rows.generation(conn)}:{n}"
    if key in _examples_cache:
        return _examples_cache[key]
    counts = rows.label_counts(conn)
    label_words = {w for name in counts for w in normalise_words(name)}
    shared = [
        (w, labs)
        for w, labs, _ in rows.shared_tags(conn)
        if w in space.ids
        and not {w, w + "s", w + "es", w.rstrip("s")} & label_words
        and len(labs) <= max(2, EXAMPLE_SHARE * len(counts))
    ]
    shared.sort(key=lambda t: space.ids[t[0]])
    out: list[Example] = []
    seen: set[frozenset[str]] = set()
    for word, labs in shared[:EXAMPLE_CANDIDATES]:
        try:
            hits = similar_images(conn, word, 10)
        except SemsearchError:
            continue
        # it must find photos of the kind's own labels ("bird" finding elephants is no example)
        finds = tuple(dict.fromkeys(h.label for h in hits.hits if h.match == "strong" and h.label in labs))
        if finds and frozenset(finds) not in seen:
            seen.add(frozenset(finds))
            out.append(Example(word, list(finds)))
        if len(out) == n:
            break
    _examples_cache.clear()
    _examples_cache[key] = out
    return out


def normalise_words(label: str) -> list[str]:
    """The words of a label as a query reads them: ``car_side`` -> car, side."""
    return [w for w in re.split(r"[\s_\-]+", label.lower()) if w]


@dataclass
class Place:
    """An area where some photos were taken: its centre (``near``, as the search form
    sends it), a readable position and how many photos it holds."""

    near: str
    name: str
    photos: int


# photos this close (degrees of latitude and longitude) to a place are "near" it: about 100 km
NEAR_DEGREES = 1.0


def places(conn: sqlite3.Connection) -> list[Place]:
    """The areas the located photos fall in (each photo joins the first area within
    ``NEAR_DEGREES`` of it, else starts one), most photos first."""
    areas: list[list[tuple[float, float]]] = []
    for _, lat, lon in rows.positions(conn):
        for area in areas:
            if abs(area[0][0] - lat) <= NEAR_DEGREES and abs(area[0][1] - lon) <= NEAR_DEGREES:
                area.append((lat, lon))
                break
        else:
            areas.append([(lat, lon)])
    out = []
    for area in sorted(areas, key=len, reverse=True):
        lat = sum(p[0] for p in area) / len(area)
        lon = sum(p[1] for p in area) / len(area)
        out.append(Place(f"{lat:.2f},{lon:.2f}", position_name(lat, lon), len(area)))
    return out


def position_name(lat: float, lon: float) -> str:
    """``33.86°S 151.21°E``."""
    return f"{abs(lat):.2f}°{'N' if lat >= 0 else 'S'} {abs(lon):.2f}°{'E' if lon >= 0 else 'W'}"
