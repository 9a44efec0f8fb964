"""Load sqlite-vec into any ``sqlite3``/``pysqlite3`` connection.

Many Pythons (pyenv, python.org macOS builds) are compiled without
``enable_load_extension``. There the extension is loaded through SQLite's own C API
on the connection's ``sqlite3*`` handle, so SQL-level ``load_extension()`` stays off.
"""

from __future__ import annotations

import ctypes
import secrets
import sys
import threading
from typing import Any

import sqlite_vec

from semsearch_sqlite.errors import ExtensionError
from semsearch_sqlite.sqlite import handle

_P = ctypes.c_void_p
_SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION = 1005
_libs: dict[str, ctypes.CDLL] = {}
_libs_lock = threading.Lock()


_SIGNATURES = [
    ("sqlite3_db_config", ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int, _P]),
    ("sqlite3_load_extension", ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]),
    ("sqlite3_db_filename", ctypes.c_char_p, [_P, ctypes.c_char_p]),
    ("sqlite3_free", None, [_P]),
    ("sqlite3_soft_heap_limit64", ctypes.c_int64, [ctypes.c_int64]),
]


def sqlite_library(conn: Any) -> ctypes.CDLL:
    """The SQLite C library that created ``conn`` (stdlib ``_sqlite3`` or pysqlite3's).

    A process may hold two copies of SQLite: TensorFlow's libtensorflow_cc exports its
    own, and when it is loaded globally first, ``_sqlite3`` binds to that copy rather
    than to its own libsqlite3. Calling one copy's functions on the other's connection
    crashes, so each candidate is tested for being the very library ``conn`` runs on.
    """
    top = type(conn).__module__.split(".")[0]
    modname = "_sqlite3" if top == "sqlite3" else f"{top}._sqlite3"
    module = sys.modules.get(modname)
    path = getattr(module, "__file__", None)
    if path is None:
        raise ExtensionError(f"cannot find the SQLite library behind {type(conn)!r}")
    with _libs_lock:
        lib = _libs.get(path)
        if lib is None:
            # the module's own dependency tree first, then the process's global scope
            for candidate in (ctypes.CDLL(path), ctypes.CDLL(None)):
                if _declare(candidate) and _runs(conn, candidate):
                    lib = _libs[path] = candidate
                    break
            else:
                raise ExtensionError(f"cannot find the SQLite library that {modname} ({path}) runs on")
    return lib


def _declare(lib: ctypes.CDLL) -> bool:
    """Give ``lib``'s functions their C signatures (False if it lacks one)."""
    for name, res, args in _SIGNATURES:
        fn = getattr(lib, name, None)
        if fn is None:
            return False
        fn.restype, fn.argtypes = res, args
    return True


def _runs(conn: Any, lib: ctypes.CDLL) -> bool:
    """Whether ``conn`` runs on ``lib``: a soft heap limit set through ``lib`` must be
    the one ``conn``'s SQL reports (the limit is per library copy, not per connection)."""
    before = lib.sqlite3_soft_heap_limit64(-1)
    token = before + 4096 * (1 + secrets.randbelow(1 << 20)) if before > 0 else 4096 * (1 + secrets.randbelow(1 << 20))
    try:
        lib.sqlite3_soft_heap_limit64(token)
        seen = conn.execute("pragma soft_heap_limit").fetchone()[0]
    finally:
        lib.sqlite3_soft_heap_limit64(before)
    return seen == token


def connection_handle(conn: Any) -> int:
    """The verified ``sqlite3*`` pointer of a Python connection object (see :mod:`.handle`)."""
    return handle.connection_handle(conn, sqlite_library(conn))


def load_extension(conn: Any, path: str, entrypoint: str | None = None, method: str = "auto") -> str:
    """Load the SQLite extension at ``path`` into ``conn``.

    ``method`` is ``"auto"`` (native where the Python has it), ``"native"`` or ``"ctypes"``.
    Returns the method used: ``"native"`` or ``"ctypes"``.
    """
    if method not in ("auto", "native", "ctypes"):
        raise ValueError(f"method must be auto, native or ctypes, not {method!r}")
    native = hasattr(conn, "enable_load_extension")
    if method == "native" and not native:
        raise ExtensionError(f"{type(conn).__module__} on this Python has no enable_load_extension")
    if native and method != "ctypes":
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path, **({"entrypoint": entrypoint} if entrypoint else {}))
        finally:
            conn.enable_load_extension(False)
        return "native"
    lib = sqlite_library(conn)
    handle = connection_handle(conn)
    err = ctypes.c_char_p()
    lib.sqlite3_db_config(handle, _SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 1, None)
    try:
        rc = lib.sqlite3_load_extension(
            handle, path.encode(), entrypoint.encode() if entrypoint else None, ctypes.byref(err)
        )
    finally:
        lib.sqlite3_db_config(handle, _SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, None)
    if rc != 0:
        message = err.value.decode("utf-8", "replace") if err.value else f"rc={rc}"
        raise ExtensionError(f"loading {path} failed: {message}")
    return "ctypes"


def has_sqlite_vec(conn: Any) -> bool:
    """True when ``vec_version()`` already works on ``conn``."""
    try:
        conn.execute("select vec_version()").fetchone()
        return True
    except Exception:
        return False


def load_sqlite_vec(conn: Any) -> str:
    """Make sqlite-vec available on ``conn`` (idempotent).

    Returns how it was loaded: ``"already"``, ``"native"`` or ``"ctypes"``.
    Raises ExtensionError naming this Python and the fix when neither way works.
    """
    if has_sqlite_vec(conn):
        return "already"
    try:
        conn.execute("pragma schema_version").fetchone()
    except Exception as e:  # noqa: BLE001 - the file, not the extension, is the problem
        raise ExtensionError(
            f"cannot read the database ({e}), so sqlite-vec was not loaded: check that the file and its "
            "folder are readable; a WAL database also needs its -shm beside it (or open it immutable)"
        ) from e
    try:
        how = load_extension(conn, sqlite_vec.loadable_path())
    except Exception as e:  # noqa: BLE001 - reported as one clear error below
        raise ExtensionError(
            f"cannot load sqlite-vec into {type(conn).__module__} on Python "
            f"{sys.version.split()[0]} ({sys.executable}): {e}. Fix: pip install "
            "pysqlite3-binary, or use a Python built with --enable-loadable-sqlite-extensions"
        ) from e
    if not has_sqlite_vec(conn):
        raise ExtensionError("sqlite-vec loaded but vec_version() is missing")
    return how
