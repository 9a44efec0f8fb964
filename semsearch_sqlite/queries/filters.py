"""Filters inside the search: which images may be results, decided before the top k.

Two forms, one meaning: ``where``, an SQL condition over the ``images`` columns (the
CLI's ``--where``, Python's ``where=``; run read-only), and :class:`Filter` constraints
(what the SQL table functions receive from SQLite's WHERE clause). Both become the set
of allowed ids that :meth:`~semsearch_sqlite.vectors.matrix.Matrix.top_k` searches in.

``where`` comes from whoever calls the library (an app may pass a visitor's text), so it
is one expression (its parentheses close inside it; no ``;`` or comments), compiled under
an authorizer that allows only reads, and run with a time limit (progress handler) and a
size limit on every string or blob it makes (``SQLITE_LIMIT_LENGTH``).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.storage.rows import FILTER_COLUMNS, filtered_image_ids

OPERATORS = ("=", "<", "<=", ">", ">=", "like", "glob", "in")
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
WHERE_TABLES = {"images", "tags"}  # what a condition may read (SQL functions and pages check the rest)
# functions that touch files or the schema, if a build or extension provides them
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
_COMPOUND = re.compile(r"\b(union|intersect|except)\b", re.IGNORECASE)
WHERE_TIME_LIMIT_S = 5.0
WHERE_MAX_BYTES = 10_000_000  # largest string or blob a condition may build
_PROGRESS_STEPS = 10_000  # VM steps between two looks at the clock
_SHOWN = 60  # characters of a condition quoted in an error
_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}


@dataclass(frozen=True)
class Filter:
    """One constraint on a result column: ``label = 'pizza'``, ``taken_at >= '2020'``,
    ``path like 'holiday/%'``, ``image_id in (1, 2, 3)`` (``value`` a tuple)."""

    column: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.column not in FILTER_COLUMNS:
            raise QueryError(f"cannot filter on {self.column!r}; filter columns: {', '.join(FILTER_COLUMNS)}")
        if self.op not in OPERATORS:
            raise QueryError(f"unknown filter operator {self.op!r}; use one of {', '.join(OPERATORS)}")


def _read_only(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    if action == sqlite3.SQLITE_READ:
        allowed = (arg1 or "").lower() in WHERE_TABLES
    elif action == sqlite3.SQLITE_FUNCTION:
        allowed = (arg2 or "").lower() not in _DENIED_FUNCTIONS
    else:
        allowed = action in _ALLOWED_ACTIONS
    return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY


def shorten(text: str) -> str:
    """``text`` quoted for a one-line error: at most ``_SHOWN`` characters, and its length
    when cut."""
    if len(text) <= _SHOWN:
        return repr(text)
    return f"{text[:_SHOWN]!r}... ({len(text):,} characters)"


def _unquoted(condition: str) -> str | None:
    """``condition`` with every quoted string or name emptied (None: one is left open)."""
    out, i = [], 0
    while i < len(condition):
        ch = condition[i]
        if ch in _QUOTES:
            # a doubled quote inside the text ('it''s') is two quoted runs back to back
            end = condition.find(_QUOTES[ch], i + 1)
            if end < 0:
                return None
            out.append(ch + _QUOTES[ch])
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def one_expression(condition: str) -> bool:
    """Whether ``condition`` stays one expression inside ``where (...)``: outside quoted
    text its parentheses never close more than they opened and all close, and it holds
    no ``;``, comment or compound select (``union``, ``intersect``, ``except``)."""
    bare = _unquoted(condition)
    if bare is None or ";" in bare or "--" in bare or "/*" in bare or _COMPOUND.search(bare):
        return False
    depth = 0
    for ch in bare:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _run_bounded(conn: sqlite3.Connection, condition: str, clauses: list[tuple[str, str, Any]]) -> list[int]:
    """:func:`filtered_image_ids` under the read-only authorizer and the time and size limits."""
    deadline = time.monotonic() + WHERE_TIME_LIMIT_S
    conn.set_authorizer(_read_only)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
    old_length = conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, WHERE_MAX_BYTES) if hasattr(conn, "setlimit") else None
    try:
        return filtered_image_ids(conn, condition, clauses)
    finally:
        conn.set_authorizer(None)
        conn.set_progress_handler(None, 0)
        if old_length is not None:
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, old_length)


def _where_error(where: str, message: str) -> QueryError:
    if "not authorized" in message or "prohibited" in message:
        message = f"a condition may only read, and only the {' and '.join(sorted(WHERE_TABLES))} tables"
    elif "interrupted" in message:
        message = f"took longer than {WHERE_TIME_LIMIT_S:g} s, so it was stopped"
    elif "too big" in message:
        message = f"builds a value too big (over {WHERE_MAX_BYTES:,} bytes)"
    if len(message) > 2 * _SHOWN:
        message = message[: 2 * _SHOWN] + "..."
    return QueryError(
        f"--where {shorten(where)}: {message}; write an SQL condition over the images columns "
        f"({', '.join(FILTER_COLUMNS.values())}), e.g. label = 'dog'"
    )


def allowed_ids(
    conn: sqlite3.Connection, where: str | None = None, filters: Sequence[Filter] = ()
) -> np.ndarray | None:
    """The sorted ids of the images that pass ``where`` and ``filters`` (None: no filter).

    Raises QueryError for a ``where`` that isn't a read-only condition over ``images``.
    """
    if not (where and where.strip()) and not filters:
        return None
    clauses = [(f.column, f.op, f.value) for f in filters]
    condition = where.strip().rstrip(";").strip() if where and where.strip() else None
    if condition is not None and not one_expression(condition):
        raise QueryError(
            f"--where {shorten(where or '')}: give one condition (its parentheses closed inside "
            "it; no ';', comments or union), e.g. label = 'dog'"
        )
    try:
        if condition is None:
            ids = filtered_image_ids(conn, None, clauses)
        else:
            ids = _run_bounded(conn, condition, clauses)
    except sqlite3.DatabaseError as e:
        message = str(e)
        if condition is not None:
            raise _where_error(where or "", message) from None
        if "no such column" in message:
            message += " (ingest with this version adds the photo metadata columns)"
        raise QueryError(f"cannot filter this search: {message}") from None
    return np.asarray(sorted(ids), dtype=np.int64)
