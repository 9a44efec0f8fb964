"""The vocabulary's relatedness vectors: a second word space, beside GloVe, for what
search calls an association ("rain" -> umbrellas, "sky" -> airplanes).

GloVe 50-d places words by the company they keep in Wikipedia, so frequent words are
near everything and a query's best label is often a hub. WordLlama
(https://github.com/dleemiller/WordLlama, MIT) is a 16 MB table of token vectors taken
from a large language model's embedding codebook and trained for semantic similarity;
it ranks a collection's labels for an association query better (see
``docs/research.md``, "Associations, round 5"). Ingest embeds every vocabulary word
with it once and stores the vectors as int8 in ``word_related``; a reader only reads
them (no WordLlama, no tokenizer at query time). Databases from before them simply have
none, and search works as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.errors import StoreError
from semsearch_sqlite.extras import RELATED_MODULES, require_ingest
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.changes import cache_version
from semsearch_sqlite.storage.rows import database_key, related_bytes, vocabulary, word_related_chunks
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.query import tokenize
from semsearch_sqlite.text.vocabulary import WordSpace, int8_rows
from semsearch_sqlite.vectors.maths import hubness

# the model bundled in the wordllama wheel, cut to its first dimensions (Matryoshka
# training keeps the leading ones meaningful; 128 ranks labels as well as 256 at half the size)
RELATED_MODEL = "l2_supercat"
RELATED_DIMS = 128
# words per stored row (a 512 KB BLOB at 128-d)
CHUNK = 4096
# vocabulary rows sampled for what any word scores (RelatedSpace.mean_cos, mean_hub)
BASELINE_SAMPLE = 256


@lru_cache(maxsize=1)
def _model() -> Any:
    require_ingest("storing the words' relatedness vectors", RELATED_MODULES)
    import wordllama
    from wordllama import WordLlama

    # the wheel carries the weights and the tokenizer: never download
    return WordLlama.load(
        RELATED_MODEL, cache_dir=Path(wordllama.__file__).parent, disable_download=True, trunc_dim=RELATED_DIMS
    )


def embed_words(words: Sequence[str]) -> np.ndarray:
    """Unit relatedness vectors ``[len(words), RELATED_DIMS]`` of ``words`` (the [ingest] extra)."""
    if not words:
        return np.zeros((0, RELATED_DIMS), np.float32)
    return np.asarray(_model().embed(list(words), norm=True, batch_size=CHUNK), np.float32)


def source_info() -> dict[str, Any]:
    """What the stored vectors were made with (meta ``words_related``, less the count)."""
    from importlib.metadata import version

    return {"source": f"wordllama {version('wordllama')} {RELATED_MODEL}", "dims": RELATED_DIMS}


def related_current(store: Store) -> bool:
    """Whether the stored relatedness vectors cover the stored vocabulary (no words: True)."""
    count = store.get_meta("words_count")
    if not count:
        return True
    info = store.get_meta("words_related") or {}
    made = info.get("count") == count and info.get("dims") == RELATED_DIMS
    return made and related_bytes(store.conn) == count * RELATED_DIMS


def related_chunks(words: dict[int, str], vectors: np.ndarray) -> list[tuple[int, bytes]]:
    """``vectors`` (one unit row per entry of ``words``, id -> word, in the same order) as
    stored: ``(first id, int8 rows of consecutive ids)`` chunks of at most CHUNK rows."""
    ids = np.fromiter(words, np.int64, count=len(words))
    order = np.argsort(ids, kind="stable")
    ids, rows = ids[order], int8_rows(vectors[order])
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    chunks = []
    for start, end in zip(np.r_[0, breaks], np.r_[breaks, len(ids)]):
        for a in range(int(start), int(end), CHUNK):
            chunks.append((int(ids[a]), rows[a : min(a + CHUNK, int(end))].tobytes()))
    return chunks


def store_related(store: Store, words: dict[int, str], vectors: np.ndarray) -> None:
    """Replace the stored relatedness vectors with ``vectors`` (see :func:`related_chunks`)."""
    with store.atomic():
        store.replace_word_related(related_chunks(words, vectors))
        store.set_meta("words_related", {**source_info(), "count": len(words)})
        store.bump_generation()


def ensure_related(store: Store, on_load: Callable[[], None] | None = None, *, force: bool = False) -> bool:
    """Embed and store the vocabulary's relatedness vectors unless they are current
    (:func:`related_current`; ``force``: the vocabulary was just rewritten). True when written."""
    if not force and related_current(store):
        return False
    if on_load:
        on_load()
    words = vocabulary(store.conn)
    store_related(store, words, embed_words(list(words.values())))
    return True


@dataclass
class RelatedSpace:
    """The stored relatedness vectors in memory, looked up by the word space's ids."""

    ids: dict[str, int]
    vectors: np.ndarray  # [max id + 1, d] unit rows (zero where a word has none)
    common: np.ndarray  # [N, d] the rows that have a vector, most frequent word first
    # the mean cosine of two words, and the mean hubness r of a word: what a word without a
    # vector is taken to score against each label (as if it were any word)
    mean_cos: float
    mean_hub: float

    def vector(self, word: str) -> np.ndarray | None:
        """Unit vector of ``word`` (a compound such as ``car_side``: the mean of its words), or None."""
        row = self._row(word.lower())
        if row is not None:
            return row
        found = [v for v in (self._row(t) for t in tokenize(word)) if v is not None]
        if not found:
            return None
        mean = np.mean(found, axis=0)
        return (mean / np.linalg.norm(mean)).astype(np.float32)

    def _row(self, word: str) -> np.ndarray | None:
        i = self.ids.get(word)
        if i is None or i >= len(self.vectors) or not self.vectors[i].any():
            return None
        return self.vectors[i]


_spaces: ProcessCache[RelatedSpace | None] = ProcessCache(8)


def related_space(conn: sqlite3.Connection, space: WordSpace) -> RelatedSpace | None:
    """The cached :class:`RelatedSpace` of the database behind ``conn`` (None when it has
    no relatedness vectors), looked up by the ids of its word ``space``."""
    db = database_key(conn)

    def load() -> RelatedSpace | None:
        return read_related(word_related_chunks(conn), space.ids)

    return _spaces.get_or_load((db, cache_version(conn, db), id(space.matrix)), load, group=db)


def embedded_space(ids: dict[str, int]) -> RelatedSpace | None:
    """The :class:`RelatedSpace` ingest would store for a vocabulary (word -> id), made in
    memory (the [ingest] extra): for benchmarks and tests."""
    words = {i: w for w, i in ids.items()}
    return read_related(related_chunks(words, embed_words(list(words.values()))), ids)


def read_related(chunks: Sequence[tuple[int, bytes]], ids: dict[str, int]) -> RelatedSpace | None:
    """A :class:`RelatedSpace` from stored ``(first id, int8 rows)`` chunks (None if none).
    Raises :class:`StoreError` for rows that are not whole vectors of known word ids (a
    damaged or hand-edited table: it is never trusted to size an allocation)."""
    if not chunks or not ids:
        return None
    size = max(ids.values()) + 1
    vectors = np.zeros((size, RELATED_DIMS), np.float32)
    for first, blob in chunks:
        n = len(blob) // RELATED_DIMS if isinstance(blob, bytes) else -1
        if not isinstance(first, int) or n < 0 or n * RELATED_DIMS != len(blob) or not 0 <= first <= size - n:
            raise StoreError(
                f"table word_related: the row at first_id {first!r} is not {RELATED_DIMS}-d vectors of "
                "stored words; empty it (delete from word_related) and ingest again to rewrite it"
            )
        vectors[first : first + n] = np.frombuffer(blob, np.int8).reshape(n, RELATED_DIMS)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    present = np.flatnonzero(norms[:, 0] > 0)
    common = np.ascontiguousarray(vectors[present])
    sample = common[:: max(1, len(common) // BASELINE_SAMPLE)][:BASELINE_SAMPLE]
    mean_cos = float((sample @ common.T).mean()) if len(common) else 0.0
    mean_hub = float(hubness(sample, common).mean()) if len(common) else 0.0
    return RelatedSpace(ids, vectors, common, mean_cos, mean_hub)
