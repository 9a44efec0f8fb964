"""What to offer someone with no query yet, or with a word the database doesn't know:
the labels (with counts), example queries made from the stored vocabulary, and the
known words spelt most like an unknown one."""

from __future__ import annotations

import difflib
import sqlite3
from dataclasses import dataclass, field

import numpy as np

from semsearch_sqlite.errors import SemsearchError
from semsearch_sqlite.storage import rows
from semsearch_sqlite.text.vocabulary import WordSpace, word_space

SUGGESTIONS = 5
# difflib's similarity ratio a suggestion needs (0..1): 0.75 keeps "elefant" -> "elephant"
# and drops words that merely share a few letters
SUGGESTION_CUTOFF = 0.75
EXAMPLES = 4


@dataclass
class Label:
    """One label and how many images carry it."""

    name: str
    images: int
    known: bool  # whether the label is a word of the vocabulary (then a search finds it by name)


@dataclass
class StartingPoints:
    """The labels, most images first, and a few example queries."""

    labels: list[Label] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


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


def starting_points(conn: sqlite3.Connection, examples: int = EXAMPLES) -> StartingPoints:
    """The labels with their counts and ``examples`` queries worth trying here.

    The examples are built from labels that are vocabulary words, to show the query
    syntax on words this database can answer: a label, two labels together, a label
    weighed double with another, and one label minus another.
    """
    counts = rows.label_counts(conn)
    try:
        space: WordSpace | None = word_space(conn)
    except SemsearchError:  # no vocabulary yet: the labels alone still help
        space = None
    known = set(space.ids) if space is not None else set()
    labels = sorted(
        (Label(name, n, name.lower() in known) for name, n in counts.items()), key=lambda lab: (-lab.images, lab.name)
    )
    words = [lab.name.lower() for lab in labels if lab.known and " " not in lab.name]
    out: list[str] = []
    if words:
        out.append(words[0])
    if len(words) >= 3:
        out.append(f"{words[1]} {words[2]}")
    if len(words) >= 5:
        out.append(f"2:{words[3]} {words[4]}")
    if len(words) >= 7:
        out.append(f"{words[5]} -{words[6]}")
    return StartingPoints(labels, out[:examples])
