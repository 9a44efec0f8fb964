"""Nearest-neighbour search over the vec0 tables, at memory speed.

sqlite-vec's scan is scalar and single-threaded (10-15x behind numpy here), so every
query of the product goes through this layer instead: each vector table is read once
per process into a unit-normalised numpy matrix, cached, and invalidated when the
database's ``generation`` (bumped by every writer), anyone else's change to the file
(:mod:`semsearch_sqlite.storage.changes`) or its stored index changes. The vec0 tables
stay the source of truth, so plain sqlite-vec SQL keeps working.

Each query picks its strategy (:meth:`Matrix.top_k`): exact (one BLAS matrix-vector
product) for small tables, weighted queries, large ``k`` and whenever
``SEMSEARCH_EXACT=1`` or ``exact=True``; otherwise the table's IVF index
(:mod:`.ivf`), stored in the database by :func:`.upkeep.refresh_index` and
calibrated to keep recall@10 >= 0.95. Readers never write: a reader that finds no
fitting stored index searches exactly.

Image tables too big for a float matrix (over ``codes.COMPACT_MIN_BYTES``: 2 GiB, e.g.
1M x 4096-d) are held as a :class:`.codes.CompactMatrix` instead: 1-bit codes in
memory, exact rescoring from the file (:mod:`.codes`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.changes import cache_version
from semsearch_sqlite.storage.models import model_config
from semsearch_sqlite.storage.rows import database_key
from semsearch_sqlite.storage.vec0 import RowSource, count_rows, open_rows, vec_table_dim
from semsearch_sqlite.vectors import codes
from semsearch_sqlite.vectors.codes import CompactMatrix
from semsearch_sqlite.vectors.ivf import (  # noqa: F401 - part of this module's face
    BLOCK_CELLS,
    EXACT_ENV,
    FINGERPRINT_TOLERANCE,
    IVF,
    RETRAIN_GROWTH,
    StoredIndex,
    assign,
    exact_forced,
    fingerprint_probe,
    index_name,
    layout,
    load_index,
)
from semsearch_sqlite.vectors.maths import unit_rows_inplace

if TYPE_CHECKING:
    pass

# Matrices kept per process; each entry is one table of one database file.
CACHE_ENTRIES = 16
MAX_K = 4096
# a stored index is used while it knows at least this share of the rows
MIN_COVERAGE = 1 / RETRAIN_GROWTH
# a filtered query over at most this many candidates scores them all (exact and cheap)
SUBSET_EXACT_MAX = 20_000
# a larger filtered query asks the index for this many times the share it needs
SHORTLIST_SLACK = 3.0


class Positions(Mapping[int, int]):
    """id -> row number of a matrix, without a Python dict (8 bytes per row)."""

    def __init__(self, ids: np.ndarray):
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            k = np.int64(int(key))
        except (TypeError, ValueError, OverflowError):
            return default
        i = int(np.searchsorted(self._sorted, k))
        if i < len(self._sorted) and self._sorted[i] == k:
            return int(self._order[i])
        return default

    def __getitem__(self, key: Any) -> int:
        i = self.get(key)
        if i is None:
            raise KeyError(key)
        return int(i)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The row numbers of those of ``ids`` that are present (vectorised :meth:`get`)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(self._sorted) == 0 or len(ids) == 0:
            return np.zeros(0, dtype=np.int64)
        i = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return self._order[i[self._sorted[i] == ids]].astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self._sorted)

    def __len__(self) -> int:
        return len(self._sorted)


@dataclass
class Matrix:
    """A vector table in memory: ids and their unit vectors (float32).

    Rows are in index order (grouped by IVF list), not id order: use ``position`` /
    :meth:`vector` to find an id's row. ``ivf`` is None when queries are exact.
    """

    ids: np.ndarray
    vectors: np.ndarray
    position: Mapping[int, int]
    ivf: IVF | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Dimensions of the vectors."""
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def vector(self, item_id: int) -> np.ndarray | None:
        """The unit vector of ``item_id`` or None."""
        i = self.position.get(int(item_id))
        return None if i is None else self.vectors[i]

    def strategy(self, k: int, exclude: set[int] | None = None, weights: Any = None, exact: bool | None = None) -> str:
        """``"exact"`` or ``"ivf"``: what :meth:`top_k` would do with these arguments."""
        want = min(len(self.ids), k + (len(exclude) if exclude else 0))
        if self.ivf is None or weights is not None or exact or (exact is None and exact_forced()):
            return "exact"
        return "exact" if self.ivf.probes_for(want) is None else "ivf"

    def top_k(
        self,
        query: np.ndarray,
        k: int,
        exclude: set[int] | None = None,
        weights: np.ndarray | None = None,
        exact: bool | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest ``(id, cosine distance)`` to unit vector ``query``.

        ``weights`` (per dimension) re-weights both sides before the cosine, as the
        focused search does (always exact). ``exact=True`` skips the index, ``False``
        uses it even when ``SEMSEARCH_EXACT`` is set; None follows the environment.
        ``allowed`` (ids) restricts the candidates before the top k is taken.
        """
        n = len(self.ids)
        if n == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        want = min(n, k + (len(exclude) if exclude else 0))
        rows: np.ndarray
        if allowed is not None:
            rows, found = self._top_allowed(q, want, allowed, weights, exact)
        elif weights is not None:
            scores = self._weighted_scores(q, np.asarray(weights, dtype=np.float32).reshape(-1))
            rows, found = _best(scores, want)
        else:
            rows = np.zeros(0, dtype=np.int64)
            if self.strategy(k, exclude, None, exact) == "ivf":
                assert self.ivf is not None
                rows, found = self.ivf.search(self.vectors, q, want, self.ivf.probes_for(want) or self.ivf.nlist)
            if len(rows) < want:  # exact (or the probed lists held too few rows)
                rows, found = _best(self.vectors @ q, want)
        # best first; ties by id so that the answer doesn't depend on the row order
        order = np.lexsort((self.ids[rows], -found))
        items, distances = self.ids[rows[order]], 1.0 - found[order]
        if exclude:  # vectorised: k may be in the thousands
            keep = ~np.isin(items, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
            items, distances = items[keep], distances[keep]
        return list(zip(items[:k].tolist(), distances[:k].tolist()))

    def _top_allowed(
        self, q: np.ndarray, want: int, allowed: np.ndarray, weights: np.ndarray | None, exact: bool | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``want`` rows among the ids ``allowed``: all of them scored when they are
        few, else the index's shortlist, widened by how rare they are."""
        subset = (
            self.position.rows_of(allowed)
            if isinstance(self.position, Positions)
            else np.array([self.position[int(i)] for i in allowed if int(i) in self.position], dtype=np.int64)
        )
        if len(subset) == 0:
            return subset, np.zeros(0, dtype=np.float32)
        want = min(want, len(subset))
        if weights is None and len(subset) > SUBSET_EXACT_MAX and self.strategy(want, None, None, exact) == "ivf":
            assert self.ivf is not None
            n = len(self.ids)
            shortlist = min(n, int(want * n / len(subset) * SHORTLIST_SLACK) + 1)
            probes = self.ivf.probes_for(shortlist)
            if probes is not None:
                rows, found = self.ivf.search(self.vectors, q, shortlist, probes)
                keep = np.isin(rows, subset)
                if keep.sum() >= want:
                    rows, found = rows[keep], found[keep]
                    best = _best(found, want)[0]
                    return rows[best], found[best]
        if weights is not None:
            scores = self._weighted_scores(q, np.asarray(weights, dtype=np.float32).reshape(-1))[subset]
        else:
            scores = self.vectors[subset] @ q
        best, found = _best(scores, want)
        return subset[best], found

    def _weighted_scores(self, q: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Cosine of ``q * w`` with every ``row * w``, in blocks (no full-size copy)."""
        qw = q * w
        qn = float(np.linalg.norm(qw)) or 1.0
        qww = qw * w
        w2 = w * w
        x = self.vectors
        scores = np.empty(len(x), dtype=np.float32)
        step = max(256, BLOCK_CELLS // max(x.shape[1], 1))
        for s in range(0, len(x), step):
            blk = x[s : s + step]
            den = np.sqrt((blk * blk) @ w2)
            den[den == 0] = 1
            scores[s : s + len(blk)] = (blk @ qww) / (den * qn)
        return scores


def _best(scores: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``want`` largest scores (unsorted) and those scores, plus any row tied
    with the last of them: which of several equal scores make the cut is then decided by
    the caller's id order, so ``k=4`` is always the start of ``k=15`` (paging relies on it)."""
    n = len(scores)
    if want < n:
        rows = np.argpartition(scores, n - want)[n - want :]
        cut = scores[rows].min()
        if np.count_nonzero(scores >= cut) > want:
            rows = np.flatnonzero(scores >= cut)
    else:
        rows = np.arange(n)
    return rows, scores[rows]


_cache: ProcessCache[Matrix | CompactMatrix] = ProcessCache(CACHE_ENTRIES)


def index_stamp(conn: sqlite3.Connection, table: str) -> str | None:
    """A token that changes whenever ``table``'s stored index is rewritten (None: none)."""
    config = model_config(conn, index_name(table)) or model_config(conn, codes.codes_name(table))
    return None if config is None else str(config.get("stamp"))


def matrix(conn: sqlite3.Connection, table: str) -> Matrix | CompactMatrix:
    """The cached searchable matrix of vec0 table ``table``: the unit vectors in memory
    (with their IVF index, if stored), or for big image tables their compact codes
    (:mod:`.codes`: a few hundred bytes per vector; exact rescoring from the file)."""
    db = database_key(conn)
    key = (db, table, cache_version(conn, db), index_stamp(conn, table))
    return _cache.get_or_load(key, lambda: _load(conn, table, db), group=(db, table))


def compact_path(conn: sqlite3.Connection, table: str, dim: int | None) -> bool:
    """Whether ``table`` is searched through compact codes: an image table of a file
    (not ``:memory:``) with a stored code index, or too big for a float matrix."""
    if dim is None or table not in codes.CODE_TABLES or database_key(conn).startswith("memory:"):
        return False
    return model_config(conn, codes.codes_name(table)) is not None or codes.wants_codes(count_rows(conn, table), dim)


def _load(conn: sqlite3.Connection, table: str, db: str) -> Matrix | CompactMatrix:
    dim = vec_table_dim(conn, table)
    if compact_path(conn, table, dim):
        assert dim is not None
        return codes.load_compact(conn, table, dim, db)
    return load_matrix(conn, table)


def remember(conn: sqlite3.Connection, table: str, stamp: str | None, m: Matrix | CompactMatrix) -> None:
    """Cache ``m`` as the current matrix of ``table`` (a writer that just built it)."""
    db = database_key(conn)
    _cache.put((db, table, cache_version(conn, db), stamp), m, group=(db, table))


def forget(conn: sqlite3.Connection, table: str) -> None:
    """Drop this process's cached matrix of ``table`` (frees its memory)."""
    _cache.forget((database_key(conn), table))


def cached_tables(db_key: str) -> set[str]:
    """The tables of the database ``db_key`` (see ``storage.rows.database_key``) cached now."""
    return {key[1] for key in _cache.keys() if key[0] == db_key}


def clear_cache() -> None:
    """Forget every cached matrix."""
    _cache.clear()


def load_matrix(conn: sqlite3.Connection, table: str, *, use_index: bool = True, fast: bool = True) -> Matrix:
    """Read ``table`` into a :class:`Matrix` (uncached; never writes).

    Uses the stored index when it knows at least half of the rows: rows it doesn't know
    (or whose vectors were rewritten) are assigned to their nearest list in memory.
    """
    dim = vec_table_dim(conn, table)
    if dim is None:
        return Matrix(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), Positions(np.zeros(0, np.int64)))
    for attempt in range(3):
        src = open_rows(conn, table, dim, fast=fast and attempt < 2, transform=unit_rows_inplace)
        stored = load_index(conn, table, dim) if use_index else None
        m = _assemble(src, stored)
        if m is not None:
            return m
    raise RuntimeError("unreachable: the SQL reader never reports a change")  # pragma: no cover


def _assemble(src: RowSource, stored: StoredIndex | None) -> Matrix | None:
    """The matrix of ``src`` laid out by ``stored`` (None: the table changed mid-read)."""
    ids, dim, n = src.ids, src.dim, len(src.ids)
    labels = fps = None
    if stored is not None and n:
        labels, fps = stored.lookup(ids)
        if (labels >= 0).mean() < MIN_COVERAGE:
            labels = None
    if labels is None:
        out = np.empty((n, dim), dtype=np.float32)
        if not src.fill(out, None):
            return None
        return Matrix(ids, out, Positions(ids))
    assert stored is not None and fps is not None
    unknown = np.flatnonzero(labels < 0)
    try:
        if len(unknown):
            labels[unknown] = assign(src.read_rows(unknown), stored.centroids)
    except sqlite3.DatabaseError:
        return None
    order, offsets = layout(labels, len(stored.centroids))
    targets = np.empty(n, dtype=np.int64)
    targets[order] = np.arange(n)
    out = np.empty((n, dim), dtype=np.float32)
    if not src.fill(out, targets):
        return None
    ids, labels, fps = ids[order], labels[order], fps[order]
    # rows whose vector changed since the index was saved go to their nearest list now
    changed = np.flatnonzero(np.abs(out @ fingerprint_probe(dim) - fps) > FINGERPRINT_TOLERANCE)
    changed = changed[~np.isnan(fps[changed])]
    if len(changed):
        new = assign(out[changed], stored.centroids)
        moved = new != labels[changed]
        if moved.any():
            labels[changed] = new
            order, offsets = layout(labels, len(stored.centroids))
            ids, out = ids[order], out[order]
    ivf = IVF(stored.centroids, offsets, stored.nprobe, dict(stored.config))
    return Matrix(ids, out, Positions(ids), ivf)


def clamp_k(k: Any, default: int = 10) -> int:
    """``k`` as an int in 1..MAX_K (None -> default).

    Accepts ints, whole finite floats (SQLite hands ``5.0`` over as a float) and ASCII
    digit strings; anything else is a QueryError naming the value.
    """
    if k is None:
        return default
    if isinstance(k, bool) or not isinstance(k, (int, float, str, np.integer, np.floating)):
        raise QueryError(f"k must be a whole number, not {type(k).__name__}")
    if isinstance(k, (float, np.floating)):
        if not np.isfinite(k) or float(k) != int(k):
            raise QueryError(f"k must be a whole number, not {float(k)!r}")
        value = int(k)
    elif isinstance(k, str):
        text = k.strip()
        if not (text.isascii() and text.lstrip("+-").isdigit()):
            raise QueryError(f"k must be a whole number, not {k!r}")
        value = int(text)
    else:
        value = int(k)
    if value < 1:
        raise QueryError(f"k must be at least 1, not {value}")
    return min(value, MAX_K)
