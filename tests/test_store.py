"""The one-file store: creation, migrations, refusing foreign files, vectors."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from semsearch_sqlite.errors import SchemaVersionError, StoreError
from semsearch_sqlite.storage import store
from semsearch_sqlite.storage.store import Store, decode_f32, encode_f32, schema_version
from semsearch_sqlite.storage.vec0 import VEC_VISUAL


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_create_sets_wal_page_size_and_provenance(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with Store.open(path, create=True) as s:
        assert s.conn.execute("pragma journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("pragma page_size").fetchone()[0] == store.PAGE_SIZE
        meta = s.meta()
        assert meta["schema_version"] == schema_version()
        assert meta["package_version"]
        assert meta["created_at"] <= meta["updated_at"]
        assert {"images", "words", "tags", "models", "semsearch_meta"} <= set(s.db.table_names())


def test_missing_file_is_not_created_on_read(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no such database; create it with: semsearch-sqlite ingest"):
        Store.open(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


def test_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("hello, I am not a database\n")
    before = digest(path)
    with pytest.raises(StoreError, match="not a SQLite database"):
        Store.open(path, create=True)
    assert digest(path) == before


def test_foreign_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("create table customers (id integer primary key, name text)")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match=r"not made by semsearch-sqlite \(it has tables customers\)"):
        Store.open(path, create=True)
    assert digest(path) == before


def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Store.open(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "insert into _sqlite_migrations(migration_set, name, applied_at) values ('semsearch', 'm999_future', 'x')"
    )
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(SchemaVersionError, match="written by a newer semsearch-sqlite .*m999_future.*pip install -U"):
        Store.open(path, create=True)
    with pytest.raises(SchemaVersionError):
        Store.open(path)
    assert digest(path) == before


def test_older_schema_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    Store.open(path, create=True).close()

    @store.migration
    def m900_test_upgrade(db: object) -> None:
        db.execute("create table upgraded (x)")  # type: ignore[attr-defined]

    try:
        with Store.open(path, create=True) as s:
            assert "upgraded" in s.db.table_names()
            assert s.get_meta("schema_version") == schema_version() == len(store.MIGRATION_STEPS)
    finally:
        store.MIGRATION_STEPS.pop()
        store.migrations._migrations.pop()  # sqlite-utils offers no way to unregister


def test_atomic_rolls_back_everything(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db", create=True) as s:
        s.ensure_vec_table(VEC_VISUAL, 3)
        with pytest.raises(RuntimeError):
            with s.atomic():
                s.write_vectors(VEC_VISUAL, [1, 2], np.ones((2, 3)))
                s.set_meta("x", 1)
                raise RuntimeError("boom")
        assert s.read_vectors(VEC_VISUAL)[0].tolist() == []
        assert s.get_meta("x") is None


def test_vectors_replace_and_dimension_guard(tmp_path: Path) -> None:
    with Store.open(tmp_path / "v.db", create=True) as s:
        s.ensure_vec_table(VEC_VISUAL, 3)
        with s.atomic():
            s.write_vectors(VEC_VISUAL, [5, 7], np.array([[1, 0, 0], [0, 1, 0]]))
            s.write_vectors(VEC_VISUAL, [5], np.array([[0, 0, 2]]))
        ids, m = s.read_vectors(VEC_VISUAL)
        assert ids.tolist() == [5, 7]
        assert m.tolist() == [[0, 0, 2], [0, 1, 0]]
        with pytest.raises(StoreError, match="holds 3-d vectors, not 4-d; use --rebuild"):
            s.ensure_vec_table(VEC_VISUAL, 4)
        # sqlite-vec SQL works on the same table
        row = s.conn.execute(
            f"select image_id from {VEC_VISUAL} where embedding match ? and k = 1", [encode_f32([0, 0, 1])]
        ).fetchone()
        assert row == (5,)


def test_models_round_trip(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db", create=True) as s:
        with s.atomic():
            s.save_model("p", "ridge", {"W": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"alpha": 1.5})
        arrays, config = s.load_model("p")  # type: ignore[misc]
        assert arrays["W"].tolist() == [[0, 1, 2], [3, 4, 5]]
        assert config == {"alpha": 1.5}
        assert s.load_model("missing") is None


def test_float32_encoding() -> None:
    blob = encode_f32([1.5, -2.0])
    assert blob == np.array([1.5, -2.0], "<f4").tobytes()
    assert decode_f32(blob).tolist() == [1.5, -2.0]


def test_reopen_keeps_data_and_readonly_open_works(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with Store.open(path, create=True) as s:
        with s.atomic():
            s.set_meta("hello", {"a": [1, 2]})
    with Store.open(path, readonly=True) as s:
        assert s.get_meta("hello") == {"a": [1, 2]}
        with pytest.raises(sqlite3.OperationalError):
            s.conn.execute("insert into semsearch_meta values ('x', '1')")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(tmp_path, create=True)
