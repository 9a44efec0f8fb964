"""SQL faces of the queries: table-valued and scalar functions on any connection.

Used by the Datasette plugin (``prepare_connection``) and ``semsearch-sqlite sql``.
Each function calls the same library function as the CLI and the pages.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from semsearch_sqlite.errors import SchemaVersionError
from semsearch_sqlite.queries import search
from semsearch_sqlite.queries.duplicates import duplicate_images
from semsearch_sqlite.queries.filters import Filter
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.changes import cache_version
from semsearch_sqlite.storage.rows import database_key, photo_metadata_of, thumbnails
from semsearch_sqlite.storage.store import encode_f32
from semsearch_sqlite.text.vocabulary import word_space

log = logging.getLogger(__name__)
RESULT_CACHE = 256
# the SQL a page links to ("see this in SQL"), with :named parameters
EXAMPLE_SQL = {
    "similar_images": "select * from similar_images(:q, :k)",
    "similar_images_feedback": "select * from similar_images(:q, :k, :like, :unlike)",
    "image_tags": "select * from image_tags(:id)",
    "similar_to_image_visual": "select * from similar_to_image(:id, :k, 'visual')",
    "similar_to_image_semantic": "select * from similar_to_image(:id, :k, 'semantic')",
    "similar_images_focused": "select * from similar_images_focused(:id, :focus, :k)",
    "similar_words": "select * from similar_words(:q, :k)",
    "duplicate_images": "select * from duplicate_images() where group_id in "
    "(select group_id from duplicate_images() where image_id = :id)",
}

# match: "strong" / "weak" for text queries (null for the others)
IMAGE_COLUMNS = [
    "rank",
    "image_id",
    "path",
    "label",
    "distance",
    "match",
    "thumbnail",
    "taken_at",
    "camera",
    "lens",
    "latitude",
    "longitude",
]
# WHERE constraints on these columns of an image function pick its candidates before the top k
IMAGE_FILTERS = ["image_id", "path", "label", "taken_at", "camera", "lens", "latitude", "longitude"]
WORD_COLUMNS = ["rank", "word", "distance", "confidence"]
# distance: to the group's suggested keeper (keeper = 1, why: the reason), which comes first
DUPLICATE_COLUMNS = [
    "group_id",
    "rank",
    "image_id",
    "path",
    "label",
    "distance",
    "keeper",
    "why",
    "width",
    "height",
    "size",
    "date",
    "thumbnail",
]
# functions whose every argument is optional
NO_REQUIRED = {"duplicate_images"}


def _stored(conn: sqlite3.Connection, image: Any) -> int:
    """An image argument of an SQL function: an id or a stored path, never a file on
    this machine (SQL may come from any visitor: no file-existence oracle, no hashing)."""
    return search.resolve_image(conn, image, files=False)


# name -> (library call, columns, parameters); k is always optional. Image searches also
# take ``filters`` (pushed from the WHERE clause, see sqlite.vtable).
TABLE_FUNCTIONS: dict[str, tuple[Callable[..., search.Results], list[str], list[str]]] = {
    "similar_images": (
        lambda c, q, k, like, unlike, filters=(): search.similar_images(
            c, q, k, filters=filters, like=like, unlike=unlike
        ),
        IMAGE_COLUMNS,
        ["query", "k", "like", "unlike"],
    ),
    "similar_to_image": (
        lambda c, image, k, space, filters=(): search.similar_to_image(
            c, _stored(c, image), k, space or "visual", filters=filters
        ),
        IMAGE_COLUMNS,
        ["image", "k", "space"],
    ),
    "similar_images_focused": (
        lambda c, image, focus, k, filters=(): search.focused_search(c, _stored(c, image), focus, k, filters=filters),
        IMAGE_COLUMNS,
        ["image", "focus", "k"],
    ),
    "images_tagged": (lambda c, word, k: search.images_tagged(c, word, k), IMAGE_COLUMNS, ["word", "k"]),
    "duplicate_images": (lambda c, threshold: duplicate_images(c, threshold), DUPLICATE_COLUMNS, ["threshold"]),
    "image_tags": (lambda c, image, k: search.image_tags(c, _stored(c, image), k), WORD_COLUMNS, ["image", "k"]),
    "similar_words": (lambda c, q, k: search.similar_words(c, q, k), WORD_COLUMNS, ["query", "k"]),
}

_cache: ProcessCache[list[tuple[Any, ...]]] = ProcessCache(RESULT_CACHE)
_warned = False


# A statement of more VM steps than Datasette's progress handler waits between checks
# (1,000): running it calls the connection's handler, so a time limit that has passed
# stops the work here ("interrupted"), between steps, not only once the rows are out.
_INTERRUPTION_POINT = (
    "with recursive n(i) as (select 1 union all select i + 1 from n where i < 100) select count(*) from n"
)


def interruption_point(conn: sqlite3.Connection) -> None:
    """Raise SQLite's "interrupted" if the statement's time limit (progress handler) or
    ``interrupt()`` says stop; otherwise it costs 50-130 microseconds (benchmarks/sqlfuncs.py)."""
    conn.execute(_INTERRUPTION_POINT).fetchone()


def _rows(
    conn: sqlite3.Connection, name: str, args: tuple[Any, ...], filters: tuple[tuple[str, str, Any], ...] = ()
) -> list[tuple[Any, ...]]:
    """Rows of a table function, cached: SQLite may call it once per outer row."""
    call, columns, _ = TABLE_FUNCTIONS[name]
    db = database_key(conn)
    key = (db, cache_version(conn, db), name, args, filters)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    interruption_point(conn)
    if filters:
        results = call(conn, *args, filters=[Filter(*f) for f in filters])
    else:
        results = call(conn, *args)
    interruption_point(conn)
    dicts = [h.as_dict() for h in results.hits]
    for d in dicts:
        if "group" in d:  # "group" is an SQL keyword
            d["group_id"] = d.pop("group")
    if "thumbnail" in columns and dicts:
        ids = [d["image_id"] for d in dicts]
        thumbs = thumbnails(conn, ids)
        metadata = photo_metadata_of(conn, ids)
        for d in dicts:
            d["thumbnail"] = thumbs.get(d["image_id"])
            d.update(metadata.get(d["image_id"], {}))
    rows = [tuple(d.get(c) for c in columns) for d in dicts]
    _cache.put(key, rows)
    return rows


def _table_function(name: str) -> Callable[..., list[tuple[Any, ...]]]:
    return lambda conn, *args, filters=(): _rows(conn, name, args, tuple(filters))


def text_vector_blob(conn: sqlite3.Connection, query: Any) -> bytes:
    """``semsearch_text_vector(query)``: the query in the images' semantic space."""
    vector, _ = search.text_vector(conn, query)
    return encode_f32(vector)


def word_vector_blob(conn: sqlite3.Connection, query: Any) -> bytes:
    """``semsearch_word_vector(query)``: the query in word space (for ``vec_words``)."""
    return encode_f32(word_space(conn).query(query).vector)


def image_vector_blob(conn: sqlite3.Connection, image: Any, space: Any = "visual") -> bytes:
    """``semsearch_image_vector(image [, space])``: a stored image's vector."""
    image_id = _stored(conn, image)
    m = search.space_matrix(conn, space or "visual")
    v = m.vector(image_id)
    if v is None:
        raise search.NotFoundError(f"image {image_id} has no {space} vector")
    return encode_f32(v)


def _refusing(message: str) -> Callable[..., Any]:
    def refuse(conn: sqlite3.Connection, *args: Any, **kwargs: Any) -> Any:
        raise SchemaVersionError(message)

    return refuse


def register_functions(conn: sqlite3.Connection, *, refuse: str | None = None) -> list[str]:
    """Register every semsearch SQL function on ``conn``; never raises.

    Scalar functions always work; if the table-valued ones can't be registered on this
    Python, that is logged once. With ``refuse`` (a store this version can't read, such
    as one from a newer version) every function raises that message instead of reading
    it. Returns the names registered.
    """
    global _warned
    names = []
    scalars: list[tuple[str, int, Callable[..., Any]]] = [
        ("semsearch_text_vector", 1, text_vector_blob),
        ("semsearch_word_vector", 1, word_vector_blob),
        ("semsearch_image_vector", 1, image_vector_blob),
        ("semsearch_image_vector", 2, image_vector_blob),
    ]
    for name, nargs, fn in scalars:
        fn = _refusing(refuse) if refuse else fn
        try:
            from semsearch_sqlite.sqlite.scalar import register_scalar_function

            # through SQLite's C API, so the library's message is the SQL error
            register_scalar_function(conn, name, nargs, fn)
        except Exception:  # noqa: BLE001 - plain sqlite3 still works, with a generic error
            conn.create_function(name, nargs, functools.partial(fn, conn), deterministic=True)
        names.append(name)
    try:
        from semsearch_sqlite.sqlite.vtable import register_table_function

        for name, (_, columns, params) in TABLE_FUNCTIONS.items():
            filters = IMAGE_FILTERS if columns is IMAGE_COLUMNS and name != "images_tagged" else ()
            call = _refusing(refuse) if refuse else _table_function(name)
            register_table_function(
                conn, name, call, columns, params, filters=filters, required=0 if name in NO_REQUIRED else 1
            )
            names.append(name)
    except Exception as e:  # noqa: BLE001 - must never break the connection
        if not _warned:
            log.warning(
                "semsearch: table-valued functions unavailable on this Python (%s); scalar functions still work", e
            )
            _warned = True
    return names
