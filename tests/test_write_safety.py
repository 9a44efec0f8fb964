"""Writers and the database file: `sql` is read-only unless --write, every writer says one
line on a read-only file and waits for ingest's writer lock, train reads inside its write
transaction."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch_sqlite.cli import cli
from semsearch_sqlite.storage.store import Store

from .helpers import sha

pytestmark = pytest.mark.slow


def test_sql_command_is_read_only_by_default(photos_copy: Path) -> None:
    before = sha(photos_copy)
    result = CliRunner().invoke(cli, ["sql", str(photos_copy), "delete from tags"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: attempt to write a readonly database; {photos_copy} is opened read-only: add --write to change it\n"
    )
    assert sha(photos_copy) == before
    counted = CliRunner().invoke(cli, ["sql", str(photos_copy), "select count(*) as n from tags", "--json"])
    assert counted.exit_code == 0 and '"n": 0' not in counted.output
    written = CliRunner().invoke(cli, ["sql", str(photos_copy), "delete from tags", "--write"])
    assert written.exit_code == 0, written.output
    with closing(sqlite3.connect(photos_copy)) as conn:
        assert conn.execute("select count(*) from tags").fetchone() == (0,)


@pytest.fixture
def read_only_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection the package opens is SQLite's read-only mode (root ignores file
    permissions, so chmod can't make a read-only file in these tests)."""
    from semsearch_sqlite.storage import store

    connect = store.connect
    monkeypatch.setattr(store, "connect", lambda path, **kw: connect(path, readonly=True))


@pytest.mark.parametrize("command", [["train"], ["vocab", "-q"], ["evaluate"]])
def test_writers_on_a_read_only_file_say_one_line(
    photos_copy: Path, read_only_sqlite: None, command: list[str]
) -> None:
    before = sha(photos_copy)
    result = CliRunner().invoke(
        cli, [command[0], str(photos_copy), *command[1:]] + (["--vocab-size", "30000"] if command[0] == "vocab" else [])
    )
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: {photos_copy}: attempt to write a readonly database; the file or its "
        "folder is read-only: make it writable or give another file\n"
    )
    assert sha(photos_copy) == before


def test_evaluate_no_save_reads_a_read_only_file(photos_copy: Path, read_only_sqlite: None) -> None:
    result = CliRunner().invoke(cli, ["evaluate", str(photos_copy), "--no-save", "--method", "ridge"])
    assert result.exit_code == 0, result.output
    assert "labelled images" in result.output


@pytest.mark.parametrize("command", [["train"], ["vocab", "--vocab-size", "30000"], ["evaluate"]])
def test_writers_wait_for_the_ingest_writer_lock(photos_copy: Path, command: list[str]) -> None:
    import fcntl

    before = sha(photos_copy)
    with open(photos_copy, "rb") as held:  # the OS lock a running ingest holds on the file
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(cli, [command[0], str(photos_copy), *command[1:]])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: {photos_copy}: another semsearch-sqlite process is writing to this database; wait for it to finish\n"
    )
    assert sha(photos_copy) == before


def test_train_reads_its_rows_inside_the_write_transaction(photos_copy: Path) -> None:
    from semsearch_sqlite.pipeline.train import refresh_semantic

    with Store.open(photos_copy) as store:
        seen: list[bool] = []
        store.conn.set_trace_callback(
            lambda sql: seen.append(store.conn.in_transaction) if "from images" in sql and "label" in sql else None
        )
        refresh_semantic(store, method="ridge")
        store.conn.set_trace_callback(None)
    assert seen and all(seen)
