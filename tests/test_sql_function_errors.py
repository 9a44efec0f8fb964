"""SQL functions on a real photo database: each bad argument is the library's own one-line
message as the SQL error (in Python and in Datasette), and a time limit that passes inside a
function reads as SQLite's own "interrupted"."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from semsearch_sqlite.queries.sqlfuncs import register_functions
from semsearch_sqlite.storage.store import Store

pytestmark = pytest.mark.slow


BAD_CALLS = [
    ("select * from similar_images('cat', 1e999)", "k must be a whole number, not inf"),
    ("select * from similar_images('cat', 2.5)", "k must be a whole number, not 2.5"),
    ("select * from similar_images('cat', '５')", "k must be a whole number, not '５'"),
    (
        "select * from similar_to_image('¹')",
        "no image stored with path '¹'; list them with: select id, path from images",
    ),
    ("select * from similar_to_image(1.5)", "an image id is a whole number, not 1.5"),
    ("select * from image_tags(1e999)", "an image id is a whole number, not inf"),
    ("select * from images_tagged(5)", "the tag word must be text, not int"),
    ("select * from images_tagged(null)", "the tag word must be text, not null"),
    ("select * from similar_words(null)", "a query must be text, not null"),
    ("select * from similar_to_image(1, 3, 5)", "space must be one of visual, semantic, not 5"),
    ("select semsearch_text_vector('zzqqzz')", "no known words in query: 'zzqqzz'"),
    ("select semsearch_word_vector(null)", "a query must be text, not null"),
    ("select semsearch_image_vector(1, 'x')", "space must be one of visual, semantic, not 'x'"),
    ("select semsearch_image_vector(99999)", "no image with id 99999"),
]


@pytest.mark.parametrize("sql, message", BAD_CALLS)
def test_sql_functions_report_the_library_message(plugin_photos: dict[str, Any], sql: str, message: str) -> None:
    with Store.open(plugin_photos["db"], readonly=True) as store:
        register_functions(store.conn)
        with pytest.raises(sqlite3.OperationalError) as caught:
            store.conn.execute(sql).fetchall()
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text
    for raw in ("OverflowError", "ValueError", "AttributeError", "user-defined function raised exception"):
        assert raw not in text


def test_scalar_functions_still_answer_and_release_their_state(plugin_photos: dict[str, Any]) -> None:
    from semsearch_sqlite.sqlite.scalar import live_scalars

    before = live_scalars()
    store = Store.open(plugin_photos["db"], readonly=True)
    register_functions(store.conn)
    blob = store.conn.execute("select semsearch_text_vector('cat')").fetchone()[0]
    dim = store.conn.execute("select vec_length(semsearch_image_vector(1, 'semantic'))").fetchone()[0]
    assert len(blob) == 4 * dim
    assert live_scalars() == before + 4
    store.close()
    assert live_scalars() == before


@pytest.mark.asyncio
async def test_datasette_shows_the_sql_function_message(plugin_photos: dict[str, Any], datasette: Any) -> None:
    ds = datasette([plugin_photos["db"]])
    response = await ds.client.get("/photos.json", params={"sql": "select semsearch_text_vector('zzqqzz')"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("no known words in query: 'zzqqzz'")


def interrupt_inside_functions(conn: sqlite3.Connection) -> None:
    """A progress handler that stops every statement a semsearch function runs (a time
    limit that passes while the function works) and none of the caller's own steps."""
    import sys

    def handler() -> int:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__") == "semsearch_sqlite.queries.sqlfuncs":
                return 1
            frame = frame.f_back
        return 0

    conn.set_progress_handler(handler, 1)


@pytest.mark.parametrize(
    "sql",
    [
        "select * from similar_images('cat', 100)",
        "select count(*) from image_tags(3, 4096)",
        "select * from similar_words('cat', 4096)",
        "select semsearch_text_vector('cat')",
    ],
)
def test_a_time_limit_inside_a_function_is_sqlites_interrupted(photos_copy: Path, sql: str) -> None:
    with Store.open(photos_copy, readonly=True) as store:
        register_functions(store.conn)
        interrupt_inside_functions(store.conn)
        with pytest.raises(sqlite3.OperationalError) as caught:
            store.conn.execute(sql).fetchall()
        assert caught.value.args == ("interrupted",)  # what Datasette turns into its time-limit page
        store.conn.set_progress_handler(None, 0)
        assert store.conn.execute(sql).fetchall()  # and the connection still answers


@pytest.mark.asyncio
async def test_datasette_time_limit_message_for_table_functions(photos_copy: Path, datasette: Any) -> None:
    ds = datasette([str(photos_copy)], settings={"sql_time_limit_ms": 1})
    await ds.invoke_startup()
    for sql in ("select * from similar_images('cat', 100)", "select count(*) from image_tags(3, 4096)"):
        response = await ds.client.get("/photos.json", params={"sql": sql})
        assert response.status_code == 400, sql
        assert response.json()["title"] == "SQL Interrupted", sql
        assert "SQL query took too long" in response.json()["error"]
