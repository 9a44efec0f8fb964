"""sqlite-vec loading: native where Python has it, else ctypes on the connection's handle."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlite_vec

from semsearch_sqlite.errors import ExtensionError
from semsearch_sqlite.sqlite.extensions import connection_handle, load_extension, load_sqlite_vec

ROOT = Path(__file__).resolve().parents[1]


def knn(conn: sqlite3.Connection) -> list[tuple[int, float]]:
    conn.execute("create virtual table v using vec0(id integer primary key, e float[2] distance_metric=cosine)")
    conn.executemany("insert into v(id, e) values (?, ?)", [(1, "[1, 0]"), (2, "[0, 1]"), (3, "[1, 1]")])
    return conn.execute("select id, round(distance, 4) from v where e match '[1, 0.1]' and k = 2").fetchall()


def test_ctypes_path_on_this_python(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "a.db")
    how = load_sqlite_vec(conn)
    expected = "native" if hasattr(conn, "enable_load_extension") else "ctypes"
    assert how == expected
    assert knn(conn) == [(1, 0.005), (3, 0.226)]
    # SQL-level load_extension() stays disabled after the ctypes path
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("select load_extension(?)", [sqlite_vec.loadable_path()])


def test_forced_ctypes_path_and_idempotence() -> None:
    conn = sqlite3.connect(":memory:")
    assert load_extension(conn, sqlite_vec.loadable_path(), method="ctypes") == "ctypes"
    assert load_sqlite_vec(conn) == "already"
    assert conn.execute("select vec_length('[1, 2, 3]')").fetchone() == (3,)


def test_handle_is_verified_against_the_file(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.db")
    assert connection_handle(conn) != 0
    conn.close()
    with pytest.raises(ExtensionError, match="the connection is closed"):
        connection_handle(conn)


def test_bad_extension_path_is_a_clear_error() -> None:
    conn = sqlite3.connect(":memory:")
    with pytest.raises(ExtensionError, match="loading /nonexistent/vec0.so failed"):
        load_extension(conn, "/nonexistent/vec0.so", method="ctypes")


def test_native_method_refused_where_missing() -> None:
    conn = sqlite3.connect(":memory:")
    if hasattr(conn, "enable_load_extension"):
        pytest.skip("this Python has enable_load_extension")
    with pytest.raises(ExtensionError, match="no enable_load_extension"):
        load_extension(conn, sqlite_vec.loadable_path(), method="native")


def test_many_threads_many_connections(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    results: list[int] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                conn = sqlite3.connect(tmp_path / f"t{n}_{i}.db")
                load_sqlite_vec(conn)
                results.append(len(knn(conn)))
                conn.close()
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [2] * 160


def test_connection_shared_across_threads(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db", check_same_thread=False)
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(load_sqlite_vec(conn)))
    t.start()
    t.join()
    assert out and out[0] in ("native", "ctypes")
    assert conn.execute("select vec_version()").fetchone()[0].startswith("v")


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no Debian system Python here")
def test_native_path_on_a_python_with_enable_load_extension(tmp_path: Path) -> None:
    # Only sqlite_vec (pure Python + a C library) and our loader are put on its path.
    site = tmp_path / "site"
    shutil.copytree(Path(sqlite_vec.__file__).parent, site / "sqlite_vec")
    code = (
        "import sqlite3; from semsearch_sqlite.sqlite.extensions import load_sqlite_vec, load_extension\n"
        "import sqlite_vec\n"
        "c = sqlite3.connect(':memory:'); print(hasattr(c, 'enable_load_extension'), load_sqlite_vec(c))\n"
        "d = sqlite3.connect(':memory:'); print(load_extension(d, sqlite_vec.loadable_path(), method='ctypes'))\n"
        "print(d.execute('select vec_version()').fetchone()[0])\n"
    )
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0] == "True native"
    assert lines[1] == "ctypes"
    assert lines[2].startswith("v0.")


def test_python_version_is_named_in_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_vec, "loadable_path", lambda: str(tmp_path / "missing.so"))
    conn = sqlite3.connect(":memory:")
    with pytest.raises(ExtensionError) as e:
        load_sqlite_vec(conn)
    message = str(e.value)
    assert sys.version.split()[0] in message
    assert "pysqlite3-binary" in message


@pytest.mark.slow
def test_ctypes_path_after_tensorflow_is_loaded(tmp_path: Path) -> None:
    """TensorFlow exports a second SQLite; imported first, it must not crash the ctypes path."""
    pytest.importorskip("tensorflow")
    script = (
        "import tensorflow, sqlite3\n"
        "from semsearch_sqlite.sqlite.extensions import load_extension\n"
        "import sqlite_vec\n"
        f"conn = sqlite3.connect({str(tmp_path / 'x.db')!r})\n"
        "assert load_extension(conn, sqlite_vec.loadable_path(), method='ctypes') == 'ctypes'\n"
        "print(conn.execute('select vec_version()').fetchone()[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("v")
