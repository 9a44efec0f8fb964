"""Table-valued SQL functions on any ``sqlite3``/``pysqlite3`` connection, in pure ctypes.

    register_table_function(conn, "similar_images", fn, ["image_id", "path", "distance"], ["query", "k"])
    conn.execute("select * from similar_images('cat sofa', 5)")   # calls fn(conn, 'cat sofa', 5)

Each function is an eponymous-only virtual table module (``sqlite3_create_module_v2``, ``xCreate``
NULL) registered on the connection's own ``sqlite3*`` handle (:mod:`.handle`), so it works on
Pythons without ``enable_load_extension`` and needs no compiler.

Each registration's state is a small Python object found through an integer key (the
module's client data), released by ``xDestroy``; a registration does not keep the
connection alive, and :func:`live_registrations` counts the state still held. Registering
a name again replaces it. One thread at a time per connection. An exception from ``fn``
becomes an SQL error. The design (lifetime, threads, replacing, errors) is described in
docs/architecture.md.
"""

from __future__ import annotations

import ctypes
import itertools
import numbers
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from semsearch_sqlite.errors import ExtensionError, SemsearchError
from semsearch_sqlite.sqlite.extensions import connection_handle, sqlite_library
from semsearch_sqlite.sqlite.handle import handle_at

ESTIMATED_ROWS = 100  # rows one call is assumed to return, for the query planner
MAX_PARAMS = 30  # the provided arguments are a bitmask in the int idxNum

_P = ctypes.c_void_p
_SQLITE_OK, _SQLITE_ERROR, _SQLITE_NOMEM, _SQLITE_INTERRUPT, _SQLITE_CONSTRAINT = 0, 1, 7, 9, 19
_SQLITE_INTEGER, _SQLITE_FLOAT, _SQLITE_TEXT, _SQLITE_BLOB = 1, 2, 3, 4
_SQLITE_UTF8 = 1
_CONSTRAINT_EQ = 2
_TRANSIENT = _P(-1)
_INT64 = (-(2**63), 2**63 - 1)
_EXPIRE_FUNCTION = "semsearch_tablefunc_expire"


class _VTab(ctypes.Structure):
    # sqlite3_vtab, then our key
    _fields_ = [("pModule", _P), ("nRef", ctypes.c_int), ("zErrMsg", _P), ("key", ctypes.c_int64)]


class _VCursor(ctypes.Structure):
    # sqlite3_vtab_cursor, then our key
    _fields_ = [("pVtab", _P), ("key", ctypes.c_int64)]


class _Constraint(ctypes.Structure):
    _fields_ = [
        ("iColumn", ctypes.c_int),
        ("op", ctypes.c_ubyte),
        ("usable", ctypes.c_ubyte),
        ("iTermOffset", ctypes.c_int),
    ]


class _ConstraintUsage(ctypes.Structure):
    _fields_ = [("argvIndex", ctypes.c_int), ("omit", ctypes.c_ubyte)]


class _IndexInfo(ctypes.Structure):
    _fields_ = [
        ("nConstraint", ctypes.c_int),
        ("aConstraint", ctypes.POINTER(_Constraint)),
        ("nOrderBy", ctypes.c_int),
        ("aOrderBy", _P),
        ("aConstraintUsage", ctypes.POINTER(_ConstraintUsage)),
        ("idxNum", ctypes.c_int),
        ("idxStr", _P),
        ("needToFreeIdxStr", ctypes.c_int),
        ("orderByConsumed", ctypes.c_int),
        ("estimatedCost", ctypes.c_double),
        ("estimatedRows", ctypes.c_int64),  # SQLite >= 3.8.2
        ("idxFlags", ctypes.c_int),  # >= 3.9.0
        ("colUsed", ctypes.c_uint64),
    ]  # >= 3.10.0


_SLOTS = [
    "xCreate",
    "xConnect",
    "xBestIndex",
    "xDisconnect",
    "xDestroy",
    "xOpen",
    "xClose",
    "xFilter",
    "xNext",
    "xEof",
    "xColumn",
    "xRowid",
    "xUpdate",
    "xBegin",
    "xSync",
    "xCommit",
    "xRollback",
    "xFindFunction",
    "xRename",
    "xSavepoint",
    "xRelease",
    "xRollbackTo",
    "xShadowName",
    "xIntegrity",
]


class _Module(ctypes.Structure):
    _fields_ = [("iVersion", ctypes.c_int)] + [(name, _P) for name in _SLOTS]


_CONNECT = ctypes.CFUNCTYPE(ctypes.c_int, _P, _P, ctypes.c_int, _P, ctypes.POINTER(_P), _P)
_BEST_INDEX = ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.POINTER(_IndexInfo))
_ONE = ctypes.CFUNCTYPE(ctypes.c_int, _P)
_OPEN = ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.POINTER(_P))
_FILTER = ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.c_int, _P, ctypes.c_int, ctypes.POINTER(_P))
_COLUMN = ctypes.CFUNCTYPE(ctypes.c_int, _P, _P, ctypes.c_int)
_ROWID = ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.POINTER(ctypes.c_int64))
_DESTROY_AUX = ctypes.CFUNCTYPE(None, _P)


class _Api:
    """The C functions used here, typed, for one SQLite library."""

    _SIGNATURES: list[tuple[str, Any, list[Any]]] = [
        ("sqlite3_declare_vtab", ctypes.c_int, [_P, ctypes.c_char_p]),
        ("sqlite3_create_module_v2", ctypes.c_int, [_P, ctypes.c_char_p, _P, _P, _P]),
        ("sqlite3_errmsg", ctypes.c_char_p, [_P]),
        ("sqlite3_malloc64", _P, [ctypes.c_uint64]),
        ("sqlite3_free", None, [_P]),
        ("sqlite3_value_type", ctypes.c_int, [_P]),
        ("sqlite3_value_int64", ctypes.c_int64, [_P]),
        ("sqlite3_value_double", ctypes.c_double, [_P]),
        ("sqlite3_value_text", _P, [_P]),
        ("sqlite3_value_blob", _P, [_P]),
        ("sqlite3_value_bytes", ctypes.c_int, [_P]),
        ("sqlite3_result_null", None, [_P]),
        ("sqlite3_result_int64", None, [_P, ctypes.c_int64]),
        ("sqlite3_result_double", None, [_P, ctypes.c_double]),
        ("sqlite3_result_text64", None, [_P, ctypes.c_char_p, ctypes.c_uint64, _P, ctypes.c_ubyte]),
        ("sqlite3_result_blob64", None, [_P, ctypes.c_char_p, ctypes.c_uint64, _P]),
        ("sqlite3_result_error", None, [_P, ctypes.c_char_p, ctypes.c_int]),
    ]

    # SQLite >= 3.38: all-at-once IN constraints (None on older libraries)
    _OPTIONAL: list[tuple[str, Any, list[Any]]] = [
        ("sqlite3_vtab_in", ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int]),
        ("sqlite3_vtab_in_first", ctypes.c_int, [_P, ctypes.POINTER(_P)]),
        ("sqlite3_vtab_in_next", ctypes.c_int, [_P, ctypes.POINTER(_P)]),
    ]

    def __init__(self, lib: ctypes.CDLL):
        for name, restype, argtypes in self._SIGNATURES:
            fn = lib[name]  # a fresh function object: our argtypes don't touch other users'
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name[len("sqlite3_") :], fn)
        for name, restype, argtypes in self._OPTIONAL:
            try:
                fn = lib[name]
            except AttributeError:
                fn = None
            else:
                fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name[len("sqlite3_") :], fn)

    def c_string(self, text: str) -> int:
        """``text`` copied into ``sqlite3_malloc`` memory (for zErrMsg), or 0."""
        data = text.encode("utf-8", "replace")
        mem = self.malloc64(len(data) + 1)
        if mem:
            ctypes.memmove(mem, data, len(data))
            ctypes.c_char.from_address(mem + len(data)).value = b"\0"
        return mem or 0


class _Registration:
    """One table function on one connection."""

    __slots__ = (
        "key",
        "name",
        "fold",
        "fn",
        "columns",
        "params",
        "required",
        "decl",
        "api",
        "db",
        "conn_addr",
        "filters",
    )

    def __init__(
        self,
        key: int,
        name: str,
        fn: Callable[..., Iterable[Sequence[Any]]],
        columns: list[str],
        params: list[str],
        required: int,
        api: _Api,
        db: int,
        conn: Any,
    ):
        self.key, self.name, self.fold, self.fn = key, name, _fold(name), fn
        self.columns, self.params, self.required = columns, params, required
        declared = ", ".join([_quote(c) for c in columns] + [_quote(p) + " HIDDEN" for p in params])
        self.decl = f"CREATE TABLE x({declared})".encode()
        self.api, self.db, self.conn_addr = api, db, id(conn)
        self.filters: frozenset[int] = frozenset()  # result columns whose constraints fn receives

    def connection(self) -> Any:
        """The Python connection: alive while SQLite runs a statement on its handle."""
        if handle_at(self.conn_addr) != self.db:
            raise ExtensionError(f"{self.name}(): its connection object is gone")
        return ctypes.cast(self.conn_addr, ctypes.py_object).value

    def missing_message(self, missing: list[str]) -> str:
        if len(missing) == 1:
            needs = f"the {missing[0]} argument"
        else:
            needs = "the " + " and ".join([", ".join(missing[:-1]), missing[-1]]) + " arguments"
        return f"{self.name}() needs {needs}; call it as {self.usage()}"

    def usage(self) -> str:
        given = ", ".join(self.params[: self.required])
        optional = "".join(f" [, {p}]" if i or given else f"[{p}]" for i, p in enumerate(self.params[self.required :]))
        return f"{self.name}({given}{optional})"


class _Cursor:
    __slots__ = ("reg", "vtab", "it", "row", "rowid", "args")

    def __init__(self, reg: _Registration, vtab: int):
        self.reg, self.vtab = reg, vtab
        self.it: Iterator[Any] | None = None
        self.row: tuple[Any, ...] | None = None
        self.rowid = 0
        self.args: list[Any] = []


# key -> registration, dropped by xDestroy (connection closed or module replaced)
_registrations: dict[int, _Registration] = {}
# (sqlite3* handle, folded name) -> key of the current registration
_by_db: dict[tuple[int, bytes], int] = {}
# vtab key -> registration (a vtab may outlive a replaced module); cursor key -> state
_vtabs: dict[int, _Registration] = {}
_cursors: dict[int, _Cursor] = {}
_keys = itertools.count(1)
# re-entrant: a garbage collection inside a locked block may close a dropped connection,
# whose xDestroy takes the lock again on the same thread
_lock = threading.RLock()
_apis: dict[str, _Api] = {}


def _fold(name: str) -> bytes:
    return name.encode().lower()  # SQLite compares module names ASCII-case-insensitively


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _interrupted(e: BaseException) -> bool:
    """SQLite's own "interrupted" (a time limit's progress handler, ``interrupt()``) raised
    by a statement ``fn`` ran: passed on as SQLITE_INTERRUPT, so the caller sees its limit."""
    return type(e).__name__ == "OperationalError" and e.args == ("interrupted",)


def _describe(e: BaseException) -> str:
    """The SQL error text for an exception raised by a table function."""
    if isinstance(e, SemsearchError):
        return str(e)
    message = str(e)
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


def to_sql_value(value: Any) -> int | float | str | bytes | None:
    """``value`` as one of SQLite's types (what a row value becomes in SQL).

    ``bool`` and integers (numpy ones too) become INTEGER, reals (``np.float32``...) REAL,
    ``str`` TEXT, ``bytes`` and buffer objects (numpy arrays: their raw bytes) BLOB.
    Raises TypeError for other types and OverflowError outside SQLite's 64-bit range.
    """
    kind = type(value)
    if value is None or kind is float or kind is str or kind is bytes:
        return value
    if kind is int or isinstance(value, numbers.Integral):
        number = int(value)
        if not _INT64[0] <= number <= _INT64[1]:
            raise OverflowError(f"integer {number} is outside SQLite's 64-bit range")
        return number
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # numpy scalar / 0-d
        item = value.item()
        if type(item) is not kind:
            return to_sql_value(item)
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        return memoryview(value).tobytes()
    except TypeError:
        pass
    raise TypeError(
        f"cannot return a {kind.__module__}.{kind.__qualname__} value to SQL (use int, float, str, bytes or None)"
    )


def _from_value(api: _Api, value: int) -> Any:
    kind = api.value_type(value)
    if kind == _SQLITE_INTEGER:
        return api.value_int64(value)
    if kind == _SQLITE_FLOAT:
        return api.value_double(value)
    if kind == _SQLITE_TEXT:
        pointer = api.value_text(value)  # text before bytes, as SQLite asks
        size = api.value_bytes(value)
        return ctypes.string_at(pointer, size).decode("utf-8", "replace") if size else ""
    if kind == _SQLITE_BLOB:
        pointer = api.value_blob(value)
        size = api.value_bytes(value)
        return ctypes.string_at(pointer, size) if size else b""
    return None


def _set_result(api: _Api, ctx: int, value: Any) -> None:
    value = to_sql_value(value)
    if value is None:
        api.result_null(ctx)
    elif type(value) is int:
        api.result_int64(ctx, value)
    elif type(value) is float:
        api.result_double(ctx, value)
    elif type(value) is str:
        data = value.encode("utf-8", "surrogatepass")
        api.result_text64(ctx, data, len(data), _TRANSIENT, _SQLITE_UTF8)
    else:
        api.result_blob64(ctx, value, len(value), _TRANSIENT)


# -- filters: WHERE constraints on result columns handed to fn ------------------------------
# SQLITE_INDEX_CONSTRAINT_* -> the operator fn receives
FILTER_OPERATORS = {2: "=", 4: ">", 8: "<=", 16: "<", 32: ">=", 65: "like", 66: "glob"}
_SQLITE_DONE = 101


def _plan_filters(reg: _Registration, p_info: Any, first_argv: int) -> int:
    """xBestIndex's part for filters: give every usable constraint on a filter column an
    argv slot (after the arguments) and describe them in idxStr; returns how many.

    They are not omitted, so SQLite still checks each row: fn may use them to pick its
    candidates (a top k among the matching rows) and needn't apply them exactly.
    ``column IN (...)`` is asked for all at once when SQLite can (>= 3.38), so fn sees
    the whole list rather than being called once per value.
    """
    info = p_info.contents
    api = reg.api
    ncol = len(reg.columns)
    described = []
    for i in range(info.nConstraint):
        c = info.aConstraint[i]
        op = FILTER_OPERATORS.get(c.op)
        if not c.usable or op is None or not 0 <= c.iColumn < ncol or c.iColumn not in reg.filters:
            continue
        whole_in = 0
        if op == "=" and api.vtab_in is not None and api.vtab_in(ctypes.addressof(info), i, -1):
            api.vtab_in(ctypes.addressof(info), i, 1)
            whole_in = 1
        use = info.aConstraintUsage[i]
        use.argvIndex, use.omit = first_argv + len(described), 0
        described.append(f"{c.iColumn}:{c.op}:{whole_in}")
    if described:
        info.idxStr = api.c_string(",".join(described)) or None
        info.needToFreeIdxStr = 1
    return len(described)


def _read_filters(reg: _Registration, idx_str: int, argv: Any, position: int) -> tuple[tuple[str, str, Any], ...]:
    """xFilter's part for filters: ``(column, operator, value)`` for each planned
    constraint, ``("col", "in", (values...))`` for an all-at-once IN list."""
    api = reg.api
    out = []
    for part in ctypes.string_at(idx_str).decode().split(","):
        column, code, whole_in = (int(x) for x in part.split(":"))
        value_ptr = argv[position]
        position += 1
        if whole_in:
            values = []
            item = _P()
            rc = api.vtab_in_first(value_ptr, ctypes.byref(item))
            while rc == _SQLITE_OK and item.value:
                values.append(_from_value(api, item.value))
                rc = api.vtab_in_next(value_ptr, ctypes.byref(item))
            if rc not in (_SQLITE_OK, _SQLITE_DONE):
                raise ExtensionError(f"{reg.name}(): cannot read the IN list of {reg.columns[column]} (rc={rc})")
            out.append((reg.columns[column], "in", tuple(values)))
        else:
            out.append((reg.columns[column], FILTER_OPERATORS[code], _from_value(api, value_ptr)))
    return tuple(out)


# -- the C callbacks ------------------------------------------------------------------------
# Each family is made by one factory that binds everything its callbacks use as locals, so
# the callbacks still work while module globals are being torn down at interpreter exit.


def _error_setter() -> Callable[[_Api, int, str], int]:
    """``set_error(api, vtab, message)``: the vtab's zErrMsg for SQLite to report; SQLITE_ERROR."""
    VTab, ERROR = _VTab, _SQLITE_ERROR

    def set_error(api: _Api, vtab: int, message: str) -> int:
        v = VTab.from_address(vtab)
        if v.zErrMsg:
            api.free(v.zErrMsg)
        v.zErrMsg = api.c_string(message) or None
        return ERROR

    return set_error


def _table_callbacks() -> dict[str, Any]:
    """xConnect/xDisconnect: a ``sqlite3_vtab`` per use of a registration in a statement."""
    registrations, vtabs, keys = _registrations, _vtabs, _keys
    VTab, memset, sizeof = _VTab, ctypes.memset, ctypes.sizeof
    OK, ERROR, NOMEM = _SQLITE_OK, _SQLITE_ERROR, _SQLITE_NOMEM

    def x_connect(db, aux, argc, argv, pp_vtab, pz_err):  # type: ignore[no-untyped-def]
        try:
            reg = registrations.get(aux or 0)
            if reg is None:
                return ERROR
            rc = reg.api.declare_vtab(db, reg.decl)
            if rc != OK:
                return rc
            mem = reg.api.malloc64(sizeof(VTab))
            if not mem:
                return NOMEM
            memset(mem, 0, sizeof(VTab))
            key = next(keys)
            VTab.from_address(mem).key = key
            vtabs[key] = reg
            pp_vtab[0] = mem
            return OK
        except:  # noqa: E722 - nothing may escape into C
            return ERROR

    def x_disconnect(vtab):  # type: ignore[no-untyped-def]
        try:
            reg = vtabs.pop(VTab.from_address(vtab).key, None)
            if reg is not None:
                v = VTab.from_address(vtab)
                if v.zErrMsg:
                    reg.api.free(v.zErrMsg)
                reg.api.free(vtab)
            return OK
        except:  # noqa: E722 - nothing may escape into C
            return OK

    return {"xConnect": _CONNECT(x_connect), "xDisconnect": _ONE(x_disconnect)}


def _plan_callbacks(set_error: Callable[[_Api, int, str], int]) -> dict[str, Any]:
    """xBestIndex: which arguments (and filters) a plan hands to fn, and its cost."""
    vtabs, VTab, describe, plan_filters = _vtabs, _VTab, _describe, _plan_filters
    OK, ERROR, CONSTRAINT, EQ = _SQLITE_OK, _SQLITE_ERROR, _SQLITE_CONSTRAINT, _CONSTRAINT_EQ
    rows_estimate = ESTIMATED_ROWS

    def x_best_index(vtab, p_info):  # type: ignore[no-untyped-def]
        reg = None
        try:
            reg = vtabs[VTab.from_address(vtab).key]
            info = p_info.contents
            ncol, nparam = len(reg.columns), len(reg.params)
            usable: dict[int, int] = {}  # parameter -> first usable equality constraint
            blocked = set()
            for i in range(info.nConstraint):
                c = info.aConstraint[i]
                p = c.iColumn - ncol
                if 0 <= p < nparam and c.op == EQ:
                    if c.usable:
                        usable.setdefault(p, i)
                    else:
                        blocked.add(p)
            if blocked.difference(usable):
                # an argument that comes from a table not yet scanned: ask for another plan
                return CONSTRAINT
            mask = 0
            for argv_index, p in enumerate(sorted(usable), 1):
                use = info.aConstraintUsage[usable[p]]
                use.argvIndex, use.omit = argv_index, 1
                mask |= 1 << p
            info.idxNum = mask
            pushed = plan_filters(reg, p_info, len(usable) + 1) if reg.filters else 0
            if all(mask >> p & 1 for p in range(reg.required)):
                info.estimatedRows = rows_estimate
                # a plan that hands more filters to fn is preferred: it searches fewer images
                info.estimatedCost = 10.0 * rows_estimate / (1 + pushed)
            else:  # xFilter reports the missing argument
                info.estimatedRows = 1
                info.estimatedCost = 1e12
            return OK
        except BaseException as e:  # noqa: BLE001 - reported as the SQL error
            return set_error(reg.api, vtab, describe(e)) if reg is not None else ERROR

    return {"xBestIndex": _BEST_INDEX(x_best_index)}


def _cursor_callbacks() -> dict[str, Any]:
    """xOpen/xClose, and the cursor's position: xEof, xRowid."""
    vtabs, cursors, keys = _vtabs, _cursors, _keys
    VTab, VCursor, Cursor, memset, sizeof = _VTab, _VCursor, _Cursor, ctypes.memset, ctypes.sizeof
    OK, ERROR, NOMEM = _SQLITE_OK, _SQLITE_ERROR, _SQLITE_NOMEM

    def x_open(vtab, pp_cursor):  # type: ignore[no-untyped-def]
        try:
            reg = vtabs[VTab.from_address(vtab).key]
            mem = reg.api.malloc64(sizeof(VCursor))
            if not mem:
                return NOMEM
            memset(mem, 0, sizeof(VCursor))
            key = next(keys)
            VCursor.from_address(mem).key = key
            cursors[key] = Cursor(reg, vtab)
            pp_cursor[0] = mem
            return OK
        except:  # noqa: E722 - nothing may escape into C
            return ERROR

    def x_close(cursor):  # type: ignore[no-untyped-def]
        try:
            state = cursors.pop(VCursor.from_address(cursor).key, None)
            if state is not None:
                state.reg.api.free(cursor)
            return OK
        except:  # noqa: E722 - nothing may escape into C
            return OK

    def x_eof(cursor):  # type: ignore[no-untyped-def]
        try:
            return int(cursors[VCursor.from_address(cursor).key].row is None)
        except:  # noqa: E722 - nothing may escape into C
            return 1

    def x_rowid(cursor, p_rowid):  # type: ignore[no-untyped-def]
        try:
            p_rowid[0] = cursors[VCursor.from_address(cursor).key].rowid
            return OK
        except:  # noqa: E722 - nothing may escape into C
            return ERROR

    return {"xOpen": _OPEN(x_open), "xClose": _ONE(x_close), "xEof": _ONE(x_eof), "xRowid": _ROWID(x_rowid)}


def _row_advancer() -> Callable[[_Cursor], None]:
    """``advance(state)``: the cursor's next row from fn's iterator, checked against the columns."""

    def advance(state: _Cursor) -> None:
        reg = state.reg
        try:
            row = next(state.it)  # type: ignore[arg-type]
        except StopIteration:
            state.row, state.it = None, None
            return
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
            raise TypeError(
                f"{reg.name}() must yield rows as tuples of {len(reg.columns)} values, got a {type(row).__name__}"
            )
        row = tuple(row)
        if len(row) != len(reg.columns):
            raise ValueError(
                f"{reg.name}() returned a row of {len(row)} values; expected "
                f"{len(reg.columns)} ({', '.join(reg.columns)})"
            )
        state.row = row
        state.rowid += 1

    return advance


def _scan_callbacks(set_error: Callable[[_Api, int, str], int]) -> dict[str, Any]:
    """xFilter/xNext: call fn with the statement's arguments and step through its rows."""
    cursors, VCursor, describe, interrupted = _cursors, _VCursor, _describe, _interrupted
    from_value, read_filters, advance = _from_value, _read_filters, _row_advancer()
    OK, ERROR, INTERRUPT = _SQLITE_OK, _SQLITE_ERROR, _SQLITE_INTERRUPT

    def fail(state, e):  # type: ignore[no-untyped-def]
        # ends the cursor's rows and hands the exception's text to SQLite as the error
        if state is None:
            return ERROR
        state.it, state.row = None, None
        if interrupted(e):
            return INTERRUPT
        return set_error(state.reg.api, state.vtab, describe(e))

    def x_filter(cursor, idx_num, idx_str, argc, argv):  # type: ignore[no-untyped-def]
        state = None
        try:
            state = cursors[VCursor.from_address(cursor).key]
            reg = state.reg
            state.it, state.row, state.rowid = None, None, 0
            args: list[Any] = [None] * len(reg.params)
            position = 0
            for p in range(len(reg.params)):
                if idx_num >> p & 1:
                    args[p] = from_value(reg.api, argv[position])
                    position += 1
            state.args = args
            missing = [reg.params[p] for p in range(reg.required) if not idx_num >> p & 1]
            if missing:
                return set_error(reg.api, state.vtab, reg.missing_message(missing))
            constraints = read_filters(reg, idx_str, argv, position) if idx_str else ()
            if constraints:
                result = reg.fn(reg.connection(), *args, filters=constraints)
            else:
                result = reg.fn(reg.connection(), *args)
            if result is None or isinstance(result, (str, bytes)):
                raise TypeError(f"{reg.name}() must return an iterable of rows, got {type(result).__name__}")
            state.it = iter(result)
            advance(state)
            return OK
        except BaseException as e:  # noqa: BLE001 - reported as the SQL error
            return fail(state, e)

    def x_next(cursor):  # type: ignore[no-untyped-def]
        state = None
        try:
            state = cursors[VCursor.from_address(cursor).key]
            advance(state)
            return OK
        except BaseException as e:  # noqa: BLE001 - reported as the SQL error
            return fail(state, e)

    return {"xFilter": _FILTER(x_filter), "xNext": _ONE(x_next)}


def _column_callbacks() -> dict[str, Any]:
    """xColumn: one value of the current row (or an argument, for a hidden column)."""
    cursors, VCursor, describe, set_result = _cursors, _VCursor, _describe, _set_result
    OK, ERROR = _SQLITE_OK, _SQLITE_ERROR

    def x_column(cursor, ctx, i):  # type: ignore[no-untyped-def]
        state = None
        try:
            state = cursors[VCursor.from_address(cursor).key]
            ncol = len(state.reg.columns)
            if i < ncol:
                value = state.row[i]  # type: ignore[index]
            else:
                value = state.args[i - ncol] if i - ncol < len(state.args) else None
            set_result(state.reg.api, ctx, value)
            return OK
        except BaseException as e:  # noqa: BLE001 - reported as the SQL error
            if state is None:
                return ERROR
            names = state.reg.columns + state.reg.params
            name = names[i] if 0 <= i < len(names) else str(i)
            message = f"{state.reg.name}() column {name}: {describe(e)}".encode()
            state.reg.api.result_error(ctx, message, len(message))
            return ERROR

    return {"xColumn": _COLUMN(x_column)}


def _destroy_callback() -> Any:
    """xDestroy of the module's client data: drops the registration (connection closed or
    module replaced)."""
    registrations, by_db, lock = _registrations, _by_db, _lock

    def x_destroy_aux(aux):  # type: ignore[no-untyped-def]
        try:
            with lock:
                reg = registrations.pop(aux or 0, None)
                if reg is not None and by_db.get((reg.db, reg.fold)) == reg.key:
                    del by_db[(reg.db, reg.fold)]
        except:  # noqa: E722 - nothing may escape into C
            pass

    return _DESTROY_AUX(x_destroy_aux)


def _make_module() -> tuple[_Module, Any, tuple[Any, ...]]:
    """The process-wide module struct and its callbacks, pinned for the life of the process."""
    set_error = _error_setter()
    callbacks = {
        **_table_callbacks(),
        **_plan_callbacks(set_error),
        **_cursor_callbacks(),
        **_scan_callbacks(set_error),
        **_column_callbacks(),
    }
    slots = {name: ctypes.cast(cb, _P) for name, cb in callbacks.items()}
    # xCreate NULL: eponymous-only. xDestroy (never called for those) = xDisconnect.
    module = _Module(iVersion=1, xDestroy=slots["xDisconnect"], **slots)
    destroy = _destroy_callback()
    keep = (module, destroy, tuple(callbacks.values()))
    # Pin for the life of the process: SQLite may call these while globals are cleared.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(keep))
    return module, destroy, keep


_MODULE, _DESTROY, _KEEP = _make_module()


def _api(lib: ctypes.CDLL) -> _Api:
    with _lock:
        api = _apis.get(lib._name)
        if api is None:
            api = _apis[lib._name] = _Api(lib)
        return api


def _check_arguments(name: str, columns: list[str], params: list[str], required: int) -> None:
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"table function name must be a non-empty string, not {name!r}")
    if not columns:
        raise ValueError(f"{name}(): needs at least one column")
    if len(params) > MAX_PARAMS:
        raise ValueError(f"{name}(): at most {MAX_PARAMS} parameters, got {len(params)}")
    names = list(columns) + list(params)
    for n in names:
        if not isinstance(n, str) or not n or "\0" in n:
            raise ValueError(f"{name}(): column and parameter names must be non-empty strings, not {n!r}")
    folded = [_fold(n) for n in names]
    duplicates = sorted({n for n, f in zip(names, folded) if folded.count(f) > 1})
    if duplicates:
        raise ValueError(f"{name}(): duplicate column/parameter names: {', '.join(duplicates)}")
    if not 0 <= required <= len(params):
        raise ValueError(f"{name}(): required must be between 0 and {len(params)}, not {required}")


def register_table_function(
    conn: Any,
    name: str,
    fn: Callable[..., Iterable[Sequence[Any]]],
    columns: list[str],
    params: list[str],
    *,
    required: int = 1,
    filters: Sequence[str] = (),
) -> None:
    """Make ``fn`` callable from SQL as ``select * from name(arg, ...)`` on ``conn``.

    ``fn(conn, *args)`` gets one value per parameter (None for a missing trailing one) and
    returns an iterable of rows, each a sequence of ``len(columns)`` values (int, float,
    str, bytes, None, numpy scalars). The parameters are hidden columns that echo the
    call's arguments, so joins such as ``select * from t, name(t.x)`` call ``fn`` once per
    outer row. Registering the same name again on this connection replaces it.

    Args:
        conn: a ``sqlite3`` or ``pysqlite3`` connection (any thread may use it, one at a
            time).
        name: the SQL name of the function.
        fn: called as ``fn(conn, *args)`` for each use.
        columns: the result column names, in the order of each row's values.
        params: the argument names, in call order.
        required: how many leading arguments must be given; fewer is an SQL error
            such as ``similar_images() needs the query argument; call it as
            similar_images(query [, k])``.
        filters: result columns whose WHERE constraints (``=``, ``<``, ``<=``, ``>``,
            ``>=``, ``LIKE``, ``GLOB``, ``IN``) are handed to fn as the keyword argument
            ``filters``, a tuple of ``(column, operator, value)`` (for ``in``, a tuple of
            values), so it can search among the matching rows only. SQLite still checks
            every returned row. fn gets no ``filters`` keyword when none apply.

    Raises:
        ValueError: bad names or ``required``.
        ExtensionError: the connection's SQLite handle can't be found or verified, or the
            function did not work on it after registering.
    """
    columns, params = list(columns), list(params)
    _check_arguments(name, columns, params, required)
    filter_columns = _filter_columns(name, columns, filters)
    try:
        lib = sqlite_library(conn)
        db = connection_handle(conn)
        api = _api(lib)
    except Exception as e:  # noqa: BLE001 - one clear error for every way this fails
        raise ExtensionError(
            f"cannot register table function {name}() on a {type(conn).__module__} connection "
            f"(Python {sys.version.split()[0]}): {_describe(e)}"
        ) from e
    with _lock:
        current = _registrations.get(_by_db.get((db, _fold(name)), 0))
        if current is not None and current.columns == columns and current.params == params:
            # same shape: swap in place, so prepared statements see the new fn too
            current.fn, current.required, current.filters = fn, required, filter_columns
            reg = current
        else:
            reg = _Registration(next(_keys), name, fn, columns, params, required, api, db, conn)
            reg.filters = filter_columns
    if reg is not current:
        if current is not None:
            _expire_statements(conn, name)  # fails, changing nothing, while statements run
        with _lock:
            _registrations[reg.key] = reg
        rc = api.create_module_v2(db, name.encode(), ctypes.addressof(_MODULE), reg.key, _DESTROY)
        if rc != _SQLITE_OK:  # SQLite has already called xDestroy(reg.key)
            _registrations.pop(reg.key, None)
            message = (api.errmsg(db) or b"").decode("utf-8", "replace")
            raise ExtensionError(f"sqlite3_create_module_v2 failed for {name}(): {message} (rc={rc})")
        with _lock:
            if reg.key in _registrations:
                _by_db[(db, reg.fold)] = reg.key
        if current is not None:
            # statements prepared against the old columns are re-prepared on their next run
            _expire_statements(conn, name)
    _self_check(conn, reg)


def _filter_columns(name: str, columns: list[str], filters: Sequence[str]) -> frozenset[int]:
    unknown = [f for f in filters if f not in columns]
    if unknown:
        raise ValueError(f"{name}(): filters must be result columns, not {', '.join(map(repr, unknown))}")
    return frozenset(columns.index(f) for f in filters)


def _expire_statements(conn: Any, name: str) -> None:
    """Mark every prepared statement of ``conn`` for re-preparing.

    SQLite does this whenever a user function is deleted, so one is created and deleted.
    """
    try:
        conn.create_function(_EXPIRE_FUNCTION, 0, _no_op)
        conn.create_function(_EXPIRE_FUNCTION, 0, None)
    except Exception as e:  # noqa: BLE001 - one clear error for every way this fails
        raise ExtensionError(
            f"cannot replace {name}() with different columns now: {_describe(e)} (are "
            "statements of this connection still running? finish or close their cursors)"
        ) from e


def _no_op() -> None:
    return None


def _self_check(conn: Any, reg: _Registration) -> None:
    """The module is listed on this connection and a query that doesn't call fn plans."""
    try:
        try:
            listed = conn.execute(
                "select 1 from pragma_module_list where name = ? collate nocase", [reg.name]
            ).fetchone()
        except Exception:  # noqa: BLE001 - SQLite built without introspection pragmas
            listed = True
        if not listed:
            raise ExtensionError("it is not in pragma_module_list of this connection")
        cursor = conn.execute(f"select * from {_quote(reg.name)} where 0")
        seen = [d[0] for d in cursor.description]
        cursor.fetchall()
        if seen != reg.columns:
            raise ExtensionError(f"it has columns {seen}, expected {reg.columns}")
    except Exception as e:  # noqa: BLE001 - one clear error for every way this fails
        raise ExtensionError(
            f"table function {reg.name}() failed its self-check after registering: {_describe(e)}"
        ) from e


def live_registrations() -> int:
    """How many table function registrations are held (on connections not yet closed)."""
    return len(_registrations)


def live_objects() -> dict[str, int]:
    """Counts of the state held: registrations, connected vtabs, open cursors."""
    return {"registrations": len(_registrations), "vtabs": len(_vtabs), "cursors": len(_cursors)}
