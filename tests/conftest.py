"""Shared fixtures: real GloVe vectors, real SQLite files with sqlite-vec."""

from __future__ import annotations

import pytest

from semsearch_sqlite.store import Store
from semsearch_sqlite.vocab import ensure_vocabulary
from semsearch_sqlite.words import WordVectors, load_word_vectors


@pytest.fixture(scope="session")
def glove() -> WordVectors:
    """All 400,000 words of the bundled glove.6B.50d."""
    return load_word_vectors()


@pytest.fixture(scope="session")
def words_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database holding only the default vocabulary (50,000 words)."""
    path = tmp_path_factory.mktemp("words") / "words.db"
    with Store.open(path, create=True) as store:
        ensure_vocabulary(store)
    return str(path)
