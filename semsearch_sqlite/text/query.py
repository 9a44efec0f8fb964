"""The query syntax shared by every face: words separated by spaces; ``2:cat`` weighs a
word, ``-dog`` subtracts it, ``0.5:-dog`` both. The query vector is the weighted mean of
the words' unit vectors."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from semsearch_sqlite.errors import QueryError, UnknownWordsError
from semsearch_sqlite.vectors.maths import unit

MAX_QUERY_CHARS = 1000


MAX_QUERY_TERMS = 64


_TERM = re.compile(r"^(?:(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+)):)?(?P<neg>-)?(?P<word>.*)$")


_STRIP = "\"'`.,;!?()[]{}<>"


def phrase_vector(text: str, lookup: Callable[[str], np.ndarray | None]) -> tuple[np.ndarray | None, list[str]]:
    """Mean unit vector of the words of a label or class name ("dining table", ``car_side``,
    ``sea-horse``) that ``lookup`` knows, and the words it doesn't. A hyphenated token is
    one word when ``lookup`` knows it ("t-shirt"), else its parts."""
    vecs, unknown = [], []
    for token in tokenize(text):
        v = lookup(token)
        parts = [token] if v is not None or "-" not in token else [p for p in token.split("-") if p]
        for part in parts:
            pv = v if part == token else lookup(part)
            if pv is None:
                unknown.append(part)
            else:
                vecs.append(unit(pv))
    if not vecs:
        return None, unknown
    return unit(np.mean(vecs, axis=0)), unknown


def compound_lookup(lookup: Callable[[str], np.ndarray | None]) -> Callable[[str], np.ndarray | None]:
    """``lookup`` that also answers a compound query term (``car_side``, ``stop-sign``) that
    is not a word itself with the mean of its words, so a folder label stays searchable by
    its own name. Unknown when any of its words is."""

    def find(word: str) -> np.ndarray | None:
        v = lookup(word)
        if v is not None or not any(c in word for c in "_-"):
            return v
        vec, unknown = phrase_vector(word, lookup)
        return None if unknown else vec

    return find


def tokenize(text: str) -> list[str]:
    """Lower-cased words of a label or class name (``dining_table`` -> dining, table)."""
    text = text.lower().replace("_", " ").replace(",", " ")
    out = []
    for tok in text.split():
        tok = tok.strip(_STRIP + "-")
        if tok:
            out.append(tok)
    return out


# -- query syntax ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One word of a query and its weight (negative: subtract)."""

    word: str
    weight: float


def parse_query(text: Any) -> list[Term]:
    """Parse ``"2:cat sofa -dog"`` into terms. Raises QueryError on bad input."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be text, not {'null' if text is None else type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"query too long ({len(text)} characters; at most {MAX_QUERY_CHARS})")
    terms = []
    for raw in text.split():
        m = _TERM.match(raw)
        if m is None:  # pragma: no cover - the pattern matches any non-empty token
            raise QueryError(f"cannot parse query term {raw!r}")
        weight = float(m.group("weight")) if m.group("weight") is not None else 1.0
        if not np.isfinite(weight):
            raise QueryError(f"weight of {raw!r} is not a finite number")
        if m.group("neg"):
            weight = -weight
        word = m.group("word").lower().strip(_STRIP)
        if not word or word == "-":
            if m.group("weight") is not None or (m.group("neg") and m.group("word") == ""):
                raise QueryError(f"query term {raw!r} has no word; write e.g. 2:cat or -dog")
            continue
        if weight != 0:
            terms.append(Term(word, weight))
    if not terms:
        raise QueryError("empty query; give one or more words, e.g. 'cat sofa' or '2:cat -dog'")
    if len(terms) > MAX_QUERY_TERMS:
        raise QueryError(f"too many words in query ({len(terms)}; at most {MAX_QUERY_TERMS})")
    return terms


@dataclass
class QueryVector:
    """A parsed query as one unit vector, with the words that were and weren't known."""

    vector: np.ndarray
    terms: list[Term]
    unknown: list[str]


def combine_terms(terms: list[Term], lookup: Any, *, allow_unknown: bool = False) -> QueryVector:
    """Weighted mean of the unit vectors of ``terms``.

    ``lookup(word)`` returns a vector or None. Unknown words raise UnknownWordsError
    unless ``allow_unknown`` (then they are listed in ``.unknown``); a query with no
    known word always raises.
    """
    total = None
    known, unknown = [], []
    for t in terms:
        v = lookup(t.word)
        if v is None:
            unknown.append(t.word)
            continue
        known.append(t)
        contribution = t.weight * unit(v)
        total = contribution if total is None else total + contribution
    if total is None or (unknown and not allow_unknown):
        raise UnknownWordsError(unknown)
    if float(np.linalg.norm(total)) == 0.0:
        raise QueryError("the query's words cancel out (the weighted vector is zero)")
    return QueryVector(unit(total), known, unknown)
