"""The ``sqlite3*`` handle read from a Python connection is verified before any use: a read
that finds another connection's handle (a layout this code doesn't know) is a typed error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from semsearch_sqlite.errors import ExtensionError
from semsearch_sqlite.sqlite import handle
from semsearch_sqlite.sqlite.extensions import connection_handle, sqlite_library
from semsearch_sqlite.sqlite.vtable import register_table_function


def reads_handle_of(monkeypatch: pytest.MonkeyPatch, other: sqlite3.Connection) -> None:
    """Make the raw read find ``other``'s real handle, as a wrong layout offset would."""
    wrong = handle.handle_at(id(other))
    monkeypatch.setattr(handle, "handle_at", lambda address: wrong)


@pytest.mark.parametrize("where", ["file", "memory"])
def test_the_handle_is_verified_and_leaves_last_insert_rowid_alone(tmp_path: Path, where: str) -> None:
    conn = sqlite3.connect(tmp_path / "a.db" if where == "file" else ":memory:")
    conn.execute("create table t(x)")
    conn.execute("insert into t(rowid, x) values (7, 'seven')")
    found = connection_handle(conn)
    assert found == handle.handle_at(id(conn)) != 0
    assert conn.execute("select last_insert_rowid()").fetchone() == (7,)
    conn.close()


def test_a_closed_connection_has_no_handle(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.db")
    conn.close()
    with pytest.raises(ExtensionError, match="the connection is closed"):
        connection_handle(conn)


def test_another_in_memory_connections_handle_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # both files are "": only the last-insert-rowid token tells the two handles apart
    conn, other = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    reads_handle_of(monkeypatch, other)
    with pytest.raises(ExtensionError, match="is another connection's; this Python's sqlite3 layout is unsupported"):
        handle.connection_handle(conn, sqlite_library(conn))


def test_a_handle_on_the_same_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn, other = sqlite3.connect(tmp_path / "c.db"), sqlite3.connect(tmp_path / "c.db")
    reads_handle_of(monkeypatch, other)
    with pytest.raises(ExtensionError, match="is another connection's"):
        connection_handle(conn)
    assert other.execute("select last_insert_rowid()").fetchone() == (0,)  # restored


def test_a_handle_on_another_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn, other = sqlite3.connect(tmp_path / "d.db"), sqlite3.connect(tmp_path / "e.db")
    reads_handle_of(monkeypatch, other)
    with pytest.raises(ExtensionError, match="does not match its file; this Python.s sqlite3 layout is unsupported"):
        connection_handle(conn)


def test_registering_on_an_unverified_handle_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    conn, other = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    reads_handle_of(monkeypatch, other)
    with pytest.raises(ExtensionError, match=r"cannot register table function numbers\(\) .* is another connection's"):
        register_table_function(conn, "numbers", lambda c, n: [(i,) for i in range(n)], ["value"], ["n"])
    monkeypatch.undo()
    with pytest.raises(sqlite3.OperationalError, match="no such table: numbers"):
        other.execute("select * from numbers(2)")
    register_table_function(conn, "numbers", lambda c, n: [(i,) for i in range(n)], ["value"], ["n"])
    assert conn.execute("select value from numbers(3)").fetchall() == [(0,), (1,), (2,)]
