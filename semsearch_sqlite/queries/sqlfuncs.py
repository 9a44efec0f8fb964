"""SQL faces of the queries: table-valued and scalar functions on any connection.

Used by the Datasette plugin (``prepare_connection``) and ``semsearch-sqlite sql``.
Each function calls the same library function as the CLI and the pages.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from semsearch_sqlite.queries import search
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.rows import database_key, generation, thumbnails
from semsearch_sqlite.storage.store import encode_f32
from semsearch_sqlite.text.vocabulary import word_space

log = logging.getLogger(__name__)
RESULT_CACHE = 256
# the SQL a page links to ("see this in SQL"), with :named parameters
EXAMPLE_SQL = {
    "similar_images": "select * from similar_images(:q, :k)",
    "image_tags": "select * from image_tags(:id)",
    "similar_to_image_visual": "select * from similar_to_image(:id, :k, 'visual')",
    "similar_to_image_semantic": "select * from similar_to_image(:id, :k, 'semantic')",
    "similar_images_focused": "select * from similar_images_focused(:id, :focus, :k)",
    "similar_words": "select * from similar_words(:q, :k)",
}

# match: "strong" / "weak" for text queries (null for the others)
IMAGE_COLUMNS = ["rank", "image_id", "path", "label", "distance", "match", "thumbnail"]
WORD_COLUMNS = ["rank", "word", "distance"]

# name -> (library call, columns, parameters); k is always optional
TABLE_FUNCTIONS: dict[str, tuple[Callable[..., search.Results], list[str], list[str]]] = {
    "similar_images": (lambda c, q, k: search.similar_images(c, q, k), IMAGE_COLUMNS, ["query", "k"]),
    "similar_to_image": (
        lambda c, image, k, space: search.similar_to_image(c, image, k, space or "visual"),
        IMAGE_COLUMNS,
        ["image", "k", "space"],
    ),
    "similar_images_focused": (
        lambda c, image, focus, k: search.focused_search(c, image, focus, k),
        IMAGE_COLUMNS,
        ["image", "focus", "k"],
    ),
    "images_tagged": (lambda c, word, k: search.images_tagged(c, word, k), IMAGE_COLUMNS, ["word", "k"]),
    "image_tags": (lambda c, image, k: search.image_tags(c, image, k), WORD_COLUMNS, ["image", "k"]),
    "similar_words": (lambda c, q, k: search.similar_words(c, q, k), WORD_COLUMNS, ["query", "k"]),
}

_cache: ProcessCache[list[tuple[Any, ...]]] = ProcessCache(RESULT_CACHE)
_warned = False


def _rows(conn: sqlite3.Connection, name: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows of a table function, cached: SQLite may call it once per outer row."""
    call, columns, _ = TABLE_FUNCTIONS[name]
    key = (database_key(conn), generation(conn), name, args)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    results = call(conn, *args)
    dicts = [h.as_dict() for h in results.hits]
    if "thumbnail" in columns and dicts:
        thumbs = thumbnails(conn, [d["image_id"] for d in dicts])
        for d in dicts:
            d["thumbnail"] = thumbs.get(d["image_id"])
    rows = [tuple(d.get(c) for c in columns) for d in dicts]
    _cache.put(key, rows)
    return rows


def _table_function(name: str) -> Callable[..., list[tuple[Any, ...]]]:
    return lambda conn, *args: _rows(conn, name, args)


def text_vector_blob(conn: sqlite3.Connection, query: Any) -> bytes:
    """``semsearch_text_vector(query)``: the query in the images' semantic space."""
    vector, _ = search.text_vector(conn, query)
    return encode_f32(vector)


def word_vector_blob(conn: sqlite3.Connection, query: Any) -> bytes:
    """``semsearch_word_vector(query)``: the query in word space (for ``vec_words``)."""
    return encode_f32(word_space(conn).query(query).vector)


def image_vector_blob(conn: sqlite3.Connection, image: Any, space: Any = "visual") -> bytes:
    """``semsearch_image_vector(image [, space])``: a stored image's vector."""
    image_id = search.resolve_image(conn, image)
    m = search.space_matrix(conn, space or "visual")
    v = m.vector(image_id)
    if v is None:
        raise search.NotFoundError(f"image {image_id} has no {space} vector")
    return encode_f32(v)


def register_functions(conn: sqlite3.Connection) -> list[str]:
    """Register every semsearch SQL function on ``conn``; never raises.

    Scalar functions always work; if the table-valued ones can't be registered on this
    Python, that is logged once. Returns the names registered.
    """
    global _warned
    names = []
    scalars: list[tuple[str, int, Callable[..., Any]]] = [
        ("semsearch_text_vector", 1, lambda q: text_vector_blob(conn, q)),
        ("semsearch_word_vector", 1, lambda q: word_vector_blob(conn, q)),
        ("semsearch_image_vector", 1, lambda i: image_vector_blob(conn, i)),
        ("semsearch_image_vector", 2, lambda i, s: image_vector_blob(conn, i, s)),
    ]
    for name, nargs, fn in scalars:
        conn.create_function(name, nargs, fn, deterministic=True)
        names.append(name)
    try:
        from semsearch_sqlite.sqlite.vtable import register_table_function

        for name, (_, columns, params) in TABLE_FUNCTIONS.items():
            register_table_function(conn, name, _table_function(name), columns, params)
            names.append(name)
    except Exception as e:  # noqa: BLE001 - must never break the connection
        if not _warned:
            log.warning("semsearch: table-valued functions unavailable on this Python (%s); scalar functions still work", e)
            _warned = True
    return names
