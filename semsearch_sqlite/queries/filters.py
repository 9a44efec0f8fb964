"""Filters inside the search: which images may be results, decided before the top k.

Two forms, one meaning: ``where``, an SQL condition over the ``images`` columns (the
CLI's ``--where``, Python's ``where=``; run read-only), and :class:`Filter` constraints
(what the SQL table functions receive from SQLite's WHERE clause). Both become the set
of allowed ids that :meth:`~semsearch_sqlite.vectors.matrix.Matrix.top_k` searches in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.storage.rows import FILTER_COLUMNS, filtered_image_ids

OPERATORS = ("=", "<", "<=", ">", ">=", "like", "glob", "in")
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


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


def _read_only(action: int, *args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def allowed_ids(conn: sqlite3.Connection, where: str | None = None,
                filters: Sequence[Filter] = ()) -> np.ndarray | None:
    """The sorted ids of the images that pass ``where`` and ``filters`` (None: no filter).

    Raises QueryError for a ``where`` that isn't a read-only condition over ``images``.
    """
    if not (where and where.strip()) and not filters:
        return None
    clauses = [(f.column, f.op, f.value) for f in filters]
    condition = where.strip() if where and where.strip() else None
    if condition is not None and (";" in condition.rstrip(";") or "--" in condition):
        raise QueryError(f"--where {where!r}: give one SQL condition (no ';' or comments), e.g. label = 'dog'")
    try:
        if condition is not None:
            # the condition is the user's SQL: no writes, ATTACH or PRAGMA while it is compiled
            conn.set_authorizer(_read_only)
        try:
            ids = filtered_image_ids(conn, condition, clauses)
        finally:
            if condition is not None:
                conn.set_authorizer(None)
    except sqlite3.DatabaseError as e:
        message = str(e)
        if "not authorized" in message or "prohibited" in message:
            message = "only a read-only condition is allowed"
        if condition is None:
            raise QueryError(f"cannot filter this search: {message} (ingest with this version adds the photo "
                             "metadata columns)") from None
        raise QueryError(
            f"--where {where!r}: {message}; write an SQL condition over the images columns "
            f"({', '.join(FILTER_COLUMNS.values())}), e.g. label = 'dog'"
        ) from None
    return np.asarray(sorted(ids), dtype=np.int64)
