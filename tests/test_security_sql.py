"""Issue #25, library/CLI side: SQL never reads server files, ``sql`` without --write
writes no file, ``--where`` is one bounded expression, SQL function results never go
stale, and the CLI prints no terminal escapes from the file."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import semsearch_sqlite
from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.queries.filters import Filter, allowed_ids
from semsearch_sqlite.queries.search import resolve_image
from semsearch_sqlite.queries.sqlfuncs import register_functions
from semsearch_sqlite.storage.store import connect

pytestmark = pytest.mark.slow


@pytest.fixture()
def db(plugin_photos: dict[str, Any], tmp_path: Path) -> str:
    """A private copy of the plugin photo database (15 photos, 5 labels)."""
    path = tmp_path / "photos.db"
    shutil.copy(plugin_photos["db"], path)
    return str(path)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# -- 1: SQL functions never read server files ---------------------------------------------------
def test_sql_functions_never_read_files(db: str, plugin_photos: dict[str, Any], tmp_path: Path) -> None:
    stored = next(Path(plugin_photos["images"], "dog").glob("*.png"))
    copy = tmp_path / "elsewhere" / "copy.png"
    copy.parent.mkdir()
    shutil.copy(stored, copy)
    missing = tmp_path / "elsewhere" / "missing.png"
    answers = []
    for path in (copy, missing, stored.resolve()):
        for sql in (
            f"select count(*) from similar_to_image('{path}', 1)",
            f"select count(*) from image_tags('{path}', 1)",
            f"select length(semsearch_image_vector('{path}'))",
        ):
            result = run("sql", db, sql)
            assert result.exit_code == 1, (sql, result.output)
            answers.append(result.output.replace(str(path), "PATH"))
    # the same answer whether the file exists, is a copy of a stored photo, or is missing
    assert len(set(answers[0::3])) == 1 and len(set(answers[1::3])) == 1 and len(set(answers[2::3])) == 1
    assert "no image stored with path" in answers[0]
    # stored paths and ids still work in SQL, and Python still recognises the file
    rel = f"dog/{stored.name}"
    assert run("sql", db, f"select count(*) as n from similar_to_image('{rel}', 2)").output.split()[-1] == "2"
    with semsearch_sqlite.open(db) as photos:
        assert resolve_image(photos.conn, str(copy)) == resolve_image(photos.conn, rel)
        assert len(photos.similar(str(copy), k=2).hits) == 2


# -- 4: sql without --write writes no file --------------------------------------------------------
@pytest.mark.parametrize("statement", ["vacuum into '{out}'", "attach '{out}' as a", "attach database '{out}' as b"])
def test_sql_read_only_creates_no_file(db: str, tmp_path: Path, statement: str) -> None:
    out = tmp_path / "made.db"
    result = run("sql", db, statement.format(out=out))
    assert result.exit_code == 1, result.output
    assert not out.exists()
    assert "read-only" in result.output and "--write" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_sql_read_only_refuses_setting_pragmas_but_reads(db: str) -> None:
    result = run("sql", db, "pragma user_version = 7")
    assert result.exit_code == 1 and "--write" in result.output
    assert run("sql", db, "select count(*) as n from pragma_table_info('images')").exit_code == 0
    ok = run("sql", db, "select count(*) as n from similar_images('dog', 3)")
    assert ok.exit_code == 0 and ok.output.split()[-1] == "3"
    # --write still writes
    out = Path(db).with_name("copy.db")
    assert run("sql", "--write", db, f"vacuum into '{out}'").exit_code == 0 and out.exists()


def test_ctypes_loaded_connection_is_guarded_too(db: str, tmp_path: Path) -> None:
    """The guard is on the connection, whichever way sqlite-vec was loaded."""
    import sqlite_vec

    from semsearch_sqlite.sqlite.extensions import load_extension
    from semsearch_sqlite.storage.store import read_only_guard

    conn = sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)
    load_extension(conn, sqlite_vec.loadable_path(), method="ctypes")
    read_only_guard(conn)
    out = tmp_path / "x.db"
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute(f"vacuum into '{out}'")
    assert not out.exists()
    assert conn.execute("select vec_version()").fetchone()[0]


# -- 5/6: --where is one bounded expression -----------------------------------------------------
@pytest.mark.parametrize(
    "where",
    [
        "0) union select 'abc' from (select 1",
        "0) union select null from (select 1",
        "0) union select 1e300 from (select 1",
        "1) or (1",
        "0)) union select 1 from ((images",
        "label = 'x') union select id from images where (1",
    ],
)
def test_where_cannot_escape_its_parentheses(db: str, where: str) -> None:
    result = run("search", db, "dog", "--where", where)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: --where") and "one condition" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["null", "1e300", "'abc'", "label = 'a)b' or label = 'dog'"])
def test_odd_but_legal_conditions(db: str, where: str) -> None:
    result = run("search", db, "dog", "--where", where, "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "where",
    [
        "id in (select image_id from tags union select 1)",
        "id in (select id from images intersect select id from images)",
    ],
)
def test_where_has_no_compound_select(db: str, where: str) -> None:
    with pytest.raises(QueryError, match="no ';', comments or union"):
        allowed_ids(connect(db, readonly=True), where)


@pytest.mark.parametrize(
    "where",
    [
        "id in (select rowid from semsearch_meta)",
        "exists (select 1 from image_files)",
        "id in (select image_id from similar_images('dog', 3))",
    ],
)
def test_where_reads_only_images_and_tags(db: str, where: str) -> None:
    conn = connect(db, readonly=True)
    register_functions(conn)
    with pytest.raises(QueryError, match="may only read, and only the images and tags tables"):
        allowed_ids(conn, where)
    assert len(allowed_ids(connect(db, readonly=True), "id in (select image_id from tags where rank = 1)")) == 15


def test_where_runaway_recursion_stops(db: str) -> None:
    conn = connect(db, readonly=True)
    # the runaway: refused before it runs (a compound select)
    with pytest.raises(QueryError, match="give one condition"):
        allowed_ids(conn, "id in (with recursive n(i) as (select 1 union all select i + 1 from n) select i from n)")
    # a runaway without one: 15^9 rows for each image, stopped by the time limit
    where = "(select count(*) from " + ", ".join(f"images t{i}" for i in range(9)) + ") > 0"
    started = time.perf_counter()
    with pytest.raises(QueryError, match="took longer than"):
        allowed_ids(conn, where)
    assert time.perf_counter() - started < 10
    # the connection works afterwards, without the limit
    assert len(allowed_ids(conn, "label = 'dog'")) == 3
    assert (
        conn.execute(
            "select count(*) from (with recursive n(i) as (select 1 union all select i + 1 "
            "from n where i < 3000000) select i from n)"
        ).fetchone()[0]
        == 3000000
    )


def test_where_memory_is_bounded(db: str) -> None:
    conn = connect(db, readonly=True)
    with pytest.raises(QueryError, match="too big"):
        allowed_ids(conn, "length(randomblob(500000000)) > 0")
    assert len(conn.execute("select randomblob(50000000)").fetchone()[0]) == 50000000


def test_where_errors_are_one_short_line(db: str) -> None:
    long = "label = '" + "x" * 100_000 + "' and nope"
    result = run("search", db, "dog", "--where", long)
    assert result.exit_code == 1
    assert len(result.output) < 600 and len(result.output.strip().splitlines()) == 1
    assert "100,0" in result.output  # says how long the input was


def test_like_too_complex_is_not_blamed_on_metadata(db: str) -> None:
    conn = connect(db, readonly=True)
    with pytest.raises(QueryError) as e:
        allowed_ids(conn, filters=[Filter("path", "like", "%a" * 30000)])
    assert "too complex" in str(e.value) and "metadata columns" not in str(e.value)


# -- 9: SQL function results never go stale ---------------------------------------------------
def test_table_function_results_follow_other_connections(db: str) -> None:
    reader = connect(db, readonly=True)
    register_functions(reader)
    sql = "select label from similar_images('dog', 1) where label = 'dog'"
    assert reader.execute(sql).fetchall() == [("dog",)]
    writer = sqlite3.connect(db)
    writer.execute("update images set label = 'edited' where label = 'dog'")
    writer.commit()
    assert reader.execute(sql).fetchall() == []

    def labels(conn: sqlite3.Connection) -> set[str]:
        return {row[0] for row in conn.execute("select label from similar_images('dog', 50)")}

    assert "edited" in labels(reader) and "dog" not in labels(reader)
    # a fresh connection after a change made by another process sees it too
    writer.execute("update images set label = 'again' where label = 'edited'")
    writer.commit()
    fresh = connect(db, readonly=True)
    register_functions(fresh)
    assert "again" in labels(fresh) and "edited" not in labels(fresh)


def test_matrix_cache_follows_other_connections(db: str) -> None:
    from semsearch_sqlite.storage.vec0 import VEC_KEYS, VEC_VISUAL
    from semsearch_sqlite.vectors.matrix import matrix

    reader = connect(db, readonly=True)
    before = len(matrix(reader, VEC_VISUAL))
    writer = connect(db)
    victim = writer.execute("select id from images order by id limit 1").fetchone()[0]
    writer.execute(f"delete from {VEC_VISUAL} where {VEC_KEYS[VEC_VISUAL]} = ?", [victim])
    assert len(matrix(reader, VEC_VISUAL)) == before - 1


# -- 11: no terminal escapes from the file --------------------------------------------------------
def test_cli_strips_control_characters(db: str) -> None:
    evil = "dog\x1b]0;pwned\x07\x1b[2J\u202e"
    writer = sqlite3.connect(db)
    writer.execute("update images set label = ?, path = ? || path where label = 'dog'", [evil, "\x1b[31m"])
    writer.commit()
    outputs = [
        run("search", db, "dog", "--all", "--where", "label like 'dog%'"),
        run("sql", db, "select label, path from images where label like 'dog%'"),
        run("similar", db, "1", "-k", "15"),
        run("duplicates", db, "--threshold", "0.9999"),
        run("info", db),
        run("similar", db, "\x1b]0;x\x07"),
    ]
    for result in outputs:
        assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
    assert "dog" in outputs[0].output and "pwned" in outputs[0].output


def test_special_file_is_not_a_database() -> None:
    for args in (["search", "/dev/null", "dog"], ["info", "/dev/null"], ["sql", "/dev/null", "select 1"]):
        result = run(*args)
        assert result.exit_code == 1
        assert result.output == (
            "Error: /dev/null: a device or other special file, not a database file; "
            "give the .db file made by semsearch-sqlite ingest\n"
        )
