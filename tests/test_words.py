"""GloVe loading (bundled, .txt, .zip), vocabulary, and the query syntax."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch_sqlite.errors import QueryError, UnknownWordsError, WordsError
from semsearch_sqlite.queries.search import similar_words
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.glove import WordVectors, load_word_vectors
from semsearch_sqlite.text.query import Term, combine_terms, parse_query

GLOVE_TXT = "the 0.1 0.2 0.3\ncat 1.0 0.0 0.0\ndog 0.9 0.1 0.0\nsofa 0.0 1.0 0.0\n"


def test_bundled_vectors_are_all_of_glove_6b_50d(glove: WordVectors) -> None:
    assert len(glove.words) == 400_000
    assert glove.dim == 50
    assert glove.words[:4] == ["the", ",", ".", "of"]
    # glove.6B.50d's published first vector begins 0.418 0.24968 -0.41242
    assert glove.vectors[0][:3] == pytest.approx([0.418, 0.24968, -0.41242])
    assert "glove.6B.50d" in glove.source


def test_said_is_near_told_and_asked(words_db: str) -> None:
    with Store.open(words_db) as s:
        hits = [h.word for h in similar_words(s.conn, "said", 10).hits]
    assert "told" in hits and "asked" in hits
    assert "said" not in hits


def test_text_file_dims_inferred(tmp_path: Path) -> None:
    path = tmp_path / "glove.tiny.3d.txt"
    path.write_text(GLOVE_TXT)
    wv = load_word_vectors(path)
    assert wv.words == ["the", "cat", "dog", "sofa"]
    assert wv.dim == 3
    assert wv.get("CAT").tolist() == [1.0, 0.0, 0.0]
    assert load_word_vectors(path, limit=2).words == ["the", "cat"]


def test_zip_file(tmp_path: Path) -> None:
    path = tmp_path / "glove.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("glove.tiny.3d.txt", GLOVE_TXT)
    assert load_word_vectors(path).words[-1] == "sofa"


def test_words_with_spaces_and_word2vec_header(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("2 3\nnew york 1 2 3\ncat 4 5 6\n")
    wv = load_word_vectors(path)
    assert wv.words == ["new york", "cat"]


def test_malformed_line_reports_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("cat 1 2 3\ndog 1 2\n")
    with pytest.raises(WordsError, match=r"bad.txt:2: expected a word and 3 numbers, found 2 values"):
        load_word_vectors(path)
    path.write_text("cat 1 2 3\ndog 1 x 3\n")
    with pytest.raises(WordsError, match=r"bad.txt:2: not a number in the vector of 'dog'"):
        load_word_vectors(path)


def test_not_text_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(WordsError, match="not UTF-8 text"):
        load_word_vectors(path)
    with pytest.raises(WordsError, match="no such GloVe file"):
        load_word_vectors(tmp_path / "missing.txt")
    empty_zip = tmp_path / "e.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.md", "x")
    with pytest.raises(WordsError, match="no .txt file inside the zip"):
        load_word_vectors(empty_zip)


def test_subset_keeps_frequent_words_and_extras(glove: WordVectors) -> None:
    sub = glove.subset(1000, ["llama", "the", "notaword123"])
    assert len(sub.words) == 1001
    assert sub.words[-1] == "llama"
    assert np.allclose(sub.get("llama"), glove.get("llama"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("cat sofa", [Term("cat", 1.0), Term("sofa", 1.0)]),
        ("Cat  SOFA", [Term("cat", 1.0), Term("sofa", 1.0)]),
        ("2:cat sofa", [Term("cat", 2.0), Term("sofa", 1.0)]),
        ("cat -dog", [Term("cat", 1.0), Term("dog", -1.0)]),
        ("0.5:-dog cat", [Term("dog", -0.5), Term("cat", 1.0)]),
        ("cat, sofa!", [Term("cat", 1.0), Term("sofa", 1.0)]),
        ("t-shirt", [Term("t-shirt", 1.0)]),
    ],
)
def test_parse_query(text: str, expected: list[Term]) -> None:
    assert parse_query(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty query"),
        ("   ", "empty query"),
        ("2:", "has no word"),
        ("-", "has no word"),
        ("2:-", "has no word"),
        ("x" * 1001, "query too long"),
        (" ".join(["cat"] * 65), "too many words"),
        (None, "a query must be text"),
        (3, "a query must be text"),
    ],
)
def test_parse_query_errors(text: object, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(text)


def test_combine_mean_of_unit_vectors_and_unknowns(glove: WordVectors) -> None:
    q = combine_terms(parse_query("cat sofa"), glove.get)
    expected = glove.get("cat") / np.linalg.norm(glove.get("cat")) + glove.get("sofa") / np.linalg.norm(
        glove.get("sofa")
    )
    assert np.allclose(q.vector, expected / np.linalg.norm(expected), atol=1e-6)
    with pytest.raises(UnknownWordsError, match=r"no known words in query: 'qwzx'") as e:
        combine_terms(parse_query("qwzx"), glove.get)
    assert e.value.words == ["qwzx"]
    # partly unknown: an error unless allowed, then reported, never silently zero
    with pytest.raises(UnknownWordsError):
        combine_terms(parse_query("cat qwzx"), glove.get)
    q = combine_terms(parse_query("cat qwzx"), glove.get, allow_unknown=True)
    assert q.unknown == ["qwzx"] and [t.word for t in q.terms] == ["cat"]
    with pytest.raises(QueryError, match="cancel out"):
        combine_terms(parse_query("cat -cat"), glove.get)


def test_negation_moves_away(words_db: str) -> None:
    with Store.open(words_db) as s:
        plain = [h.word for h in similar_words(s.conn, "bank", 15).hits]
        minus = [h.word for h in similar_words(s.conn, "bank -money", 15).hits]
    assert plain != minus
    assert "banks" in plain


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_query_never_crashes(text: str) -> None:
    try:
        terms = parse_query(text)
    except QueryError:
        return
    assert terms and all(t.word and t.weight != 0 and np.isfinite(t.weight) for t in terms)
