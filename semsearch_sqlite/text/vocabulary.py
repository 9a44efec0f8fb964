"""The vocabulary stored in a database: writing it, and reading it back for queries
(so that a shipped ``.db`` answers word queries without any GloVe file)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from semsearch_sqlite.errors import StoreError
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.changes import cache_version
from semsearch_sqlite.storage.models import CLASS_METHODS, CLASSES_MODEL, SEMANTIC_MODEL, load_model, model_config
from semsearch_sqlite.storage.rows import database_key, rare_word_vector, vocabulary
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.storage.vec0 import VEC_WORDS
from semsearch_sqlite.text.glove import WordVectors
from semsearch_sqlite.text.query import (
    QueryVector,
    combine_terms,
    compound_lookup,
    parse_query,
    phrase_vector,
    tokenize,
)
from semsearch_sqlite.text.wordnet import anchored, kinship
from semsearch_sqlite.vectors import matrix

_BATCH = 5000
# lookup-only words per row of word_lookup (a 12.5 KB vector BLOB at 50-d)
LOOKUP_BUCKET = 256
# word spaces kept per process (one per database file)
CACHE_ENTRIES = 8


def store_words(store: Store, wv: WordVectors, source_info: dict[str, Any], lookup: WordVectors | None = None) -> int:
    """Replace the stored vocabulary with ``wv`` (ids follow frequency order, from 1), and
    the lookup-only words with the words of ``lookup`` that ``wv`` lacks.

    Runs in one transaction; returns the number of words stored in the vocabulary.
    """
    with store.atomic():
        store.drop_vec_table(VEC_WORDS)
        ids = store.replace_words(wv.words)
        store.ensure_vec_table(VEC_WORDS, wv.dim)
        for start in range(0, len(ids), _BATCH):
            store.write_vectors(VEC_WORDS, ids[start : start + _BATCH], wv.vectors[start : start + _BATCH])
        rare = store_rare_words(store, lookup, set(wv.words)) if lookup is not None else 0
        store.update_meta(
            {**source_info, "words_dims": wv.dim, "words_count": len(wv.words), "words_lookup_count": rare}
        )
        store.bump_generation()
    return len(wv.words)


def int8_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit rows quantised to int8 (each row scaled so its largest entry is 127); only the
    direction survives, which is all a query word contributes."""
    v = np.asarray(vectors, np.float32)
    peak = np.abs(v).max(axis=1, keepdims=True)
    peak[peak == 0] = 1
    return np.round(v / peak * 127).astype(np.int8)


def store_rare_words(store: Store, wv: WordVectors, exclude: set[str]) -> int:
    """Replace the lookup-only words with every word of ``wv`` not in ``exclude`` (call
    inside a transaction), in sorted buckets of :data:`LOOKUP_BUCKET`. Returns how many."""
    first: dict[str, int] = {}
    for i, w in enumerate(wv.words):
        if w and "\n" not in w and w not in exclude:
            first.setdefault(w, i)
    words = sorted(first)
    rows = np.fromiter((first[w] for w in words), dtype=np.int64, count=len(words))
    buckets = []
    for start in range(0, len(words), LOOKUP_BUCKET):
        chunk = words[start : start + LOOKUP_BUCKET]
        buckets.append(
            (chunk[0], "\n".join(chunk), int8_rows(wv.vectors[rows[start : start + LOOKUP_BUCKET]]).tobytes())
        )
    store.replace_word_lookup(buckets)
    return len(words)


@dataclass
class WordSpace:
    """The stored vocabulary in memory: word -> id, and unit vectors by id."""

    words: dict[int, str]
    ids: dict[str, int]
    matrix: matrix.Matrix
    # words outside the vocabulary (the int8 lookup table of this database), or None
    rare: Callable[[str], np.ndarray | None] | None = None
    # image queries: the ImageNet class vectors words are anchored to (None: the images'
    # vectors don't use them), and the labels (joined words) that stay as they are
    class_vectors: np.ndarray | None = None
    labels: frozenset[str] = frozenset()

    @property
    def dim(self) -> int:
        return int(self.matrix.vectors.shape[1]) if len(self.matrix) else 0

    def vector(self, word: str) -> np.ndarray | None:
        """Vector of ``word`` (the vocabulary's, else the lookup table's) or None."""
        word = word.lower()
        i = self.ids.get(word)
        if i is not None:
            return self.matrix.vector(i)
        return self.rare(word) if self.rare is not None else None

    # the same lookups as WordVectors, so model fitting takes either
    get = vector

    def phrase(self, text: str) -> tuple[np.ndarray | None, list[str]]:
        """Mean unit vector of the known words of ``text``, and the unknown ones."""
        return phrase_vector(text, self.vector)

    def query(self, text: Any, *, allow_unknown: bool = False) -> QueryVector:
        """Parse and embed a query (see :func:`semsearch_sqlite.text.query.parse_query`);
        ``car_side`` or ``stop-sign`` is the mean of its words when not a word itself."""
        return combine_terms(parse_query(text), compound_lookup(self.vector), allow_unknown=allow_unknown)

    def image_query(self, text: Any, *, allow_unknown: bool = False) -> QueryVector:
        """:meth:`query` for searching images: each word is anchored to its WordNet kin
        ImageNet classes (:func:`semsearch_sqlite.text.wordnet.anchored`), except the
        database's own labels, which the image vectors already place exactly. Words
        GloVe lacks but WordNet knows ("gerenuk") are answered by their kin alone."""
        if self.class_vectors is None:
            return self.query(text, allow_unknown=allow_unknown)
        lookup = anchored_lookup(self.vector, self.class_vectors, self.labels)
        return combine_terms(parse_query(text), lookup, allow_unknown=allow_unknown)


_spaces: ProcessCache[WordSpace] = ProcessCache(CACHE_ENTRIES)


def word_ranks(space: WordSpace) -> dict[str, int]:
    """Each vocabulary word's frequency rank, 0 the commonest (ids follow the word vectors'
    order, most frequent first; words added for labels and classes come after)."""
    return {w: i - 1 for w, i in space.ids.items()}


def word_space(conn: sqlite3.Connection) -> WordSpace:
    """The cached stored vocabulary of the database behind ``conn``."""
    m = matrix.matrix(conn, VEC_WORDS)
    if len(m) == 0:
        raise StoreError("this database holds no word vectors; run semsearch-sqlite ingest (or words import) first")
    db = database_key(conn)
    key = (db, cache_version(conn, db), id(m))

    def load() -> WordSpace:
        words = vocabulary(conn)
        class_vectors, labels = _anchoring(conn)
        return WordSpace(words, {w: i for i, w in words.items()}, m, class_vectors=class_vectors, labels=labels)

    space = _spaces.get_or_load(key, load, group=db)
    # the cached space is shared; the lookup table is read through this connection
    return dataclasses.replace(space, rare=partial(rare_word_vector, conn))


def anchored_lookup(
    lookup: Callable[[str], np.ndarray | None], class_vectors: np.ndarray, labels: frozenset[str]
) -> Callable[[str], np.ndarray | None]:
    """A query-term lookup for image search: ``lookup``'s vector of each word anchored to
    its kin ImageNet classes (:func:`semsearch_sqlite.text.wordnet.anchored`), except
    ``labels`` (label words joined by spaces), which the image vectors place exactly. A
    compound term (``car_side``) that neither WordNet nor ``lookup`` knows whole is the
    mean of its words, each anchored."""
    plain = compound_lookup(lookup)

    def word(token: str) -> np.ndarray | None:
        v = plain(token)
        if v is not None and " ".join(tokenize(token)) in labels:
            return v
        return anchored(token, v, class_vectors)

    def find(term: str) -> np.ndarray | None:
        if (
            any(c in term for c in "_-")
            and " ".join(tokenize(term)) not in labels
            and kinship().kin(term) is None
            and lookup(term) is None
        ):
            vec, unknown = phrase_vector(term, word)
            return None if unknown else vec
        return word(term)

    return find


def query_anchoring(
    config: dict[str, Any], class_vectors: np.ndarray | None
) -> tuple[np.ndarray | None, frozenset[str]]:
    """How image queries of a word-space model are anchored: the class vectors to anchor
    to (None: its image vectors don't use them) and its labels (joined words), left alone.

    Args:
        config: the semantic model's config (``method``, ``labels``).
        class_vectors: the database's ImageNet class vectors, or None.
    """
    if config.get("method") not in CLASS_METHODS or class_vectors is None:
        return None, frozenset()
    labels = frozenset(" ".join(tokenize(str(lab))) for lab in config.get("labels", []))
    return np.asarray(class_vectors, np.float32), labels


def _anchoring(conn: sqlite3.Connection) -> tuple[np.ndarray | None, frozenset[str]]:
    """:func:`query_anchoring` of the stored model."""
    config = model_config(conn, SEMANTIC_MODEL) or {}
    if config.get("method") not in CLASS_METHODS:
        return None, frozenset()
    classes = load_model(conn, CLASSES_MODEL)
    return query_anchoring(config, None if classes is None else classes[0].get("vectors"))


def ensure_vocabulary(
    store: Store,
    glove: str | None = None,
    vocab_size: int | None = None,
    extra_words: Sequence[str] = (),
    required_words: Sequence[str] = (),
    *,
    rebuild: bool = False,
    on_load: Callable[[], None] | None = None,
    class_words: Sequence[str] = (),
) -> WordVectors | None:
    """Load word vectors into ``store`` when it has none, when the source or size
    changes, or when ``extra_words``/``required_words`` (label words) are missing.

    Returns the whole word vectors loaded when the vocabulary was (re)written, else
    None. ``glove`` None means the stored source, else the bundled vectors.
    ``class_words`` (the words of the ImageNet class names) join the vocabulary where the
    word vectors know them, so tags can name what ConSE sees ("llama" is GloVe rank 54,192).
    """
    from semsearch_sqlite.media.files import sha256_file
    from semsearch_sqlite.text.glove import DEFAULT_VOCAB_SIZE, load_word_vectors

    stored_source = store.get_meta("words_source_arg")
    stored_size = store.get_meta("words_vocab_size")
    stored_extra = list(store.get_meta("words_extra", []))
    have = set(vocabulary(store.conn).values())
    # words asked for that the word vectors lack: asking again finds nothing new
    have |= set(store.get_meta("words_unknown", []))
    size = vocab_size or stored_size or DEFAULT_VOCAB_SIZE
    source = glove if glove is not None else stored_source
    wanted_extra = sorted(set(stored_extra) | {w.lower() for w in extra_words})
    changed_source = glove is not None and glove != stored_source
    needed = (
        not have
        or changed_source
        or (vocab_size is not None and vocab_size != stored_size)
        or any(w not in have for w in wanted_extra)
        or any(w not in have for w in required_words)
        or store.get_meta("words_lookup_count") is None
        or (bool(class_words) and not store.get_meta("words_class_words"))
    )
    if not needed:
        return None
    if on_load:
        on_load()
    wv = load_word_vectors(source)
    old_dims = store.get_meta("words_dims")
    if have and changed_source and old_dims not in (None, wv.dim) and store.vec_dim("vec_semantic") and not rebuild:
        raise StoreError(
            f"{store.path}: its word space has {old_dims} dimensions and {source} has {wv.dim}; "
            "add --rebuild to refit every image"
        )
    asked = set(wanted_extra) | set(required_words)
    vocab = wv.subset(size, sorted(asked | set(class_words)))
    info: dict[str, Any] = {
        "words_source": wv.source,
        "words_source_arg": source,
        "words_source_sha256": sha256_file(source) if source is not None else None,
        "words_vocab_size": size,
        "words_extra": wanted_extra,
        "words_class_words": bool(class_words),
        "words_unknown": sorted(asked - set(vocab.words)),
    }
    store_words(store, vocab, info, lookup=wv)
    return wv
