"""Starting points and suggestions (semsearch_sqlite.queries.hints), the ranking sizes
paging needs (search.ranked_count) and the upload preview, on the real ingest output."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from semsearch_sqlite.errors import ImageError, QueryError
from semsearch_sqlite.queries import hints, search
from semsearch_sqlite.queries.new_image import MAX_UPLOAD_BYTES, preview_bytes
from semsearch_sqlite.storage.store import connect
from semsearch_sqlite.text.vocabulary import word_space


@pytest.fixture
def conn(plugin_photos: dict[str, Any]) -> Iterator[sqlite3.Connection]:
    c = connect(plugin_photos["db"], readonly=True)
    try:
        yield c
    finally:
        c.close()


def test_suggestions_are_known_words_spelt_like_the_unknown_one(conn: sqlite3.Connection) -> None:
    found = hints.suggest_words(conn, "sofaa")
    assert found[0] == "sofa"  # a label first
    assert 0 < len(found) <= hints.SUGGESTIONS and "sofaa" not in found
    assert set(found) <= set(word_space(conn).ids)
    assert hints.suggest_words(conn, "Dogg", n=2)[0] == "dog"  # any case
    assert hints.suggest_words(conn, "zzzqqxx") == [] and hints.suggest_words(conn, "  ") == []


def test_starting_points_list_the_labels_and_searchable_examples(
    conn: sqlite3.Connection, plugin_photos: dict[str, Any]
) -> None:
    points = hints.starting_points(conn)
    counts = dict(conn.execute("select label, count(*) from images group by label"))
    assert {lab.name: lab.images for lab in points.labels} == counts
    assert [lab.images for lab in points.labels] == sorted((lab.images for lab in points.labels), reverse=True)
    known = {lab.name: lab.known for lab in points.labels}
    assert known[plugin_photos["evil_label"]] is False and known["cat"] is True
    assert 1 <= len(points.examples) <= hints.EXAMPLES
    for example in points.examples:  # each one a query this database answers
        assert search.similar_images(conn, example, 3).hits


def test_ranked_count_is_what_one_ranking_can_return(conn: sqlite3.Connection) -> None:
    n = conn.execute("select count(*) from images").fetchone()[0]
    assert search.ranked_count(conn, "semantic") == n
    assert search.ranked_count(conn, "visual", exclude_self=True) == n - 1
    assert len(search.similar_images(conn, "dog", search.ranked_count(conn)).hits) == n
    with pytest.raises(QueryError):
        search.ranked_count(conn, "nonsense")


def test_preview_is_a_small_jpeg_of_the_upload() -> None:
    png = io.BytesIO()
    Image.new("RGB", (900, 300), (10, 200, 30)).save(png, "PNG")
    data, width, height = preview_bytes(png.getvalue())
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG" and img.size == (width, height) == (256, 85)
    with pytest.raises(ImageError, match="too large"):
        preview_bytes(b"\x89PNG" + b"0" * MAX_UPLOAD_BYTES, name="big.png")
    with pytest.raises(ImageError):
        preview_bytes(b"not an image", name="x.png")
