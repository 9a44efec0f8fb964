"""The ``sqlite3*`` handle behind a Python connection object: the one place that reads it.

Python's ``sqlite3`` (and pysqlite3) offer no way to get the C handle, which loading an
extension or registering a function through SQLite's C API needs. CPython 3.8-3.14 and
pysqlite3 lay out ``pysqlite_Connection`` as ``PyObject_HEAD; sqlite3 *db; ...``, so the
handle is read right after the object header. That is a private layout: every value read
is verified before it is used, and a layout that doesn't match is an
:class:`~semsearch_sqlite.errors.ExtensionError` naming the fix, never a wrong handle.
"""

from __future__ import annotations

import ctypes
import secrets
import sys
from typing import Any

from semsearch_sqlite.errors import ExtensionError

_P = ctypes.c_void_p
# offset of ``sqlite3 *db`` in pysqlite_Connection: right after PyObject_HEAD
HANDLE_OFFSET = object.__basicsize__
UNSUPPORTED = (
    "this Python's sqlite3 layout is unsupported: install pysqlite3-binary or use a Python "
    "built with --enable-loadable-sqlite-extensions"
)


def handle_at(conn_address: int) -> int:
    """The ``sqlite3*`` stored in the connection object at ``conn_address`` (0 if closed).

    Unverified: :func:`connection_handle` checks it once; afterwards callers compare it
    with the handle they verified, to notice a connection object that is gone.
    """
    return _P.from_address(conn_address + HANDLE_OFFSET).value or 0


def connection_handle(conn: Any, lib: ctypes.CDLL) -> int:
    """The verified ``sqlite3*`` handle of ``conn``, opened by the SQLite library ``lib``.

    Two checks: ``sqlite3_db_filename`` of the handle equals the connection's own file
    (``PRAGMA database_list``), and a token set as the handle's last insert rowid is what
    ``select last_insert_rowid()`` on ``conn`` reads back. The second one tells apart
    in-memory databases and connections to the same file; the previous rowid is restored.

    Raises:
        ExtensionError: the connection is closed, or what was read is not its handle.
    """
    handle = handle_at(id(conn))
    if not handle:
        raise ExtensionError("the connection is closed or its SQLite handle cannot be found")
    filename, last_rowid, set_last_rowid = _functions(lib)
    row = conn.execute("select file from pragma_database_list where name = 'main'").fetchone()
    expected = (row[0] if row else "") or ""
    if (filename(handle, b"main") or b"").decode("utf-8", "replace") != expected:
        raise _mismatch("does not match its file")
    previous = last_rowid(handle)
    token = secrets.randbits(62) + 1
    set_last_rowid(handle, token)
    try:
        seen = conn.execute("select last_insert_rowid()").fetchone()[0]
    finally:
        set_last_rowid(handle, previous)
    if seen != token:
        raise _mismatch("is another connection's")
    return handle


def _mismatch(what: str) -> ExtensionError:
    return ExtensionError(
        f"the SQLite handle read from this {sys.implementation.name} {sys.version.split()[0]} "
        f"connection {what}; {UNSUPPORTED}"
    )


def _functions(lib: ctypes.CDLL) -> tuple[Any, Any, Any]:
    """``sqlite3_db_filename``, ``sqlite3_last_insert_rowid`` and its setter, typed."""
    out = []
    for name, restype, argtypes in [
        ("sqlite3_db_filename", ctypes.c_char_p, [_P, ctypes.c_char_p]),
        ("sqlite3_last_insert_rowid", ctypes.c_int64, [_P]),
        ("sqlite3_set_last_insert_rowid", None, [_P, ctypes.c_int64]),  # SQLite >= 3.18
    ]:
        fn = lib[name]  # a fresh function object: our argtypes don't touch other users'
        fn.restype, fn.argtypes = restype, argtypes
        out.append(fn)
    return out[0], out[1], out[2]
