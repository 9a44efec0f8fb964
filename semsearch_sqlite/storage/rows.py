"""Row readers over the plain tables (images, image_files, tags, words, evaluations,
semsearch_meta): the one place queries, the CLI and the Datasette pages read them.

Each takes any ``sqlite3`` connection (sqlite-vec needn't be loaded) and never writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

META_TABLE = "semsearch_meta"


@dataclass
class ImageRow:
    """What a result card needs of one stored image."""

    id: int
    path: str
    label: str | None
    thumb_width: int | None = None
    thumb_height: int | None = None

    @property
    def name(self) -> str:
        """The file name without its folders."""
        return self.path.rsplit("/", 1)[-1]


def _marks(n: int) -> str:
    return ",".join("?" * n)


# -- provenance ------------------------------------------------------------------------------
def read_meta(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    """One ``semsearch_meta`` value (JSON-decoded), or ``default`` (also when there is no table)."""
    try:
        row = conn.execute(f"select value from {META_TABLE} where key = ?", [key]).fetchone()
    except sqlite3.OperationalError:
        return default
    return default if row is None else json.loads(row[0])


def generation(conn: sqlite3.Connection) -> int:
    """The database's write generation, bumped by every writer (0 when never bumped)."""
    return int(read_meta(conn, "generation", 0) or 0)


def database_key(conn: sqlite3.Connection) -> str:
    """What identifies the database behind ``conn`` across connections (for caches)."""
    row = conn.execute("select file from pragma_database_list where name = 'main'").fetchone()
    path = row[0] if row else ""
    # in-memory databases are private to their connection
    return path or f"memory:{id(conn)}"


def table_definitions(conn: sqlite3.Connection) -> list[tuple[str, str | None]]:
    """``(name, sql)`` of every table, virtual and shadow tables included."""
    return conn.execute("select name, sql from sqlite_master where type = 'table'").fetchall()


def table_exists(conn: sqlite3.Connection, name: str) -> bool:
    """Whether a table (plain, virtual or shadow) named ``name`` exists."""
    return conn.execute("select 1 from sqlite_master where type = 'table' and name = ?", [name]).fetchone() is not None


def is_semsearch_db(conn: sqlite3.Connection) -> bool:
    """Whether the database behind ``conn`` holds a semsearch store."""
    return any(name == META_TABLE for name, _ in table_definitions(conn))


# -- images ----------------------------------------------------------------------------------
def image_id_exists(conn: sqlite3.Connection, image_id: int) -> bool:
    """Whether an image with this id is stored."""
    return conn.execute("select 1 from images where id = ?", [int(image_id)]).fetchone() is not None


def image_id_for_path(conn: sqlite3.Connection, path: str) -> int | None:
    """The id of the image stored under ``path`` (relative to the ingested folder), or None."""
    row = conn.execute("select id from images where path = ?", [path]).fetchone()
    return None if row is None else int(row[0])


def image_id_for_sha256(conn: sqlite3.Connection, sha256: str) -> int | None:
    """The lowest id of an image whose file has this SHA-256, or None."""
    row = conn.execute("select min(id) from images where sha256 = ?", [sha256]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def image_rows(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, ImageRow]:
    """The rows of ``ids`` that exist, by id."""
    if not ids:
        return {}
    ids = [int(i) for i in ids]
    sql = f"select id, path, label, thumb_width, thumb_height from images where id in ({_marks(len(ids))})"
    return {r[0]: ImageRow(*r) for r in conn.execute(sql, ids)}


def thumbnails(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, bytes | None]:
    """The thumbnail BLOBs of ``ids``, by id."""
    if not ids:
        return {}
    ids = [int(i) for i in ids]
    return dict(conn.execute(f"select id, thumbnail from images where id in ({_marks(len(ids))})", ids).fetchall())


def thumbnail(conn: sqlite3.Connection, image_id: int) -> tuple[bytes, str] | None:
    """``(thumbnail JPEG, sha256 of the original)`` of one image, or None."""
    row = conn.execute("select thumbnail, sha256 from images where id = ?", [int(image_id)]).fetchone()
    if row is None or not row[0]:
        return None
    return bytes(row[0]), row[1]


def display_file(conn: sqlite3.Connection, image_id: int) -> tuple[bytes, str | None, str] | None:
    """``(display copy bytes, its MIME type, sha256 of the original)`` of one image, or None."""
    row = conn.execute(
        "select f.display, f.display_mime, i.sha256 from image_files f join images i on i.id = f.image_id "
        "where f.image_id = ?",
        [int(image_id)],
    ).fetchone()
    if row is None or not row[0]:
        return None
    return bytes(row[0]), row[1], row[2]


IMAGE_DETAIL_KEYS = (
    "id",
    "path",
    "label",
    "width",
    "height",
    "mime",
    "size",
    "sha256",
    "display_width",
    "display_height",
    "has_display",
)


def image_detail(conn: sqlite3.Connection, image_id: int) -> dict[str, Any] | None:
    """Everything the image page shows about one stored image, or None."""
    row = conn.execute(
        "select i.id, i.path, i.label, i.width, i.height, i.mime, i.size, i.sha256, "
        "f.display_width, f.display_height, f.display is not null "
        "from images i left join image_files f on f.image_id = i.id where i.id = ?",
        [int(image_id)],
    ).fetchone()
    if row is None:
        return None
    out = dict(zip(IMAGE_DETAIL_KEYS, row))
    out["name"] = row[1].rsplit("/", 1)[-1]
    return out


PHOTO_METADATA_KEYS = ("taken_at", "camera", "lens", "latitude", "longitude")


def image_columns(conn: sqlite3.Connection) -> set[str]:
    """The columns of ``images`` (older databases lack the photo metadata ones)."""
    return {r[1] for r in conn.execute("select * from pragma_table_info('images')")}


def photo_metadata_of(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The EXIF fields (None when unknown) of ``ids``, by id; {} on databases without them."""
    if not ids or not set(PHOTO_METADATA_KEYS) <= image_columns(conn):
        return {}
    ids = [int(i) for i in ids]
    sql = f"select id, {', '.join(PHOTO_METADATA_KEYS)} from images where id in ({_marks(len(ids))})"
    return {r[0]: dict(zip(PHOTO_METADATA_KEYS, r[1:])) for r in conn.execute(sql, ids)}


def photo_metadata(conn: sqlite3.Connection, image_id: int) -> dict[str, Any]:
    """The EXIF fields of one image that are known (empty on databases from before them)."""
    if not set(PHOTO_METADATA_KEYS) <= image_columns(conn):
        return {}
    row = conn.execute(f"select {', '.join(PHOTO_METADATA_KEYS)} from images where id = ?", [int(image_id)]).fetchone()
    return {} if row is None else {k: v for k, v in zip(PHOTO_METADATA_KEYS, row) if v is not None}


# result column -> images column, for filters pushed into a search
FILTER_COLUMNS = {
    "image_id": "id",
    "path": "path",
    "label": "label",
    "width": "width",
    "height": "height",
    "taken_at": "taken_at",
    "camera": "camera",
    "lens": "lens",
    "latitude": "latitude",
    "longitude": "longitude",
}
_FILTER_SQL = {
    "=": "{} = ?",
    "<": "{} < ?",
    "<=": "{} <= ?",
    ">": "{} > ?",
    ">=": "{} >= ?",
    "like": "{} like ?",
    "glob": "{} glob ?",
}


def filtered_image_ids(
    conn: sqlite3.Connection, condition: str | None, clauses: Sequence[tuple[str, str, Any]]
) -> list[int]:
    """Ids of the images matching the SQL ``condition`` (over ``images`` columns) and the
    ``(result column, operator, value)`` clauses (operators of ``queries.filters``)."""
    parts, params = [], []
    if condition:
        parts.append(f"({condition})")
    for column, op, value in clauses:
        name = FILTER_COLUMNS[column]
        if op == "in":
            values = list(value)
            if not values:
                return []
            parts.append(f"{name} in ({_marks(len(values))})")
            params.extend(values)
        else:
            parts.append(_FILTER_SQL[op].format(name))
            params.append(value)
    sql = "select id from images" + (" where " + " and ".join(parts) if parts else "")
    return [r[0] for r in conn.execute(sql, params)]


def paths_and_labels(conn: sqlite3.Connection) -> dict[int, tuple[str, str | None]]:
    """image id -> ``(path, label)`` of every stored image."""
    return {r[0]: (r[1], r[2]) for r in conn.execute("select id, path, label from images")}


def image_ids(conn: sqlite3.Connection) -> list[int]:
    """The id of every stored image (read from an index, not the rows)."""
    return [r[0] for r in conn.execute("select id from images")]


def stored_hashes(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str]:
    """image id -> its file's SHA-256, for ``ids`` (a few rows at a time)."""
    wanted = sorted({int(i) for i in ids})
    out: dict[int, str] = {}
    for s in range(0, len(wanted), 500):
        part = wanted[s : s + 500]
        out.update(conn.execute(f"select id, sha256 from images where id in ({_marks(len(part))})", part).fetchall())
    return out


def class_probability_blobs(conn: sqlite3.Connection, ids: Sequence[int] | None = None) -> dict[int, bytes]:
    """image id -> its stored ImageNet class probabilities (float32 BLOB), for ``ids`` or all."""
    if ids is None:
        return dict(conn.execute("select image_id, probs from image_classes").fetchall())
    wanted = [int(i) for i in ids]
    return dict(
        conn.execute(
            f"select image_id, probs from image_classes where image_id in ({_marks(len(wanted))})", wanted
        ).fetchall()
    )


def row_count(conn: sqlite3.Connection, table: str) -> int:
    """How many rows ``table`` (one of this package's tables, a ``vec_*`` one included) holds."""
    return int(conn.execute(f"select count(*) from {table}").fetchone()[0])


def image_count(conn: sqlite3.Connection) -> int:
    """How many images are stored."""
    return row_count(conn, "images")


def plain_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows of the plain tables a summary counts: ``images``, ``words``, ``tags``."""
    return {table: row_count(conn, table) for table in ("images", "words", "tags")}


def image_sizes(conn: sqlite3.Connection) -> dict[str, int]:
    """Label counts and stored image bytes, for ``info``."""

    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    return {
        "labels": one("select count(distinct label) from images where label is not null"),
        "unlabelled": one("select count(*) from images where label is null"),
        "thumbnail_bytes": one("select coalesce(sum(length(thumbnail)), 0) from images"),
        "display_bytes": one("select coalesce(sum(length(display)), 0) from image_files"),
    }


def label_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of images of each label."""
    return dict(conn.execute("select label, count(*) from images where label is not null group by label"))


def image_labels(conn: sqlite3.Connection) -> tuple[np.ndarray, list[str]]:
    """The ids of the labelled images and their labels."""
    found = conn.execute("select id, label from images where label is not null").fetchall()
    return np.array([i for i, _ in found], np.int64), [lab for _, lab in found]


def images_of_label(conn: sqlite3.Connection, label: str, limit: int) -> list[ImageRow]:
    """The first ``limit`` images of ``label`` (by id)."""
    rows = conn.execute(
        "select id, path, label, thumb_width, thumb_height from images where label = ? order by id limit ?",
        [label, int(limit)],
    ).fetchall()
    return [ImageRow(*r) for r in rows]


# -- tags and words --------------------------------------------------------------------------
# a tag's confidence where none is stored (tags written before m004): the word's cosine
_CONFIDENCE = "coalesce(confidence, max(0.0, min(1.0, 1.0 - distance)))"


def _has_confidence(conn: sqlite3.Connection) -> bool:
    """Whether the tags table has its confidence column (a file opened read-only keeps its schema)."""
    return any(r[1] == "confidence" for r in conn.execute("pragma table_info(tags)"))


def _confidence_sql(conn: sqlite3.Connection) -> str:
    return _CONFIDENCE if _has_confidence(conn) else "max(0.0, min(1.0, 1.0 - distance))"


def stored_tags(conn: sqlite3.Connection, image_id: int, k: int) -> list[tuple[str, float, float]]:
    """The stored tags of one image, best first, as ``(word, distance, confidence)``."""
    return conn.execute(
        f"select word, distance, {_confidence_sql(conn)} from tags where image_id = ? order by rank limit ?",
        [int(image_id), int(k)],
    ).fetchall()


def every_stored_tag(conn: sqlite3.Connection, k: int) -> dict[int, list[tuple[str, float, float]]]:
    """image id -> its first ``k`` stored tags ``(word, distance, confidence)``, best first
    (one query for the collection)."""
    out: dict[int, list[tuple[str, float, float]]] = {}
    for image_id, word, distance, confidence in conn.execute(
        f"select image_id, word, distance, {_confidence_sql(conn)} from tags where rank <= ? order by image_id, rank",
        [int(k)],
    ):
        out.setdefault(int(image_id), []).append((word, float(distance), float(confidence)))
    return out


def images_with_tag(conn: sqlite3.Connection, words: Sequence[str], k: int) -> list[tuple[int, float]]:
    """``(image_id, distance)`` of the images tagged any of ``words`` (spellings of one
    tag), the most confident first."""
    marks = ", ".join("?" * len(words))
    rows = conn.execute(
        f"select image_id, min(distance) as d, max({_confidence_sql(conn)}) as c from tags "
        f"where word in ({marks}) group by image_id order by c desc, d limit ?",
        [*words, int(k)],
    ).fetchall()
    return [(int(i), float(d)) for i, d, _ in rows]


def vocabulary(conn: sqlite3.Connection) -> dict[int, str]:
    """The stored vocabulary, id -> word."""
    return dict(conn.execute("select id, word from words").fetchall())


def has_words(conn: sqlite3.Connection) -> bool:
    """Whether a vocabulary is stored."""
    return conn.execute("select 1 from words limit 1").fetchone() is not None


def rare_word_vector(conn: sqlite3.Connection, word: str) -> np.ndarray | None:
    """The int8 lookup vector of a word outside the stored vocabulary (as float32), or None."""
    try:
        row = conn.execute(
            "select words, vectors from word_lookup where first <= ? order by first desc limit 1", [word]
        ).fetchone()
    except sqlite3.OperationalError:  # a database from before the lookup table
        return None
    if row is None:
        return None
    words = row[0].split("\n")
    try:
        i = words.index(word)
    except ValueError:
        return None
    dim = len(row[1]) // len(words)
    return np.frombuffer(row[1], dtype=np.int8, count=dim, offset=i * dim).astype(np.float32)


def word_related_chunks(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
    """The stored relatedness vectors as ``(first word id, int8 vectors)`` chunks, in id
    order (none in a database from before them)."""
    try:
        return conn.execute("select first_id, vectors from word_related order by first_id").fetchall()
    except sqlite3.OperationalError:
        return []


def related_bytes(conn: sqlite3.Connection) -> int:
    """The size of the stored relatedness vectors in bytes (0 in a database from before them)."""
    try:
        return int(conn.execute("select coalesce(sum(length(vectors)), 0) from word_related").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def rare_word_count(conn: sqlite3.Connection) -> int:
    """How many lookup-only words are stored."""
    try:
        return int(
            conn.execute(
                "select coalesce(sum(length(words) - length(replace(words, char(10), '')) + 1), 0) from word_lookup"
            ).fetchone()[0]
        )
    except sqlite3.OperationalError:
        return 0


# -- evaluations -----------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One stored ``evaluate`` run, JSON columns decoded (None where unreadable)."""

    id: int
    created_at: str | None
    settings: Any
    provenance: Any
    figures: Any
    runs: int


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if text else {}
    except (TypeError, ValueError):
        return None


def latest_evaluation(conn: sqlite3.Connection) -> Evaluation | None:
    """The newest ``evaluations`` row and how many there are, or None."""
    if not table_exists(conn, "evaluations"):
        return None
    row = conn.execute(
        "select id, created_at, settings, provenance, figures from evaluations order by id desc limit 1"
    ).fetchone()
    if row is None:
        return None
    runs = conn.execute("select count(*) from evaluations").fetchone()[0]
    return Evaluation(row[0], row[1], _json(row[2]), _json(row[3]), _json(row[4]), int(runs))


def file_facts(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """What choosing between copies needs of ``ids``, by id: ``path``, ``label``, ``size``
    (bytes), ``width``, ``height``, ``mtime`` and ``taken_at`` (None where unknown)."""
    if not ids:
        return {}
    ids = [int(i) for i in ids]
    taken = "taken_at" if "taken_at" in image_columns(conn) else "null"
    sql = f"select id, path, label, size, width, height, mtime, {taken} from images where id in ({_marks(len(ids))})"
    keys = ("path", "label", "size", "width", "height", "mtime", "taken_at")
    return {r[0]: dict(zip(keys, r[1:])) for r in conn.execute(sql, ids)}


# -- what the collection holds, for the empty search page, its filters and info ------------


def photo_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many photos have a date (``dated``) and a position (``located``): 0 on
    databases without the photo metadata columns."""
    if not {"taken_at", "latitude", "longitude"} <= image_columns(conn):
        return {"dated": 0, "located": 0}
    dated, located = conn.execute(
        "select count(taken_at), coalesce(sum(latitude is not null and longitude is not null), 0) from images"
    ).fetchone()
    return {"dated": int(dated), "located": int(located)}


def positions(conn: sqlite3.Connection) -> list[tuple[int, float, float]]:
    """``(id, latitude, longitude)`` of every located photo."""
    if not {"latitude", "longitude"} <= image_columns(conn):
        return []
    sql = "select id, latitude, longitude from images where latitude is not null and longitude is not null"
    return [(int(i), float(lat), float(lon)) for i, lat, lon in conn.execute(sql)]


def label_samples(conn: sqlite3.Connection) -> dict[str, ImageRow]:
    """One photo of each label (its first by id), to show beside the label."""
    sql = (
        "select id, path, label, thumb_width, thumb_height from images where id in "
        "(select min(id) from images where label is not null group by label)"
    )
    return {r[2]: ImageRow(*r) for r in conn.execute(sql)}


def shared_tags(conn: sqlite3.Connection) -> list[tuple[str, list[str], int]]:
    """Tag words that photos of several labels share, each with those labels and how many
    photos carry it (most labels first): the kinds the collection's photos come in."""
    sql = (
        "select t.word, i.label, count(*) from tags t join images i on i.id = t.image_id "
        "where i.label is not null group by t.word, i.label"
    )
    labels: dict[str, list[str]] = {}
    photos: dict[str, int] = {}
    for word, label, n in conn.execute(sql):
        labels.setdefault(word, []).append(label)
        photos[word] = photos.get(word, 0) + int(n)
    shared = [(w, sorted(labs), photos[w]) for w, labs in labels.items() if len(labs) >= 2]
    return sorted(shared, key=lambda t: (-len(t[1]), t[0]))
