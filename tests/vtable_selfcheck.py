"""Self-check of the ctypes table functions on another Python's SQLite, run by
tests/test_tablefunc.py as ``python tests/vtable_selfcheck.py [--sqlite pysqlite3] [--no-vec]``
(a separate interpreter: Debian's Python, or pysqlite3 instead of the stdlib module)."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator
from typing import Any

from semsearch_sqlite.sqlite.vtable import live_objects, live_registrations, register_table_function


def _numbers(conn: Any, n: Any, step: Any = None) -> Iterator[tuple[Any, ...]]:
    if not isinstance(n, int):
        raise TypeError(f"n must be an integer, got {n!r}")
    for i in range(0, n, step or 1):
        yield i, i * i, f"#{i}", bytes([i % 256])


def self_test(sqlite_module: Any = None, vec: bool = True, threads: int = 4) -> list[str]:
    """Exercise table functions on this Python's SQLite; returns report lines.

    Raises AssertionError (or the error met) on the first failure.
    """
    if sqlite_module is None:
        import sqlite3 as sqlite_module
    report = [
        f"python {sys.version.split()[0]} {sys.executable}",
        f"module {sqlite_module.__name__} sqlite {sqlite_module.sqlite_version}",
    ]
    cols, params = ["i", "square", "label", "raw"], ["n", "step"]

    def connect() -> Any:
        conn = sqlite_module.connect(":memory:", check_same_thread=False)
        register_table_function(conn, "numbers", _numbers, cols, params)
        return conn

    baseline = live_registrations()
    conn = connect()
    assert conn.execute("select i, square, label, raw from numbers(3)").fetchall() == [
        (0, 0, "#0", b"\0"),
        (1, 1, "#1", b"\1"),
        (2, 4, "#2", b"\2"),
    ]
    assert conn.execute("select rowid, n, step from numbers(4, 2)").fetchall() == [(1, 4, 2), (2, 4, 2)]
    assert conn.execute("select count(*) from numbers(?)", [10]).fetchone() == (10,)
    assert conn.execute("select sum(i) from numbers(:n, :s)", {"n": 10, "s": 3}).fetchone() == (18,)
    joined = conn.execute(
        "select t.v, count(*) from (select 2 v union all select 5) t, numbers(t.v) group by t.v"
    ).fetchall()
    assert joined == [(2, 2), (5, 5)], joined
    assert conn.execute("select i from numbers(10) order by i desc limit 2").fetchall() == [(9,), (8,)]
    report.append("rows, rowid, params, join, order/limit: ok")
    for sql, expected in [
        ("select * from numbers", "numbers() needs the n argument"),
        ("select * from numbers('x')", "TypeError: n must be an integer"),
    ]:
        try:
            conn.execute(sql).fetchall()
        except sqlite_module.OperationalError as e:
            assert expected in str(e), (sql, str(e))
        else:
            raise AssertionError(f"{sql} did not fail")
    report.append("errors: ok")
    register_table_function(conn, "numbers", lambda c, n, s: [(n, -1, "new", None)], cols, params)
    assert conn.execute("select i, square from numbers(7)").fetchall() == [(7, -1)]
    register_table_function(conn, "numbers", lambda c, n: [(n,)], ["only"], ["n"])
    assert conn.execute("select * from numbers(7)").fetchall() == [(7,)]
    report.append("replace: ok")
    if vec:
        from semsearch_sqlite.sqlite.extensions import load_sqlite_vec

        how = load_sqlite_vec(conn)
        conn.execute("create virtual table v using vec0(id integer primary key, e float[2])")
        conn.executemany("insert into v(id, e) values (?, ?)", [(1, "[1, 0]"), (2, "[0, 1]"), (3, "[1, 1]")])
        register_table_function(
            conn,
            "knn",
            lambda c, q, k: c.execute("select id, distance from v where e match ? and k = ?", [q, k or 2]).fetchall(),
            ["id", "distance"],
            ["q", "k"],
        )
        got = conn.execute("select id from knn('[1, 0.1]')").fetchall()
        assert got == [(1,), (3,)], got
        report.append(f"sqlite-vec ({how}) knn inside a table function: ok")
    conn.close()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                c = connect()
                for n in range(20):
                    assert c.execute("select count(*) from numbers(?)", [n]).fetchone() == (n,)
                c.close()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    assert live_registrations() == baseline, live_objects()
    report.append(f"threads ({threads} x 10 connections x 20 queries), registry back to baseline: ok")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Self-test of SQLite table functions via ctypes")
    parser.add_argument("--sqlite", default="sqlite3", help="sqlite3 (default) or pysqlite3")
    parser.add_argument("--no-vec", action="store_true", help="skip the sqlite-vec check")
    args = parser.parse_args(argv)
    module = __import__("pysqlite3.dbapi2" if args.sqlite == "pysqlite3" else args.sqlite, fromlist=["connect"])
    for line in self_test(module, vec=not args.no_vec):
        print(line)
    print("tablefunc self-test: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
