"""Nearest-neighbour search over the vec0 tables, at memory speed.

sqlite-vec's scan is scalar and single-threaded (10-15x behind numpy here), so every
query of the product goes through this layer instead: each vector table is read once
per process into a unit-normalised numpy matrix, cached, and invalidated when the
database's ``generation`` (bumped by every writer, in the same transaction) changes.
The vec0 tables stay the source of truth, so plain sqlite-vec SQL keeps working.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .store import META_TABLE, read_vectors
from .words import unit_rows

# Matrices kept per process; each entry is one table of one database file.
CACHE_ENTRIES = 16
MAX_K = 4096


@dataclass
class Matrix:
    """A vector table in memory: ids and their unit vectors (float32)."""

    ids: np.ndarray
    vectors: np.ndarray
    position: dict[int, int]

    def __len__(self) -> int:
        return len(self.ids)

    def vector(self, item_id: int) -> np.ndarray | None:
        """The unit vector of ``item_id`` or None."""
        i = self.position.get(int(item_id))
        return None if i is None else self.vectors[i]

    def top_k(
        self, query: np.ndarray, k: int, exclude: set[int] | None = None, weights: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest ``(id, cosine distance)`` to unit vector ``query``.

        ``weights`` (per dimension) re-weights both sides before the cosine, as the
        focused search does.
        """
        if len(self.ids) == 0 or k <= 0:
            return []
        if weights is not None:
            m = self.vectors * weights
            norms = np.linalg.norm(m, axis=1)
            norms[norms == 0] = 1
            q = query * weights
            qn = float(np.linalg.norm(q)) or 1.0
            scores = (m @ q) / (norms * qn)
        else:
            scores = self.vectors @ query
        want = min(len(scores), k + (len(exclude) if exclude else 0))
        if want < len(scores):
            part = np.argpartition(-scores, want - 1)[:want]
        else:
            part = np.arange(len(scores))
        order = part[np.argsort(-scores[part], kind="stable")]
        out = []
        for i in order:
            item = int(self.ids[i])
            if exclude and item in exclude:
                continue
            out.append((item, float(1.0 - scores[i])))
            if len(out) >= k:
                break
        return out


_cache: "OrderedDict[tuple[Any, ...], Matrix]" = OrderedDict()
_lock = threading.Lock()


def database_key(conn: sqlite3.Connection) -> str:
    """What identifies the database behind ``conn`` across connections."""
    row = conn.execute("select file from pragma_database_list where name = 'main'").fetchone()
    path = row[0] if row else ""
    # in-memory databases are private to their connection
    return path or f"memory:{id(conn)}"


def generation(conn: sqlite3.Connection) -> int:
    """The database's write generation (0 when never bumped)."""
    try:
        row = conn.execute(f"select value from {META_TABLE} where key = 'generation'").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def matrix(conn: sqlite3.Connection, table: str) -> Matrix:
    """The cached in-memory matrix of vec0 table ``table``."""
    key = (database_key(conn), table, generation(conn))
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    ids, vectors = read_vectors(conn, table)
    m = Matrix(ids, unit_rows(vectors) if len(ids) else vectors, {int(i): n for n, i in enumerate(ids)})
    with _lock:
        for stale in [k for k in _cache if k[:2] == key[:2]]:
            del _cache[stale]
        _cache[key] = m
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return m


def clear_cache() -> None:
    """Forget every cached matrix."""
    with _lock:
        _cache.clear()


def clamp_k(k: Any, default: int = 10) -> int:
    """``k`` as an int in 1..MAX_K (None -> default)."""
    from .errors import QueryError

    if k is None:
        return default
    if isinstance(k, bool) or not isinstance(k, (int, float, str)):
        raise QueryError(f"k must be a whole number, not {type(k).__name__}")
    try:
        value = int(k)
    except (TypeError, ValueError) as e:
        raise QueryError(f"k must be a whole number, not {k!r}") from e
    if value < 1:
        raise QueryError(f"k must be at least 1, not {value}")
    return min(value, MAX_K)
