"""Scalar SQL functions whose errors reach the user, in pure ctypes.

``conn.create_function`` turns every Python exception into the same text, "user-defined
function raised exception". Registering through ``sqlite3_create_function_v2`` on the
connection's own handle lets the exception's message be the SQL error, as the table
functions of :mod:`.vtable` do:

    register_scalar_function(conn, "semsearch_text_vector", 1, fn)   # fn(conn, query)
    conn.execute("select semsearch_text_vector('zzqqzz')")
    # sqlite3.OperationalError: no known words in query: 'zzqqzz' (...)

The C callback is created once per process and pinned; per-registration state is found
through an integer key that SQLite holds as the function's user data and drops through
``xDestroy`` when the connection closes or the function is replaced. A registration
holds no reference to the connection (``fn`` gets it back from its address, valid while
SQLite runs a statement on it).
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections.abc import Callable
from typing import Any

from semsearch_sqlite.errors import ExtensionError
from semsearch_sqlite.sqlite.extensions import connection_handle, sqlite_library
from semsearch_sqlite.sqlite.handle import handle_at
from semsearch_sqlite.sqlite.vtable import _api, _describe, _from_value, _interrupted, _set_result

_P = ctypes.c_void_p
_SQLITE_OK, _SQLITE_INTERRUPT = 0, 9
_SQLITE_UTF8, _SQLITE_DETERMINISTIC = 1, 0x800
_FUNC = ctypes.CFUNCTYPE(None, _P, ctypes.c_int, ctypes.POINTER(_P))
_DESTROY = ctypes.CFUNCTYPE(None, _P)


class _Scalar:
    __slots__ = ("name", "fn", "api", "db", "conn_addr")

    def __init__(self, name: str, fn: Callable[..., Any], api: Any, db: int, conn: Any):
        self.name, self.fn, self.api, self.db, self.conn_addr = name, fn, api, db, id(conn)

    def connection(self) -> Any:
        if handle_at(self.conn_addr) != self.db:
            raise ExtensionError(f"{self.name}(): its connection object is gone")
        return ctypes.cast(self.conn_addr, ctypes.py_object).value


_scalars: dict[int, _Scalar] = {}
_keys = itertools.count(1)
_lock = threading.Lock()
# SQLite library path -> (sqlite3_create_function_v2, xFunc, xDestroy), pinned
_per_library: dict[str, tuple[Any, Any, Any]] = {}


def _c(lib: Any, name: str, restype: Any, argtypes: list[Any]) -> Any:
    fn = lib[name]  # a fresh function object: our argtypes don't touch other users'
    fn.restype, fn.argtypes = restype, argtypes
    return fn


def _library(lib: Any) -> tuple[Any, Any, Any]:
    """The C function and callbacks for one SQLite library, made once and pinned."""
    with _lock:
        done = _per_library.get(lib._name)
        if done is not None:
            return done
        create = _c(
            lib,
            "sqlite3_create_function_v2",
            ctypes.c_int,
            [_P, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, _P, _P, _P, _P, _P],
        )
        user_data = _c(lib, "sqlite3_user_data", _P, [_P])
        error_code = _c(lib, "sqlite3_result_error_code", None, [_P, ctypes.c_int])
        scalars, describe, from_value, set_result, interrupted = (
            _scalars,
            _describe,
            _from_value,
            _set_result,
            _interrupted,
        )

        def x_func(ctx, argc, argv):  # type: ignore[no-untyped-def]
            reg = None
            try:
                reg = scalars[user_data(ctx) or 0]
                args = [from_value(reg.api, argv[i]) for i in range(argc)]
                set_result(reg.api, ctx, reg.fn(reg.connection(), *args))
            except BaseException as e:  # noqa: BLE001 - reported as the SQL error
                try:
                    if interrupted(e):  # SQLite's own code, so callers see their time limit
                        error_code(ctx, _SQLITE_INTERRUPT)
                    elif reg is not None:
                        message = describe(e).encode("utf-8", "replace")
                        reg.api.result_error(ctx, message, len(message))
                    else:
                        error_code(ctx, 1)
                except:  # noqa: E722 - nothing may escape into C
                    pass

        def x_destroy(key):  # type: ignore[no-untyped-def]
            try:
                scalars.pop(key or 0, None)
            except:  # noqa: E722 - nothing may escape into C
                pass

        done = (create, _FUNC(x_func), _DESTROY(x_destroy))
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(done))  # SQLite may call these at exit
        _per_library[lib._name] = done
        return done


def register_scalar_function(
    conn: Any, name: str, nargs: int, fn: Callable[..., Any], *, deterministic: bool = True
) -> None:
    """Make ``fn(conn, *args)`` callable from SQL as ``name(arg, ...)`` with ``nargs`` arguments.

    An exception from ``fn`` becomes the SQL error: SemsearchError messages as they are,
    others as ``TypeName: message``; SQLite's own "interrupted" stays an interrupt.

    Raises:
        ExtensionError: the connection's SQLite handle can't be used (then register with
            ``conn.create_function`` instead).
    """
    try:
        lib = sqlite_library(conn)
        db = connection_handle(conn)
        api = _api(lib)
        create, x_func, x_destroy = _library(lib)
    except Exception as e:  # noqa: BLE001 - one clear error for every way this fails
        raise ExtensionError(f"cannot register {name}() on this connection: {_describe(e)}") from e
    key = next(_keys)
    _scalars[key] = _Scalar(name, fn, api, db, conn)
    flags = _SQLITE_UTF8 | (_SQLITE_DETERMINISTIC if deterministic else 0)
    rc = create(db, name.encode(), nargs, flags, key, ctypes.cast(x_func, _P), None, None, ctypes.cast(x_destroy, _P))
    if rc != _SQLITE_OK:  # SQLite has already called xDestroy(key)
        _scalars.pop(key, None)
        message = (api.errmsg(db) or b"").decode("utf-8", "replace")
        raise ExtensionError(f"sqlite3_create_function_v2 failed for {name}(): {message} (rc={rc})")


def live_scalars() -> int:
    """How many scalar registrations are held (on connections not yet closed)."""
    return len(_scalars)
