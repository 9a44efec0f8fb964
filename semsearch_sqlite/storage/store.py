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

from semsearch_sqlite import __version__
from semsearch_sqlite.errors import SchemaVersionError, StoreError
from semsearch_sqlite.sqlite.extensions import load_sqlite_vec
from semsearch_sqlite.storage.models import load_model, save_model
from semsearch_sqlite.storage.rows import META_TABLE, read_meta
from semsearch_sqlite.storage.vectors import VEC_KEYS, check_vec_name, read_vectors, vec_table_dim

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


def now() -> str:
    """UTC timestamp, ISO 8601, seconds precision."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def schema_version() -> int:
    """The schema version this package writes (the number of known migrations)."""
    return len(MIGRATION_STEPS)


def encode_f32(vector: Any) -> bytes:
    """A vector as a little-endian float32 BLOB (sqlite-vec's format)."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_f32(blob: bytes) -> np.ndarray:
    """A float32 BLOB back into a 1-d numpy array."""
    return np.frombuffer(blob, dtype="<f4")


def check_sqlite_file(path: str | os.PathLike[str]) -> None:
    """Raise StoreError unless ``path`` is empty or starts with SQLite's header."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return
    if p.is_dir():
        raise StoreError(f"{p}: is a directory, not a database file; give a file name such as photos.db")
    with open(p, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        raise StoreError(f"{p}: not a SQLite database; give a new file name or a .db made by semsearch-sqlite")


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with sqlite-vec loaded (any thread may use it)."""
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False)
    # Transactions are always explicit (Store.atomic), never opened behind our back.
    conn.isolation_level = None
    conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
    load_sqlite_vec(conn)
    return conn


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
    def open(
        cls, path: str | os.PathLike[str], *, create: bool = False, readonly: bool = False
    ) -> "Store":
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
        known = set(MIGRATION_STEPS)
        applied = {m.name for m in migrations.applied(self.db)}
        unknown = sorted(applied - known)
        if unknown:
            raise SchemaVersionError(
                f"{self.path}: written by a newer semsearch-sqlite (schema steps {', '.join(unknown)}); "
                f"upgrade with: pip install -U semsearch-sqlite (this is {__version__})"
            )
        if META_TABLE not in tables:
            user_tables = [t for t in tables if not t.startswith("sqlite_")]
            if user_tables:
                raise StoreError(
                    f"{self.path}: a SQLite database not made by semsearch-sqlite "
                    f"(it has tables {', '.join(sorted(user_tables)[:5])}); give a new file name"
                )
            if not create:
                raise StoreError(f"{self.path}: empty database; create it with: semsearch-sqlite ingest IMAGES {self.path}")
            return
        stored = self.get_meta("schema_version")
        if isinstance(stored, int) and stored > schema_version():
            raise SchemaVersionError(
                f"{self.path}: schema version {stored} is newer than this semsearch-sqlite "
                f"({__version__}, schema {schema_version()}); upgrade with: pip install -U semsearch-sqlite"
            )

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

    def __enter__(self) -> "Store":
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
            f"insert into {META_TABLE}(key, value) values (?, ?) "
            "on conflict(key) do update set value = excluded.value",
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
            raise StoreError(
                f"{self.path}: {table} holds {have}-d vectors, not {dim}-d; "
                "use --rebuild to replace them"
            )
        key = VEC_KEYS[table]
        self.conn.execute(
            f"create virtual table {table} using vec0("
            f"{key} integer primary key, embedding float[{int(dim)}] distance_metric=cosine)"
        )

    def drop_vec_table(self, table: str) -> None:
        """Drop vec0 table ``table`` if it exists."""
        check_vec_name(table)
        self.conn.execute(f"drop table if exists {table}")

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

    def delete_vectors(self, table: str, ids: Iterable[int]) -> None:
        """Delete the rows of ``ids`` from ``table`` if the table exists."""
        check_vec_name(table)
        if self.vec_dim(table) is None:
            return
        key = VEC_KEYS[table]
        self.conn.executemany(f"delete from {table} where {key} = ?", ((int(i),) for i in ids))

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

    def generation(self) -> int:
        """A number that changes whenever vectors are written (for caches)."""
        return int(self.get_meta("generation", 0))

    def bump_generation(self) -> None:
        """Mark cached vector matrices as stale."""
        self.set_meta("generation", self.generation() + 1)


