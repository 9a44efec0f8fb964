"""Which databases hold a semsearch store, and what the plugin does to their connections.

``prepare`` loads sqlite-vec and the SQL functions on every connection Datasette opens
and notes each database's vec0 shadow tables, which are then hidden: by ``get_metadata``
on Datasette 0.65, by :func:`startup` writing Datasette's config on 1.0a.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import threading
import weakref
from typing import Any

from semsearch_sqlite.storage.rows import META_TABLE, table_definitions

log = logging.getLogger(__name__)


# per Datasette instance: database name -> (holds a semsearch store, its vec0 shadow
# tables); filled by prepare_connection and startup, read synchronously by render_cell
# and get_metadata
_tables: weakref.WeakKeyDictionary[Any, dict[str, tuple[bool, list[str]]]] = weakref.WeakKeyDictionary()
_tables_lock = threading.Lock()
_warned: set[str] = set()


def prepare(conn: sqlite3.Connection, database: str, datasette: Any = None) -> None:
    """Load sqlite-vec and register the semsearch SQL functions on ``conn``; never raises."""
    if database == "_internal":
        return
    problem = schema_problem(conn, database)
    if problem:
        _warn_once(f"schema:{database}", "semsearch: skipping database %s: %s", database, problem)
    try:
        from semsearch_sqlite.sqlite.extensions import load_sqlite_vec

        load_sqlite_vec(conn)
    except Exception as e:  # noqa: BLE001 - a failure here would turn every request into a 500
        _warn_once("vec", "semsearch: sqlite-vec unavailable on database %s (%s)", database, e)
    try:
        from semsearch_sqlite.queries.sqlfuncs import register_functions

        register_functions(conn, refuse=problem)
    except Exception as e:  # noqa: BLE001
        _warn_once("functions", "semsearch: SQL functions unavailable on database %s (%s)", database, e)
    try:
        if datasette is not None:
            _note_tables(conn, database, datasette)
    except Exception as e:  # noqa: BLE001
        _warn_once("tables", "semsearch: cannot list the tables of database %s (%s)", database, e)


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def schema_problem(conn: sqlite3.Connection, database: str) -> str | None:
    """Why the plugin must skip ``database`` (a schema version this package doesn't
    know, such as one from a newer version), or None."""
    from semsearch_sqlite.errors import SchemaVersionError
    from semsearch_sqlite.storage.store import schema_check

    try:
        schema_check(conn, database)
    except SchemaVersionError as e:
        return str(e)
    except Exception:  # noqa: BLE001 - not readable as a store: the other checks say so
        return None
    return None


async def skipped_because(db: Any) -> str | None:
    """:func:`schema_problem` of the Datasette ``Database`` ``db``, now."""
    try:
        return await db.execute_fn(lambda conn: schema_problem(conn, db.name))
    except Exception:  # noqa: BLE001 - an unreadable database is simply not ours
        return None


def _note_tables(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    rows = table_definitions(conn)
    ours = any(name == META_TABLE for name, _ in rows) and schema_problem(conn, database) is None
    vec_tables = [name for name, sql in rows if sql and "using vec0" in " ".join(sql.lower().split())]
    shadow = sorted(
        name
        for name, sql in rows
        if any(name.startswith(v + "_") for v in vec_tables) and not (sql or "").lower().startswith("create virtual")
    )
    with _tables_lock:
        _tables.setdefault(datasette, {})[database] = (ours, shadow)
    if ours:
        from semsearch_sqlite.queries.search import warm

        warm(conn)


def _known_tables(datasette: Any) -> dict[str, tuple[bool, list[str]]]:
    with _tables_lock:
        return dict(_tables.get(datasette, {}))


def is_ours(datasette: Any, database: str) -> bool:
    """Whether ``database`` held a semsearch store when its connection was prepared
    (synchronous, for ``render_cell``)."""
    return _known_tables(datasette).get(database, (False, []))[0]


async def is_semsearch(db: Any) -> bool:
    """Whether the Datasette ``Database`` ``db`` holds a semsearch store now."""
    try:
        return bool(await db.table_exists(META_TABLE))
    except Exception:  # noqa: BLE001 - an unreadable database is simply not ours
        return False


async def startup(datasette: Any) -> None:
    """Find each database's vec0 shadow tables; on Datasette 1.0a mark them hidden in
    its config (1.0a hides SQLite shadow tables itself, but sqlite-vec 0.1.x doesn't
    declare its tables as shadow tables, and 1.0a has no ``get_metadata`` hook)."""
    for name, db in list(datasette.databases.items()):
        if name == "_internal":
            continue
        try:
            await db.execute_fn(lambda conn, name=name: _note_tables(conn, name, datasette))
        except Exception as e:  # noqa: BLE001 - never stop Datasette from starting
            _warn_once("tables", "semsearch: cannot list the tables of database %s (%s)", name, e)
    config = getattr(datasette, "config", None)
    shadow = {name: tables for name, (_, tables) in _known_tables(datasette).items() if tables}
    if hasattr(datasette, "allowed") and shadow and (config is None or isinstance(config, dict)):
        config = copy.deepcopy(config or {})  # the caller's dict stays as it was
        for name, tables in shadow.items():
            db_config = config.setdefault("databases", {}).setdefault(name, {})
            for table in tables:
                db_config.setdefault("tables", {}).setdefault(table, {}).setdefault("hidden", True)
        datasette.config = config


def hidden_tables_metadata(datasette: Any, database: str | None = None) -> dict[str, Any]:
    """``get_metadata`` (Datasette 0.65): mark vec0 shadow tables hidden.

    Datasette 1.0a has no ``get_metadata`` hook; :func:`startup` does it there.
    """
    known = _known_tables(datasette)
    names = [database] if database is not None else list(known)
    databases = {
        name: {"tables": {t: {"hidden": True} for t in known[name][1]}} for name in names if known.get(name, (0, []))[1]
    }
    return {"databases": databases} if databases else {}
