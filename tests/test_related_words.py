"""The vocabulary's relatedness vectors (text/related.py): stored by ingest beside the word
vectors, read back without WordLlama, and what they change in associations. Real
WordLlama (the [ingest] extra), real GloVe, real SQLite files."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import semsearch_sqlite
from semsearch_sqlite.model.relations import LabelSet, label_set, query_gloss, query_terms
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.storage.rows import vocabulary, word_related_chunks
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.glove import WordVectors
from semsearch_sqlite.text.related import (
    RELATED_DIMS,
    embed_words,
    embedded_space,
    read_related,
    related_current,
    related_space,
)
from semsearch_sqlite.text.vocabulary import word_space
from semsearch_sqlite.vectors.maths import hubness, unit_rows
from tests.test_search_associations import _names


def test_the_vocabulary_is_stored_with_its_relatedness_vectors(words_db: str) -> None:
    with closing(sqlite3.connect(words_db)) as conn:
        chunks = word_related_chunks(conn)
        words = vocabulary(conn)
        assert sum(len(blob) for _, blob in chunks) == len(words) * RELATED_DIMS
        space = read_related(chunks, {w: i for i, w in words.items()})
    assert space is not None
    with Store.open(Path(words_db)) as store:
        assert related_current(store)
        assert store.get_meta("words_related")["count"] == len(words)
    fresh = embed_words(["umbrella", "rain", "sky"])
    stored = np.vstack([space.vector(w) for w in ("umbrella", "rain", "sky")])
    # int8 keeps the direction
    assert np.all(np.sum(fresh * stored, axis=1) > 0.999)
    # WordLlama relates rain to umbrella more than to sky's airplane
    assert float(space.vector("rain") @ space.vector("umbrella")) > float(
        space.vector("rain") @ space.vector("airplane")
    )
    # a compound label is the mean of its words; a word the vocabulary lacks has none
    water, lily = space.vector("water"), space.vector("lily")
    both = space.vector("water_lily")
    assert both is not None and float(both @ water) > 0.6 and float(both @ lily) > 0.6
    assert space.vector("zzqxv") is None


@pytest.fixture(scope="module")
def dev_labels(glove: WordVectors) -> tuple[LabelSet, LabelSet, np.ndarray]:
    """The 50 dev labels with their words one by one, without and with relatedness vectors."""
    vocabulary = unit_rows(np.asarray(glove.vectors[:50_000], np.float32))
    ranks = {w: i for i, w in enumerate(glove.words[:50_000])}
    related = embedded_space({w: i + 1 for i, w in enumerate(glove.words[:50_000])})
    names = _names()
    plain = label_set(names, None, glove.get, vocabulary, ranks=ranks)
    return plain, label_set(names, None, glove.get, vocabulary, ranks=ranks, related=related), vocabulary


def _first(found: LabelSet, vocabulary: np.ndarray, glove: WordVectors, word: str, n: int) -> list[str]:
    ((_, vector),) = query_terms([word], glove.get)
    assert vector is not None
    gloss = query_gloss(word, glove.get, found.ranks)
    value = found.association(
        vector,
        float(hubness(vector[None], vocabulary)[0]),
        None if gloss is None else (gloss, float(hubness(gloss[None], vocabulary)[0])),
        found.related.lookup([word])[0] if found.related is not None else None,
    )
    return [found.labels[j] for j in np.argsort(-value)[:n]]


@pytest.mark.parametrize(("word", "label"), [("sky", "airplanes"), ("rain", "umbrella"), ("coffee", "cup")])
def test_relatedness_finds_associations_glove_misses(
    dev_labels: tuple[LabelSet, LabelSet, np.ndarray], glove: WordVectors, word: str, label: str
) -> None:
    plain, related, vocabulary = dev_labels
    assert label not in _first(plain, vocabulary, glove, word, 4)
    assert label in _first(related, vocabulary, glove, word, 3)


def test_labels_named_by_the_query_are_unchanged(
    dev_labels: tuple[LabelSet, LabelSet, np.ndarray], glove: WordVectors
) -> None:
    plain, related, vocabulary = dev_labels
    for word, label in (("pizza", "pizza"), ("dolphin", "dolphin"), ("laptop", "laptop")):
        assert _first(related, vocabulary, glove, word, 1) == _first(plain, vocabulary, glove, word, 1) == [label]


def test_a_database_from_before_them_gets_them_on_the_next_ingest_without_a_refit(
    photos_copy: Path, plugin_photos: dict[str, Any]
) -> None:
    # as the version before them wrote it
    with closing(sqlite3.connect(photos_copy)) as conn, conn:
        conn.execute("drop table word_related")
        conn.execute("delete from _sqlite_migrations where name = 'm006_word_related'")
        conn.execute("delete from semsearch_meta where key = 'words_related'")
        fitted = conn.execute("select name, created_at from models order by name").fetchall()
    # read as it is: search works without them
    before = semsearch_sqlite.open(photos_copy).search("cat", 5)
    assert before.hits
    stats = ingest(
        Path(plugin_photos["images"]),
        photos_copy,
        IngestOptions(backbone=plugin_photos["backbone"], vocab_size=20000, workers=1),
    )
    assert stats.added == 0
    with Store.open(photos_copy) as store:
        assert related_current(store)
        assert store.conn.execute("select name, created_at from models order by name").fetchall() == fitted
        space = related_space(store.conn, word_space(store.conn))
    assert space is not None and space.vector("cat") is not None


def test_a_new_vocabulary_on_re_ingest_refits_the_model_into_it(
    photos_copy: Path, plugin_photos: dict[str, Any]
) -> None:
    options = IngestOptions(backbone=plugin_photos["backbone"], vocab_size=25000, workers=1)
    stats = ingest(Path(plugin_photos["images"]), photos_copy, options)
    assert stats.semantic is not None  # refitted: the stored model mapped into the old space
    with Store.open(photos_copy) as store:
        assert store.get_meta("words_vocab_size") == 25000 and related_current(store)
        assert store.conn.execute("select count(*) from vec_semantic").fetchone()[0] == stats.unchanged
    assert semsearch_sqlite.open(photos_copy).search("dog", 3).hits


def test_a_damaged_table_is_one_clear_error_and_the_next_ingest_after_emptying_it_mends_it(
    photos_copy: Path, plugin_photos: dict[str, Any]
) -> None:
    from click.testing import CliRunner

    from semsearch_sqlite.cli import cli
    from semsearch_sqlite.errors import StoreError

    with closing(sqlite3.connect(photos_copy)) as conn, conn:
        conn.execute("update word_related set first_id = 4000000000000 where first_id = 1")
    with pytest.raises(StoreError, match="table word_related: the row at first_id 4000000000000"):
        semsearch_sqlite.open(photos_copy).search("cat", 3)
    result = CliRunner().invoke(cli, ["search", str(photos_copy), "cat"])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "delete from word_related" in result.output
    with closing(sqlite3.connect(photos_copy)) as conn, conn:
        conn.execute("delete from word_related")
        models = conn.execute("select name, created_at from models order by name").fetchall()
    ingest(
        Path(plugin_photos["images"]),
        photos_copy,
        IngestOptions(backbone=plugin_photos["backbone"], vocab_size=20000, workers=1),
    )
    with Store.open(photos_copy) as store:
        assert related_current(store)
        assert store.conn.execute("select name, created_at from models order by name").fetchall() == models
    assert semsearch_sqlite.open(photos_copy).search("cat", 3).hits
