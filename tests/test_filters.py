"""Filters inside the search: WHERE constraints on the table functions' columns, --where
and where= restrict the candidates before the top k (not after it)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import semsearch_sqlite
from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.queries.filters import Filter
from semsearch_sqlite.queries.search import similar_images, similar_to_image
from semsearch_sqlite.queries.sqlfuncs import register_functions
from semsearch_sqlite.storage.store import connect

from .helpers import COLOURS, DATED_PHOTOS_PER_LABEL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def db(dated_photos_db: Path) -> Path:
    return dated_photos_db


@pytest.fixture
def conn(db: Path) -> sqlite3.Connection:
    c = connect(db, readonly=True)
    register_functions(c)
    yield c
    c.close()


def nearest_among(conn: sqlite3.Connection, query: str, k: int, keep: set[int]) -> list[int]:
    """The oracle: rank every image as text search does (every photo here is labelled: by
    its label's relation to the query, tests/test_search_kinds.py), keep the allowed ones in order."""
    everything = similar_images(conn, query, len(COLOURS) * DATED_PHOTOS_PER_LABEL).hits
    return [h.image_id for h in everything if h.image_id in keep][:k]


def ids_where(conn: sqlite3.Connection, sql: str) -> set[int]:
    return {r[0] for r in conn.execute(f"select id from images where {sql}")}


def test_where_picks_candidates_before_the_top_k(conn: sqlite3.Connection) -> None:
    # the nearest images to "cat" are not cars, yet asking for cars gives k cars
    unfiltered = similar_images(conn, "cat", 3).hits
    cars = ids_where(conn, "label = 'car'")
    hits = similar_images(conn, "cat", 3, where="label = 'car'").hits
    assert [h.label for h in hits] == ["car"] * 3
    assert [h.image_id for h in hits] == nearest_among(conn, "cat", 3, cars)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert [h.image_id for h in unfiltered] != [h.image_id for h in hits]
    assert (
        similar_images(conn, "cat", 3, filters=[Filter("label", "=", "car")]).as_dict()
        == similar_images(conn, "cat", 3, where="label = 'car'").as_dict()
    )


def test_sql_where_on_the_table_function_is_pushed_into_the_search(conn: sqlite3.Connection) -> None:
    cars = ids_where(conn, "label = 'car'")
    rows = conn.execute("select image_id, label, rank from similar_images('cat', 3) where label = 'car'").fetchall()
    assert [r[0] for r in rows] == nearest_among(conn, "cat", 3, cars)
    assert [r[2] for r in rows] == [1, 2, 3]
    plan = " ".join(
        str(r) for r in conn.execute("explain query plan select * from similar_images('cat', 3) where label = 'car'")
    )
    assert "VIRTUAL TABLE INDEX" in plan and ":2:" in plan  # the = constraint was handed over


@pytest.mark.parametrize(
    "sql_filter, images_filter",
    [
        ("path like 'dog/%'", "path like 'dog/%'"),
        ("path glob '*_[12].jpg'", "path glob '*_[12].jpg'"),
        ("image_id in (select id from images where label = 'dog')", "label = 'dog'"),
        ("image_id in (2, 7, 11, 14)", "id in (2, 7, 11, 14)"),
        ("taken_at >= '2018' and taken_at < '2020'", "taken_at >= '2018' and taken_at < '2020'"),
        ("camera = 'Canon EOS 5D' and latitude < 0", "1"),
    ],
)
def test_each_kind_of_constraint(conn: sqlite3.Connection, sql_filter: str, images_filter: str) -> None:
    keep = ids_where(conn, images_filter)
    rows = conn.execute(f"select image_id from similar_images('sofa', 4) where {sql_filter}").fetchall()
    assert [r[0] for r in rows] == nearest_among(conn, "sofa", 4, keep)
    assert len(rows) == min(4, len(keep))


def test_metadata_columns_come_back(conn: sqlite3.Connection) -> None:
    row = conn.execute("select taken_at, camera, latitude, longitude from similar_images('cat', 1)").fetchone()
    assert row[1:] == ("Canon EOS 5D", -33.865, 151.21) and row[0].startswith("20")


def test_similar_to_image_and_cli_where(db: Path, conn: sqlite3.Connection) -> None:
    dogs = ids_where(conn, "label = 'dog'")
    hits = similar_to_image(conn, "cat/cat_0.jpg", 2, "visual", where="label = 'dog'").hits
    assert {h.image_id for h in hits} <= dogs and len(hits) == 2
    sql = conn.execute("select image_id from similar_to_image('cat/cat_0.jpg', 2) where label = 'dog'").fetchall()
    assert [r[0] for r in sql] == [h.image_id for h in hits]
    r = CliRunner().invoke(cli, ["search", str(db), "cat", "-k", "3", "--where", "label = 'car'", "--json"])
    assert r.exit_code == 0, r.output
    assert [h["image_id"] for h in json.loads(r.stdout)["hits"]] == nearest_among(
        conn, "cat", 3, ids_where(conn, "label = 'car'")
    )
    with semsearch_sqlite.open(db) as photos:
        assert [h.label for h in photos.similar("dog/dog_1.jpg", 3, where="label != 'dog'").hits].count("dog") == 0


def test_bad_or_writing_where_is_refused(db: Path, conn: sqlite3.Connection) -> None:
    r = CliRunner().invoke(cli, ["search", str(db), "cat", "--where", "colour = 'red'"])
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: --where \"colour = 'red'\": no such column: colour; write an SQL condition")
    before = conn.execute("select count(*) from images").fetchone()[0]
    for evil in [
        "1); delete from images; select (1",
        "id in (select id from images) -- x",
        "(select count(*) from pragma_table_info('images')) > 0",
    ]:
        with pytest.raises(QueryError, match="--where"):
            similar_images(conn, "cat", 3, where=evil)
    assert conn.execute("select count(*) from images").fetchone()[0] == before
    # reading other tables is fine
    assert len(similar_images(conn, "cat", 3, where="id in (select image_id from tags where rank = 1)").hits) == 3


def test_no_match_gives_no_rows(conn: sqlite3.Connection) -> None:
    assert conn.execute("select * from similar_images('cat', 5) where label = 'pizza'").fetchall() == []
    assert similar_images(conn, "cat", 5, where="label = 'pizza'").hits == []
