"""The one-file store: open/create the database, schema migrations, provenance and
float32 BLOB encoding.

Writers go through a :class:`Store`; readers (queries, the Datasette plugin) use any
``sqlite3`` connection with sqlite-vec loaded and the readers of :mod:`.rows`,
:mod:`.vectors` and :mod:`.models`. Only this package names tables.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite._version import __version__
from semsearch_sqlite.errors import SchemaVersionError, StoreError
from semsearch_sqlite.sqlite.extensions import load_sqlite_vec
from semsearch_sqlite.storage.models import load_model, save_model
from semsearch_sqlite.storage.rows import META_TABLE, read_meta
from semsearch_sqlite.storage.vec0 import (
    VEC_KEYS,
    check_vec_name,
    delete_float_rows,
    drop_code_lists,
    drop_float_rows,
    has_float_rows,
    read_vectors,
    vec_table_dim,
    write_float_rows,
)


def _import_sqlite_utils() -> None:
    # sqlite-utils imports pandas when it is installed (the [ray] extra brings it) only to
    # map pandas.Timestamp values, which this package never writes; skipping that import
    # saves about a second on every command. pandas stays importable for everyone else.
    if "pandas" in sys.modules or "sqlite_utils" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]  # import pandas -> ImportError, this once
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del sys.modules["pandas"]


_import_sqlite_utils()
import sqlite_utils  # noqa: E402
from sqlite_utils.migrations import Migrations  # noqa: E402

MIGRATION_SET = "semsearch"
SQLITE_HEADER = b"SQLite format 3\x00"
# Larger pages store 4096-d float rows (16 KB) without overflow chains; set before
# the first table exists, so it only affects new files.
PAGE_SIZE = 65536
BUSY_TIMEOUT_MS = 30_000

migrations = Migrations(MIGRATION_SET)
# the names of the known steps, in order (sqlite-utils keeps its own list private)
MIGRATION_STEPS: list[str] = []


def migration(fn: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
    """Register a schema step (``mNNN_name``) with sqlite-utils and in :data:`MIGRATION_STEPS`."""
    MIGRATION_STEPS.append(fn.__name__)
    return migrations()(fn)


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(f"create table {META_TABLE} (key text primary key, value text)")
    db.execute(
        """create table images (
            id integer primary key,
            path text not null unique,
            label text,
            sha256 text not null,
            size integer,
            mtime real,
            width integer,
            height integer,
            mime text,
            thumbnail blob,
            thumb_width integer,
            thumb_height integer,
            added_at text,
            updated_at text
        )"""
    )
    db.execute("create index images_sha256 on images(sha256)")
    db.execute("create index images_label on images(label)")
    # Display copies live beside the images table so that browsing `images` in
    # Datasette doesn't read megabytes of BLOBs per page.
    db.execute(
        """create table image_files (
            image_id integer primary key references images(id),
            display blob,
            display_mime text,
            display_width integer,
            display_height integer,
            is_original integer not null default 0
        )"""
    )
    db.execute(
        """create table image_classes (
            image_id integer primary key references images(id),
            probs blob not null
        )"""
    )
    db.execute("create table words (id integer primary key, word text not null unique)")
    db.execute(
        """create table tags (
            image_id integer not null references images(id),
            rank integer not null,
            word text not null,
            distance real not null,
            primary key (image_id, rank)
        )"""
    )
    db.execute("create index tags_word on tags(word)")
    db.execute(
        """create table models (
            name text primary key,
            kind text not null,
            config text,
            weights blob,
            created_at text
        )"""
    )
    db.execute(
        """create table evaluations (
            id integer primary key,
            created_at text,
            settings text,
            provenance text,
            figures text
        )"""
    )


# EXIF fields kept as images columns (named so datasette-cluster-map finds latitude/longitude)
PHOTO_METADATA_COLUMNS = ("taken_at", "camera", "lens", "latitude", "longitude")


@migration
def m002_photo_metadata(db: sqlite_utils.Database) -> None:
    # Columns stay empty until the next ingest reads the files' EXIF (without re-embedding);
    # metadata_read_at says a file was read, so files without EXIF aren't read again.
    for column, kind in (
        ("taken_at", "text"),
        ("camera", "text"),
        ("lens", "text"),
        ("latitude", "real"),
        ("longitude", "real"),
        ("metadata_read_at", "text"),
    ):
        db.execute(f"alter table images add column {column} {kind}")
    db.execute("create index images_taken_at on images(taken_at)")
    db.execute("create index images_camera on images(camera)")


@migration
def m003_word_lookup(db: sqlite_utils.Database) -> None:
    # Every word of the word-vector source that is not in `words`, for query lookups only
    # (never shown as a tag or neighbour), in sorted buckets: `first` is the bucket's
    # first word, `words` its words joined by newlines, `vectors` their int8 unit vectors
    # (dim bytes a word). A bucket per row keeps 350k words to ~1,400 rows.
    db.execute("create table word_lookup (first text primary key, words text not null, vectors blob not null)")


@migration
def m004_tag_confidence(db: sqlite_utils.Database) -> None:
    # How sure a tag is (0..1), shown beside it; null for tags stored before it (their
    # readers fall back to the word's cosine, 1 - distance) until the next train/ingest.
    db.execute("alter table tags add column confidence real")


@migration
def m005_file_index(db: sqlite_utils.Database) -> None:
    # What ingest compares with the folder on every run, readable without the rows (whose
    # thumbnails make a scan of `images` read ~10 KB a photo: 1 GB at 100k photos), and
    # the rows whose EXIF was never read (none, once every file was read).
    db.execute("create index images_file on images(path, size, mtime, label)")
    db.execute("create index images_unread on images(id) where metadata_read_at is null")


@migration
def m006_word_related(db: sqlite_utils.Database) -> None:
    # The vocabulary's relatedness vectors (text/related.py): int8 unit vectors of the
    # words with consecutive ids from `first_id`, in chunks (50k words in ~13 rows).
    db.execute("create table word_related (first_id integer primary key, vectors blob not null)")


def now() -> str:
    """UTC timestamp, ISO 8601, seconds precision."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def schema_version() -> int:
    """The schema version this package writes (the number of known migrations)."""
    return len(MIGRATION_STEPS)


def schema_check(conn: sqlite3.Connection, name: str) -> None:
    """Raise SchemaVersionError unless the store behind ``conn`` has a schema this
    version knows: ``schema_version`` a whole number from 1 to :func:`schema_version`
    and only known migration steps applied. Reads only, so a refused file is untouched.
    """
    upgrade = f"upgrade with: pip install -U semsearch-sqlite (this is {__version__}, schema {schema_version()})"
    # a wrapper that changes nothing on the connection (it may be one of Datasette's)
    view = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    applied = {m.name for m in migrations.applied(view)}
    unknown = sorted(applied - set(MIGRATION_STEPS))
    if unknown:
        raise SchemaVersionError(
            f"{name}: written by a newer semsearch-sqlite (schema steps {', '.join(unknown)}); {upgrade}"
        )
    try:
        row = conn.execute(f"select value from {META_TABLE} where key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        return  # no store yet (the caller decides whether to create one)
    if row is None:
        return  # a store whose first migration was interrupted: opening it completes it
    try:
        stored = json.loads(row[0])
    except (TypeError, ValueError):
        stored = row[0]
    if type(stored) is int and stored > schema_version():
        raise SchemaVersionError(f"{name}: schema version {stored} is newer than this semsearch-sqlite; {upgrade}")
    if type(stored) is not int or stored < 1:
        known = "1" if schema_version() == 1 else f"1 to {schema_version()}"
        raise SchemaVersionError(
            f"{name}: schema version {stored!r} is not one this semsearch-sqlite knows (it knows {known}); "
            "the file was changed by another program: restore it from a copy (nothing was changed in it)"
        )


def encode_f32(vector: Any) -> bytes:
    """A vector as a little-endian float32 BLOB (sqlite-vec's format)."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_f32(blob: bytes) -> np.ndarray:
    """A float32 BLOB back into a 1-d numpy array."""
    return np.frombuffer(blob, dtype="<f4")


def check_sqlite_file(path: str | os.PathLike[str]) -> None:
    """Raise StoreError unless ``path`` is empty or starts with SQLite's header."""
    p = Path(path)
    if p.exists() and not p.is_file() and not p.is_dir():
        raise StoreError(
            f"{p}: a device or other special file, not a database file; "
            "give the .db file made by semsearch-sqlite ingest"
        )
    if not p.exists() or p.stat().st_size == 0:
        return
    if p.is_dir():
        raise StoreError(f"{p}: is a directory, not a database file; give a file name such as photos.db")
    with open(p, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        raise StoreError(f"{p}: not a SQLite database; give a new file name or a .db made by semsearch-sqlite")


def _open_read_only(path: Path, immutable: bool) -> sqlite3.Connection:
    """A read-only connection. A WAL file needs a -shm beside it; in a read-only folder
    (or on read-only media) none can be made, so a file with no -wal to merge is opened
    immutable (nothing can be writing it there), and one with a -wal gets an error
    naming that cause."""
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(uri + ("?immutable=1" if immutable else "?mode=ro"), uri=True, check_same_thread=False)
    if immutable:
        return conn
    try:
        conn.execute("select count(*) from sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as e:
        conn.close()
        if os.access(path.parent, os.W_OK) and not _read_only_media(path.parent):
            raise StoreError(f"{path}: cannot open: {e}") from e
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(
                f"{path}: cannot read it in a read-only folder: its changes in {wal.name} are not merged yet "
                f"and SQLite needs to create {path.name}-shm beside it to read them; open it once where the "
                "folder is writable (any read merges them), or make the folder writable"
            ) from e
    return sqlite3.connect(uri + "?immutable=1", uri=True, check_same_thread=False)


def _read_only_media(folder: Path) -> bool:
    """Whether ``folder`` is on a file system mounted read-only (root ignores chmod, not this)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def connect(path: str | os.PathLike[str], *, readonly: bool = False, immutable: bool = False) -> sqlite3.Connection:
    """A connection with sqlite-vec loaded (any thread may use it).

    ``immutable``: the file never changes (``datasette -i``), so SQLite takes no locks and
    needs no -wal/-shm files: it reads a file on read-only media even in WAL mode.
    """
    if readonly or immutable:
        conn = _open_read_only(Path(path), immutable)
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False)
    # Transactions are always explicit (Store.atomic), never opened behind our back.
    conn.isolation_level = None
    conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
    load_sqlite_vec(conn)
    return conn


# pragmas that take an argument and only read (the table-valued pragma_* functions)
_READING_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
}


def _no_file_writes(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY  # VACUUM INTO asks for ATTACH too
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None and (arg1 or "").lower() not in _READING_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def read_only_guard(conn: sqlite3.Connection) -> None:
    """Make ``conn`` unable to create or change any file: on top of ``mode=ro``, no
    ATTACH (nor VACUUM INTO, which attaches its output) and no pragma that sets a value.
    Works on any connection, however sqlite-vec was loaded (the authorizer is SQLite's)."""
    conn.set_authorizer(_no_file_writes)
    if hasattr(conn, "setlimit"):  # Python >= 3.11: a second lock on the same door
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)


@contextlib.contextmanager
def writer_lock(path: str) -> Iterator[None]:
    """Hold an exclusive OS lock on the database file for one writer process."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: SQLite's own locking still applies
        yield
        return
    with open(path, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise StoreError(
                f"{path}: another semsearch-sqlite process is writing to this database; wait for it to finish"
            ) from e
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def storage_advice(e: sqlite3.OperationalError) -> str:
    """SQLite's storage error with what to do about it."""
    message = str(e)
    if "full" in message:
        return f"{message}; free some disk space and run the same command again to resume"
    if "readonly" in message or "read-only" in message:
        return f"{message}; the file or its folder is read-only: make it writable or give another file"
    if "locked" in message:
        return f"{message}; another program holds a write lock on it: close it and try again"
    return message


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], *, create: bool = True) -> Iterator[Store]:
    """The store at ``path`` opened for one writer: every writer (ingest, train, vocab,
    evaluate) holds the same OS lock, so two never interleave, and SQLite's storage
    errors (read-only, disk full, locked) become one StoreError line. Every write is a
    transaction, so what was stored before such an error stays."""
    try:
        with Store.open(path, create=create) as store, writer_lock(str(path)):
            yield store
    except sqlite3.OperationalError as e:
        raise StoreError(f"{path}: {storage_advice(e)}") from e


class Store:
    """A semsearch-sqlite database file.

    Use :meth:`open`; ``store.db`` is the ``sqlite_utils.Database`` and ``store.conn``
    its connection (sqlite-vec loaded).
    """

    def __init__(self, db: sqlite_utils.Database, path: str):
        self.db = db
        self.conn: sqlite3.Connection = db.conn
        self.path = path

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False, readonly: bool = False) -> Store:
        """Open (``create=True``: create or upgrade) the database at ``path``.

        Raises StoreError for a missing file, a non-SQLite file or a SQLite file made by
        something else, and SchemaVersionError for a file from a newer version. In those
        cases nothing is written to the file.
        """
        p = Path(path)
        if not p.exists():
            if not create:
                raise StoreError(f"{p}: no such database; create it with: semsearch-sqlite ingest IMAGES {p}")
            if not p.parent.exists():
                raise StoreError(f"{p}: folder {p.parent} does not exist; create it first")
        check_sqlite_file(p)
        new_file = not p.exists() or p.stat().st_size == 0
        try:
            conn = connect(p, readonly=readonly and not new_file)
        except sqlite3.Error as e:
            raise StoreError(f"{p}: cannot open: {e}") from e
        store = cls(sqlite_utils.Database(conn), str(p))
        try:
            store._check_version(create=create)
            if create and not readonly:
                store._initialise(new_file)
        except BaseException:
            conn.close()
            raise
        return store

    def _check_version(self, *, create: bool) -> None:
        try:
            tables = set(self.db.table_names())
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable SQLite database ({e})") from e
        if META_TABLE not in tables:
            schema_check(self.conn, self.path)  # steps of a newer version, no meta yet
            user_tables = [t for t in tables if not t.startswith("sqlite_")]
            if user_tables:
                raise StoreError(
                    f"{self.path}: a SQLite database not made by semsearch-sqlite "
                    f"(it has tables {', '.join(sorted(user_tables)[:5])}); give a new file name"
                )
            if not create:
                raise StoreError(
                    f"{self.path}: empty database; create it with: semsearch-sqlite ingest IMAGES {self.path}"
                )
            return
        schema_check(self.conn, self.path)

    def _initialise(self, new_file: bool) -> None:
        if new_file:
            self.conn.execute(f"pragma page_size = {PAGE_SIZE}")
        self.conn.execute("pragma journal_mode = wal")
        pending = migrations.pending(self.db)
        if pending:
            migrations.apply(self.db)
            with self.atomic():
                if self.get_meta("created_at") is None:
                    self.set_meta("created_at", now())
                self.set_meta("schema_version", schema_version())
                self.set_meta("package_version", __version__)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------
    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``: takes the write lock up front,
        so two writers wait for each other instead of failing mid-way)."""
        conn = self.conn
        if conn.in_transaction:
            # nested: a savepoint keeps the outer transaction's all-or-nothing promise
            conn.execute("savepoint semsearch_nested")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("rollback to semsearch_nested")
                    conn.execute("release semsearch_nested")
                raise
            conn.execute("release semsearch_nested")
            return
        conn.execute("begin immediate")
        try:
            yield
        except BaseException:
            # SQLite has already rolled back after some errors (SQLITE_FULL, SQLITE_IOERR):
            # a second rollback would replace the real error with "no transaction is active"
            if conn.in_transaction:
                conn.execute("rollback")
            raise
        conn.execute("commit")

    # -- provenance ------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A provenance value (JSON-decoded), or ``default``."""
        return read_meta(self.conn, key, default)

    def set_meta(self, key: str, value: Any) -> None:
        """Store one provenance value (JSON-encoded) and bump ``updated_at``."""
        self.conn.execute(
            f"insert into {META_TABLE}(key, value) values (?, ?) on conflict(key) do update set value = excluded.value",
            [key, json.dumps(value)],
        )
        if key != "updated_at":
            self.conn.execute(
                f"insert into {META_TABLE}(key, value) values ('updated_at', ?) "
                "on conflict(key) do update set value = excluded.value",
                [json.dumps(now())],
            )

    def update_meta(self, values: dict[str, Any]) -> None:
        """Store several provenance values."""
        for key, value in values.items():
            self.set_meta(key, value)

    def meta(self) -> dict[str, Any]:
        """All provenance values."""
        return {k: json.loads(v) for k, v in self.conn.execute(f"select key, value from {META_TABLE}")}

    # -- vectors ---------------------------------------------------------------------------
    def vec_dim(self, table: str) -> int | None:
        """The dimension of vec0 table ``table``, or None if it doesn't exist."""
        return vec_table_dim(self.conn, table)

    def ensure_vec_table(self, table: str, dim: int) -> None:
        """Create vec0 table ``table`` with ``dim`` cosine float dimensions if missing.

        Raises StoreError if it exists with other dimensions.
        """
        check_vec_name(table)
        have = self.vec_dim(table)
        if have == dim:
            return
        if have is not None:
            raise StoreError(f"{self.path}: {table} holds {have}-d vectors, not {dim}-d; use --rebuild to replace them")
        key = VEC_KEYS[table]
        self.conn.execute(
            f"create virtual table {table} using vec0("
            f"{key} integer primary key, embedding float[{int(dim)}] distance_metric=cosine)"
        )

    def drop_vec_table(self, table: str) -> None:
        """Drop vec0 table ``table`` if it exists."""
        check_vec_name(table)
        self.conn.execute(f"drop table if exists {table}")
        drop_float_rows(self.conn, table)
        drop_code_lists(self.conn, table)

    def write_vectors(self, table: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Replace the vectors of ``ids`` in ``table`` (vec0 can't upsert: delete, insert)."""
        check_vec_name(table)
        key = VEC_KEYS[table]
        vectors = np.asarray(vectors, dtype="<f4")
        ids = [int(i) for i in ids]
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        self.delete_vectors(table, ids)
        self.conn.executemany(
            f"insert into {table}({key}, embedding) values (?, ?)",
            ((i, v.tobytes()) for i, v in zip(ids, vectors)),
        )
        if has_float_rows(self.conn, table):  # the compact path's copy stays exact
            write_float_rows(self.conn, table, ids, vectors)

    def delete_vectors(self, table: str, ids: Iterable[int]) -> None:
        """Delete the rows of ``ids`` from ``table`` if the table exists."""
        check_vec_name(table)
        if self.vec_dim(table) is None:
            return
        key = VEC_KEYS[table]
        ids = [int(i) for i in ids]
        self.conn.executemany(f"delete from {table} where {key} = ?", ((i,) for i in ids))
        if has_float_rows(self.conn, table):
            delete_float_rows(self.conn, table, ids)

    def read_vectors(self, table: str) -> tuple[np.ndarray, np.ndarray]:
        """All ``(ids, matrix)`` of vec0 table ``table`` (empty arrays if missing)."""
        return read_vectors(self.conn, table)

    # -- models ----------------------------------------------------------------------------
    def save_model(self, name: str, kind: str, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        """Store named float32 arrays (e.g. projection weights) and their config as one row."""
        save_model(self.conn, name, kind, arrays, config)

    def load_model(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The arrays and config saved under ``name``, or None."""
        return load_model(self.conn, name)

    # -- photo metadata --------------------------------------------------------------------
    def images_without_metadata(self) -> list[tuple[int, str]]:
        """``(id, path)`` of the images whose EXIF was never read."""
        return self.conn.execute("select id, path from images where metadata_read_at is null order by id").fetchall()

    def set_photo_metadata(self, values: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Store EXIF fields (keys of :data:`PHOTO_METADATA_COLUMNS`) of image ids (call inside a transaction)."""
        stamp = now()
        sets = ", ".join(f"{c} = ?" for c in PHOTO_METADATA_COLUMNS)
        self.conn.executemany(
            f"update images set {sets}, metadata_read_at = ? where id = ?",
            ([meta.get(c) for c in PHOTO_METADATA_COLUMNS] + [stamp, int(image_id)] for image_id, meta in values),
        )

    # -- tags, words, evaluations, derived data ----------------------------------------------
    def forget_embeddings(self, vec_tables: Sequence[str]) -> None:
        """Drop what a backbone computed (``vec_tables``, class probabilities, tags, the fitted
        word-space models, the backbone's provenance) and mark every image to be re-read."""
        with self.atomic():
            for table in vec_tables:
                self.drop_vec_table(table)
            for sql in (
                "delete from image_classes",
                "delete from tags",
                "delete from models where name in ('semantic', 'classifier')",
                # size -1 forces every image to be re-read and re-embedded
                "update images set size = -1",
            ):
                self.conn.execute(sql)
            for key in ("backbone", "backbone_provenance"):
                self.conn.execute(f"delete from {META_TABLE} where key = ?", [key])
            self.bump_generation()

    def replace_tags(self, ids: Sequence[int], rows: Iterable[tuple[int, int, str, float, float]]) -> None:
        """Replace the tags of image ``ids`` with ``rows`` of ``(image_id, rank, word, distance,
        confidence)`` (call inside a transaction)."""
        self.conn.executemany("delete from tags where image_id = ?", ((int(i),) for i in ids))
        self.conn.executemany(
            "insert into tags(image_id, rank, word, distance, confidence) values (?, ?, ?, ?, ?)", rows
        )

    def clear_tags(self) -> None:
        """Delete every stored tag (call inside a transaction)."""
        self.conn.execute("delete from tags")

    def replace_words(self, words: Sequence[str]) -> list[int]:
        """Replace the vocabulary's words; ids follow the order of ``words``, from 1 (call
        inside a transaction). Returns the ids."""
        self.conn.execute("delete from words")
        ids = list(range(1, len(words) + 1))
        self.conn.executemany("insert into words(id, word) values (?, ?)", zip(ids, words, strict=True))
        return ids

    def replace_word_lookup(self, buckets: Iterable[tuple[str, str, bytes]]) -> None:
        """Replace the lookup-only (rare) words with ``buckets`` of ``(first word, words joined
        by newlines, int8 vectors)`` (call inside a transaction)."""
        self.conn.execute("delete from word_lookup")
        self.conn.executemany("insert into word_lookup(first, words, vectors) values (?, ?, ?)", buckets)

    def replace_word_related(self, chunks: Iterable[tuple[int, bytes]]) -> None:
        """Replace the vocabulary's relatedness vectors with ``chunks`` of ``(first word id,
        int8 vectors of consecutive ids)`` (call inside a transaction)."""
        self.conn.execute("delete from word_related")
        self.conn.executemany("insert into word_related(first_id, vectors) values (?, ?)", chunks)

    def save_evaluation(self, settings: dict[str, Any], provenance: dict[str, Any], figures: dict[str, Any]) -> None:
        """Store one evaluation run (as JSON), stamped now."""
        with self.atomic():
            self.conn.execute(
                "insert into evaluations(created_at, settings, provenance, figures) values (?, ?, ?, ?)",
                [now(), json.dumps(settings), json.dumps(provenance), json.dumps(figures)],
            )

    def generation(self) -> int:
        """A number that changes whenever vectors are written (for caches)."""
        return int(self.get_meta("generation", 0))

    def bump_generation(self) -> None:
        """Mark cached vector matrices as stale."""
        self.set_meta("generation", self.generation() + 1)
