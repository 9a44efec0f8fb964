"""Table-valued functions through ctypes: rows, joins, parameters, errors, values,
threads, connection lifetime, sqlite-vec inside, Datasette, and other Pythons."""

from __future__ import annotations

import csv
import gc
import importlib.util
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlite_vec

from semsearch_sqlite.errors import ExtensionError, QueryError
from semsearch_sqlite.sqlite import vtable
from semsearch_sqlite.sqlite.extensions import connection_handle, load_sqlite_vec
from semsearch_sqlite.sqlite.vtable import live_objects, register_table_function, to_sql_value

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
SELF_CHECK = Path(__file__).resolve().parent / "vtable_selfcheck.py"
COLUMNS = ["i", "square", "label"]


def numbers(conn: Any, n: Any, step: Any = None) -> Iterator[tuple[Any, ...]]:
    for i in range(0, n, step or 1):
        yield i, i * i, f"#{i}"


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(":memory:", check_same_thread=False)
    register_table_function(c, "numbers", numbers, COLUMNS, ["n", "step"])
    yield c
    c.close()


def error_of(conn: sqlite3.Connection, sql: str, params: Any = ()) -> str:
    with pytest.raises(sqlite3.OperationalError) as e:
        conn.execute(sql, params).fetchall()
    return str(e.value)


def test_rows_in_declared_order_with_arguments_echoed(conn: sqlite3.Connection) -> None:
    assert conn.execute("select * from numbers(3)").fetchall() == [(0, 0, "#0"), (1, 1, "#1"), (2, 4, "#2")]
    cursor = conn.execute("select rowid, label, i, n, step from numbers(5, 2)")
    assert [d[0] for d in cursor.description] == ["rowid", "label", "i", "n", "step"]
    assert cursor.fetchall() == [(1, "#0", 0, 5, 2), (2, "#2", 2, 5, 2), (3, "#4", 4, 5, 2)]
    # arguments may also be given as constraints on the hidden columns
    assert conn.execute("select i from numbers where n = 4 and step = 3").fetchall() == [(0,), (3,)]
    assert conn.execute("select count(*) from numbers(3) where n = 4").fetchone() == (0,)


def test_join_calls_the_function_once_per_outer_row(conn: sqlite3.Connection) -> None:
    calls: list[Any] = []

    def counted(c: Any, n: Any, step: Any) -> Iterator[tuple[Any, ...]]:
        calls.append(n)
        return numbers(c, n or 0, step)

    register_table_function(conn, "counted", counted, COLUMNS, ["n", "step"])
    assert calls == []  # the self-check doesn't call fn
    conn.execute("create table t(id integer primary key, v integer)")
    conn.executemany("insert into t(v) values (?)", [(2,), (0,), (3,)])
    rows = conn.execute("select t.v, c.i from t, counted(t.v) c order by t.id, c.i").fetchall()
    assert rows == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert sorted(calls) == [0, 2, 3]
    left = conn.execute("select t.v, c.i from t left join counted(t.v) c order by t.id, c.i").fetchall()
    assert left == [(2, 0), (2, 1), (0, None), (3, 0), (3, 1), (3, 2)]
    nested = conn.execute("select a.i, b.i from numbers(3) a, numbers(a.i) b").fetchall()
    assert nested == [(1, 0), (2, 0), (2, 1)]


def test_outer_order_by_and_limit(conn: sqlite3.Connection) -> None:
    sql = "select i from numbers(10) order by square desc limit 2 offset 1"
    assert conn.execute(sql).fetchall() == [(8,), (7,)]
    # rows are pulled lazily: a limit stops a huge generator early
    assert conn.execute("select i from numbers(10000000000) limit 3").fetchall() == [(0,), (1,), (2,)]


def test_qmark_and_named_parameters(conn: sqlite3.Connection) -> None:
    assert conn.execute("select count(*) from numbers(?)", [7]).fetchone() == (7,)
    assert conn.execute("select sum(i) from numbers(?, ?)", (10, 3)).fetchone() == (18,)
    assert conn.execute("select max(i) from numbers(:n, :step)", {"n": 10, "step": 4}).fetchone() == (8,)
    # a NULL argument is given to fn as None
    assert conn.execute("select count(*) from numbers(:n, :s)", {"n": 3, "s": None}).fetchone() == (3,)


def test_argument_types_reach_fn_and_are_echoed() -> None:
    seen: list[Any] = []

    def echo(c: Any, a: Any, b: Any) -> list[tuple[Any]]:
        seen.append((a, b))
        return [(1,)]

    c = sqlite3.connect(":memory:")
    register_table_function(c, "echo", echo, ["x"], ["a", "b"])
    values = [1, -(2**63), 2.5, "text é", b"\x00\x01", b"", "", None]
    for v in values:
        assert c.execute("select a from echo(?, ?)", [v, v]).fetchone() == (v,)
    assert [a for a, _ in seen] == values
    assert [type(a) for a, _ in seen] == [type(v) for v in values]


def test_missing_argument_is_a_clear_sql_error(conn: sqlite3.Connection) -> None:
    assert error_of(conn, "select * from numbers") == ("numbers() needs the n argument; call it as numbers(n [, step])")
    assert error_of(conn, "select * from numbers where step = 2").startswith("numbers() needs the n argument")
    register_table_function(conn, "pair", lambda c, a, b, k: [(1,)], ["x"], ["image", "focus", "k"], required=2)
    assert error_of(conn, "select * from pair") == (
        "pair() needs the image and focus arguments; call it as pair(image, focus [, k])"
    )
    assert error_of(conn, "select * from pair(1)").startswith("pair() needs the focus argument")
    assert conn.execute("select * from pair(1, 2)").fetchall() == [(1,)]
    register_table_function(conn, "everything", lambda c, k: [(k,)], ["x"], ["k"], required=0)
    assert conn.execute("select * from everything").fetchall() == [(None,)]


def test_exceptions_come_back_as_sql_errors(conn: sqlite3.Connection) -> None:
    def fail(c: Any, q: Any) -> list[Any]:
        if q == "query":
            raise QueryError("no known words in query: 'zzz'")
        if q == "late":
            return iter_then_fail()
        if q == "none":
            return None  # type: ignore[return-value]
        if q == "short":
            return [(1,)]
        raise ValueError(f"bad value {q!r}")

    def iter_then_fail() -> Iterator[tuple[Any, Any]]:
        yield 1, 2
        raise KeyError("gone")

    register_table_function(conn, "fail", fail, ["a", "b"], ["q"])
    assert error_of(conn, "select * from fail('query')") == "no known words in query: 'zzz'"
    assert error_of(conn, "select * from fail('x')") == "ValueError: bad value 'x'"
    assert error_of(conn, "select * from fail('late')") == "KeyError: 'gone'"
    assert error_of(conn, "select * from fail('none')") == (
        "TypeError: fail() must return an iterable of rows, got NoneType"
    )
    assert error_of(conn, "select * from fail('short')") == (
        "ValueError: fail() returned a row of 1 values; expected 2 (a, b)"
    )
    # the connection is still usable afterwards
    assert conn.execute("select count(*) from numbers(2)").fetchone() == (2,)


def test_numpy_and_other_values(conn: sqlite3.Connection) -> None:
    vector = np.array([0.5, -1.0], dtype=np.float32)
    row = (
        np.float32(0.25),
        np.int64(7),
        np.bool_(True),
        np.float64(1.5),
        np.str_("s"),
        vector,
        bytearray(b"ab"),
        memoryview(b"cd"),
        np.int8(-3),
        None,
        True,
    )
    register_table_function(conn, "values_", lambda c, _: [row], [f"c{i}" for i in range(len(row))], ["x"])
    got = conn.execute("select * from values_(1)").fetchone()
    assert got == (0.25, 7, 1, 1.5, "s", vector.tobytes(), b"ab", b"cd", -3, None, 1)
    assert [type(v) for v in got[:5]] == [float, int, int, float, str]
    assert np.frombuffer(got[5], "<f4").tolist() == [0.5, -1.0]
    assert conn.execute("select typeof(c0), typeof(c1), typeof(c5) from values_(1)").fetchone() == (
        "real",
        "integer",
        "blob",
    )
    register_table_function(conn, "bad", lambda c, x: [(Decimal("1.5") if x else 2**64,)], ["v"], ["x"])
    assert error_of(conn, "select * from bad(1)") == (
        "bad() column v: TypeError: cannot return a decimal.Decimal value to SQL (use int, float, str, bytes or None)"
    )
    assert "outside SQLite's 64-bit range" in error_of(conn, "select * from bad(0)")
    assert to_sql_value(np.float32(0.1)) == pytest.approx(0.1)
    assert to_sql_value(np.array(3, dtype=np.int32)) == 3


def test_vec0_knn_inside_the_function(tmp_path: Path) -> None:
    c = sqlite3.connect(tmp_path / "vec.db")
    load_sqlite_vec(c)
    c.execute("create virtual table v using vec0(id integer primary key, e float[2] distance_metric=cosine)")
    c.executemany("insert into v(id, e) values (?, ?)", [(1, "[1, 0]"), (2, "[0, 1]"), (3, "[1, 1]")])
    c.execute("create table images(id integer primary key, caption text)")
    c.executemany("insert into images values (?, ?)", [(1, "east"), (2, "north"), (3, "north-east")])

    def nearest(conn: Any, query: Any, k: Any) -> list[tuple[Any, ...]]:
        vector = sqlite_vec.serialize_float32([float(x) for x in query.split(",")])
        return conn.execute("select id, distance from v where e match ? and k = ?", [vector, k or 2]).fetchall()

    register_table_function(c, "nearest", nearest, ["id", "distance"], ["query", "k"])
    rows = c.execute(
        "select n.id, i.caption, round(n.distance, 3) from nearest('1,0.1') n join images i on i.id = n.id"
    ).fetchall()
    assert rows == [(1, "east", 0.005), (3, "north-east", 0.226)]
    per_row = c.execute(
        "select i.caption, n.id from images i, nearest(case i.id when 2 then '0,1' else '1,0' end, 1) n order by i.id"
    ).fetchall()
    assert per_row == [("east", 1), ("north", 2), ("north-east", 1)]
    c.close()


def test_replacing_a_registration(conn: sqlite3.Connection) -> None:
    sql = "select * from numbers(2)"
    assert conn.execute(sql).fetchall() == [(0, 0, "#0"), (1, 1, "#1")]
    gc.collect()  # registrations of connections dropped by earlier tests go now, not mid-test
    handle = connection_handle(conn)

    def live_here() -> int:
        # counted on this connection only: earlier tests' Datasette threads may still end
        # (closing their connections) while this test runs
        return sum(1 for r in list(vtable._registrations.values()) if r.db == handle)

    before = live_here()
    # same columns: swapped in place, the cached prepared statement sees the new fn
    register_table_function(conn, "numbers", lambda c, n, s: [(n, n, "new")], COLUMNS, ["n", "step"])
    assert live_here() == before
    assert conn.execute(sql).fetchall() == [(2, 2, "new")]
    # other columns: a new module; prepared statements are re-prepared against it
    register_table_function(conn, "NUMBERS", lambda c, n: [(n * 10,), (n * 10 + 1,)], ["tens"], ["n"])
    cursor = conn.execute(sql)
    assert [d[0] for d in cursor.description] == ["tens"]
    assert cursor.fetchall() == [(20,), (21,)]
    # ... but not while one of this connection's statements is still running
    running = conn.execute("select * from numbers(5)")
    running.fetchone()
    busy = r"cannot replace numbers\(\) with different columns now: .* still running"
    with pytest.raises(ExtensionError, match=busy):
        register_table_function(conn, "numbers", lambda c, n: [], ["other"], ["n"])
    assert running.fetchall() == [(51,)]
    assert conn.execute("select * from numbers(1)").fetchall() == [(10,), (11,)]
    # the replaced module is released when its last prepared statement goes, at the latest on close
    conn.close()
    gc.collect()
    assert live_here() == before - 1


def test_self_check_and_clear_errors(tmp_path: Path) -> None:
    c = sqlite3.connect(tmp_path / "x.db")
    register_table_function(c, "numbers", numbers, COLUMNS, ["n", "step"])
    assert c.execute("select 1 from pragma_module_list where name = 'numbers'").fetchone() == (1,)
    c.execute("create table t(x)")  # the function doesn't disturb writes
    c.commit()
    c.close()
    with pytest.raises(ExtensionError, match="closed"):
        register_table_function(c, "numbers", numbers, COLUMNS, ["n", "step"])
    d = sqlite3.connect(":memory:")
    for args, message in [
        (("", ["a"], ["q"]), "non-empty string"),
        (("f", [], ["q"]), "at least one column"),
        (("f", ["a", "A"], ["q"]), "duplicate column/parameter names: A, a"),
        (("f", ["a"], ["a"]), "duplicate"),
        (("f", ["a"], []), "required must be between 0 and 0, not 1"),
        (("f", ["a"], [f"p{i}" for i in range(31)]), "at most 30 parameters"),
    ]:
        with pytest.raises(ValueError, match=message):
            register_table_function(d, args[0], numbers, args[1], args[2])
    with pytest.raises(ExtensionError, match="cannot register table function f"):
        register_table_function(object(), "f", numbers, ["a"], ["q"])
    d.close()


def test_many_threads_each_with_its_own_connection(tmp_path: Path) -> None:
    gc.collect()  # connections dropped by earlier tests are freed now, not mid-test
    baseline = live_objects()
    errors: list[BaseException] = []
    counts: list[int] = []

    def work(t: int) -> None:
        try:
            total = 0
            for _round in range(3):
                c = sqlite3.connect(tmp_path / f"t{t}.db", check_same_thread=False)
                register_table_function(c, "numbers", numbers, COLUMNS, ["n", "step"])
                register_table_function(c, f"tagged_{t}", lambda _c, n: [(t, n)], ["t", "n2"], ["n"])
                for q in range(100):
                    total += c.execute("select count(*) from numbers(?)", [q % 7]).fetchone()[0]
                    assert c.execute(f"select t, n2 from tagged_{t}(?)", [q]).fetchone() == (t, q)
                c.close()
            counts.append(total)
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert counts == [3 * sum(q % 7 for q in range(100))] * 8
    gc.collect()
    assert live_objects() == baseline


def test_one_connection_handed_between_threads(conn: sqlite3.Connection) -> None:
    # One at a time: CPython's sqlite3 binds parameters holding the GIL, so two threads
    # running statements on one connection at once deadlock with any Python callback
    # (create_function too). Datasette gives each thread its own connection.
    errors: list[BaseException] = []
    turn = threading.Lock()

    def work(t: int) -> None:
        try:
            for q in range(100):
                n = (t + q) % 9
                with turn:
                    got = conn.execute("select count(*), sum(i) from numbers(?)", [n]).fetchone()
                assert got == (n, sum(range(n)) if n else None)
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_open_close_cycles_return_to_the_baseline() -> None:
    gc.collect()
    baseline = live_objects()
    for i in range(1500):
        c = sqlite3.connect(":memory:")
        register_table_function(c, "numbers", numbers, COLUMNS, ["n", "step"])
        assert c.execute("select count(*) from numbers(3)").fetchone() == (3,)
        if i % 2:
            c.close()
        else:
            del c  # dropped without close(): the registration must not keep it alive
    gc.collect()  # CPython's sqlite3 connections sit in a cycle with their statement cache
    assert live_objects() == baseline


def test_connections_left_open_at_interpreter_exit(tmp_path: Path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(
        "import sqlite3\n"
        "from semsearch_sqlite.sqlite.vtable import register_table_function\n"
        "def fn(c, n):\n    yield from ((i,) for i in range(n))\n"
        "keep = []\n"
        "for i in range(20):\n"
        "    c = sqlite3.connect(':memory:')\n"
        "    register_table_function(c, 'f', fn, ['i'], ['n'])\n"
        "    c.create_function('me', 0, lambda c=c: str(c))  # a reference cycle\n"
        "    cursor = c.execute('select * from f(100)'); cursor.fetchone()  # mid-iteration\n"
        "    keep.append((c, cursor))\n"
        "print('done')\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "done\n", "")


@pytest.mark.asyncio
async def test_datasette_query_and_csv(tmp_path: Path) -> None:
    from datasette import hookimpl
    from datasette.app import Datasette
    from datasette.plugins import pm

    db_path = tmp_path / "db.db"
    c = sqlite3.connect(db_path)
    load_sqlite_vec(c)
    c.execute("create virtual table v using vec0(id integer primary key, e float[2])")
    c.executemany("insert into v(id, e) values (?, ?)", [(1, "[1, 0]"), (2, "[0, 1]"), (3, "[1, 1]")])
    c.execute("create table words(id integer primary key, word text)")
    c.executemany("insert into words values (?, ?)", [(1, "east"), (2, "north")])
    c.commit()
    c.close()

    def nearest(conn: Any, query: Any, k: Any) -> list[tuple[Any, ...]]:
        sql = "select id, distance from v where e match ? and k = ?"
        return conn.execute(sql, [query, k or 2]).fetchall()

    class Plugin:
        __name__ = "test_tablefunc_plugin"

        @hookimpl
        def prepare_connection(self, conn: sqlite3.Connection) -> None:
            load_sqlite_vec(conn)
            register_table_function(conn, "nearest", nearest, ["id", "distance"], ["query", "k"])

    # only this test's plugin: the project's own plugin has its own tests (test_plugin.py)
    project_plugin = pm.get_plugin("semsearch")
    if project_plugin is not None:
        pm.unregister(name="semsearch")
    pm.register(Plugin(), name="test_tablefunc_plugin")
    try:
        ds = Datasette([str(db_path)])
        sql = (
            "select n.id, w.word, round(n.distance, 3) as d from nearest('[1, 0.1]', 3) n "
            "left join words w on w.id = n.id"
        )
        response = await ds.client.get(
            "/db.json?" + urllib.parse.urlencode({"sql": sql, "_shape": "array"}), follow_redirects=True
        )
        assert response.status_code == 200, response.text
        assert response.json() == [
            {"id": 1, "word": "east", "d": 0.1},
            {"id": 3, "word": None, "d": 0.9},
            {"id": 2, "word": "north", "d": 1.345},
        ]
        response = await ds.client.get(
            "/db.csv?" + urllib.parse.urlencode({"sql": "select * from nearest(:q)", "q": "[0, 1]"}),
            follow_redirects=True,
        )
        assert response.status_code == 200, response.text
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0] == ["id", "distance"] and [r[0] for r in rows[1:]] == ["2", "3"]
        response = await ds.client.get(
            "/db.json?" + urllib.parse.urlencode({"sql": "select * from nearest", "_shape": "array"}),
            follow_redirects=True,
        )
        assert response.status_code == 400
        assert "nearest() needs the query argument" in response.text
    finally:
        pm.unregister(name="test_tablefunc_plugin")
        if project_plugin is not None:
            pm.register(project_plugin, name="semsearch")


@pytest.mark.parametrize("target", ["system-python", "pysqlite3"])
def test_self_test_on_other_pythons(target: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(Path(sqlite_vec.__file__).parent, site / "sqlite_vec")
    if target == "system-python":
        if not Path(SYSTEM_PYTHON).exists():
            pytest.skip(f"no {SYSTEM_PYTHON} here")
        command = [SYSTEM_PYTHON, str(SELF_CHECK)]
        path = [str(site), str(ROOT)]
    else:
        # Installed only in `make test-native`'s venv: here it would switch sqlite-utils
        # and Datasette away from the stdlib module this run tests.
        found = importlib.util.find_spec("pysqlite3")
        if found is None:
            pytest.skip("pysqlite3-binary is not installed in this venv (make test-native runs this)")
        command = [sys.executable, str(SELF_CHECK), "--sqlite", "pysqlite3"]
        path = [str(Path(found.origin).parent.parent), str(site), str(ROOT)]
    env = {"PYTHONPATH": os.pathsep.join(path), "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "tablefunc self-test: OK"
    if target == "system-python":
        assert lines[0].startswith("python ") and SYSTEM_PYTHON in lines[0]
        assert "sqlite-vec (native)" in proc.stdout  # Debian's sqlite3 has enable_load_extension
    else:
        assert lines[1].startswith("module pysqlite3.dbapi2 sqlite ")
        assert "sqlite-vec (native)" in proc.stdout
