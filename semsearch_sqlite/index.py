"""Nearest-neighbour search over the vec0 tables, at memory speed.

sqlite-vec's scan is scalar and single-threaded (10-15x behind numpy here), so every
query of the product goes through this layer instead: each vector table is read once
per process into a unit-normalised numpy matrix, cached, and invalidated when the
database's ``generation`` (bumped by every writer, in the same transaction) or its
stored index changes. The vec0 tables stay the source of truth, so plain sqlite-vec
SQL keeps working.

Each query picks its strategy (:meth:`Matrix.top_k`): exact (one BLAS matrix-vector
product) for small tables, weighted queries, large ``k`` and whenever
``SEMSEARCH_EXACT=1`` or ``exact=True``; otherwise the table's IVF index
(:mod:`semsearch_sqlite.ann`), stored in the database by :func:`refresh_index` and
calibrated to keep recall@10 >= 0.95. Readers never write: a reader that finds no
fitting stored index searches exactly.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import ann
from .store import META_TABLE, vec_table_dim

if TYPE_CHECKING:
    from .store import Store

# Matrices kept per process; each entry is one table of one database file.
CACHE_ENTRIES = 16
MAX_K = 4096
# set to 1 to make every query exact (the ``exact=`` argument does it per query)
EXACT_ENV = "SEMSEARCH_EXACT"
# a stored index is used while it knows at least this share of the rows
MIN_COVERAGE = 1 / ann.RETRAIN_GROWTH
# refresh_index retrains when a sample of stored rows shows more than this share rewritten
MAX_REWRITTEN = 0.05
SAMPLE_CHUNKS = 4


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

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self._sorted)

    def __len__(self) -> int:
        return len(self._sorted)


def exact_forced() -> bool:
    """Whether ``SEMSEARCH_EXACT`` asks for exact search everywhere."""
    return os.environ.get(EXACT_ENV, "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class Matrix:
    """A vector table in memory: ids and their unit vectors (float32).

    Rows are in index order (grouped by IVF list), not id order: use ``position`` /
    :meth:`vector` to find an id's row. ``ivf`` is None when queries are exact.
    """

    ids: np.ndarray
    vectors: np.ndarray
    position: Mapping[int, int]
    ivf: ann.IVF | None = None

    def __len__(self) -> int:
        return len(self.ids)

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
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest ``(id, cosine distance)`` to unit vector ``query``.

        ``weights`` (per dimension) re-weights both sides before the cosine, as the
        focused search does (always exact). ``exact=True`` skips the index, ``False``
        uses it even when ``SEMSEARCH_EXACT`` is set; None follows the environment.
        """
        n = len(self.ids)
        if n == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        want = min(n, k + (len(exclude) if exclude else 0))
        rows: np.ndarray
        if weights is not None:
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
        out = []
        for j in order.tolist():
            item = int(self.ids[rows[j]])
            if exclude and item in exclude:
                continue
            out.append((item, float(1.0 - found[j])))
            if len(out) >= k:
                break
        return out

    def _weighted_scores(self, q: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Cosine of ``q * w`` with every ``row * w``, in blocks (no full-size copy)."""
        qw = q * w
        qn = float(np.linalg.norm(qw)) or 1.0
        qww = qw * w
        w2 = w * w
        x = self.vectors
        scores = np.empty(len(x), dtype=np.float32)
        step = max(256, ann.BLOCK_CELLS // max(x.shape[1], 1))
        for s in range(0, len(x), step):
            blk = x[s : s + step]
            den = np.sqrt((blk * blk) @ w2)
            den[den == 0] = 1
            scores[s : s + len(blk)] = (blk @ qww) / (den * qn)
        return scores


def _best(scores: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``want`` largest scores (unsorted) and those scores."""
    n = len(scores)
    if want < n:
        rows = np.argpartition(scores, n - want)[n - want :]
    else:
        rows = np.arange(n)
    return rows, scores[rows]


_cache: OrderedDict[tuple[Any, ...], Matrix] = OrderedDict()
_lock = threading.Lock()
_load_locks: dict[tuple[str, str], threading.Lock] = {}


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


def index_stamp(conn: sqlite3.Connection, table: str) -> str | None:
    """A token that changes whenever ``table``'s stored index is rewritten (None: none)."""
    try:
        row = conn.execute("select config from models where name = ?", [ann.index_name(table)]).fetchone()
        return None if row is None else str(json.loads(row[0] or "{}").get("stamp"))
    except (sqlite3.Error, ValueError, AttributeError):
        return None


def matrix(conn: sqlite3.Connection, table: str) -> Matrix:
    """The cached in-memory matrix of vec0 table ``table`` (with its index, if stored)."""
    db = database_key(conn)
    key = (db, table, generation(conn), index_stamp(conn, table))
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        load_lock = _load_locks.setdefault((db, table), threading.Lock())
    # one load per table at a time: concurrent first queries share it
    with load_lock:
        with _lock:
            hit = _cache.get(key)
        if hit is None:
            hit = load_matrix(conn, table)
            _remember(key, hit)
    return hit


def _remember(key: tuple[Any, ...], m: Matrix) -> None:
    with _lock:
        for stale in [k for k in _cache if k[:2] == key[:2]]:
            del _cache[stale]
        _cache[key] = m
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget every cached matrix."""
    with _lock:
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
        src = ann.open_rows(conn, table, dim, fast=fast and attempt < 2)
        stored = ann.load_index(conn, table, dim) if use_index else None
        m = _assemble(src, stored)
        if m is not None:
            return m
    raise RuntimeError("unreachable: the SQL reader never reports a change")  # pragma: no cover


def _assemble(src: ann.RowSource, stored: ann.StoredIndex | None) -> Matrix | None:
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
            labels[unknown] = ann.assign(src.read_rows(unknown), stored.centroids)
    except sqlite3.DatabaseError:
        return None
    order, offsets = ann.layout(labels, len(stored.centroids))
    targets = np.empty(n, dtype=np.int64)
    targets[order] = np.arange(n)
    out = np.empty((n, dim), dtype=np.float32)
    if not src.fill(out, targets):
        return None
    ids, labels, fps = ids[order], labels[order], fps[order]
    # rows whose vector changed since the index was saved go to their nearest list now
    changed = np.flatnonzero(np.abs(out @ ann.fingerprint_probe(dim) - fps) > ann.FINGERPRINT_TOLERANCE)
    changed = changed[~np.isnan(fps[changed])]
    if len(changed):
        new = ann.assign(out[changed], stored.centroids)
        moved = new != labels[changed]
        if moved.any():
            labels[changed] = new
            order, offsets = ann.layout(labels, len(stored.centroids))
            ids, out = ids[order], out[order]
    ivf = ann.IVF(stored.centroids, offsets, stored.nprobe, dict(stored.config))
    return Matrix(ids, out, Positions(ids), ivf)


def refresh_index(store: Store, table: str, *, rebuild: bool = False, min_cells: int | None = None) -> dict[str, Any]:
    """Build, update or drop the stored ANN index of vec0 table ``table``.

    Call it once a write to ``table`` has committed (ingest, vocabulary load); it reads
    with its own statements and saves in a short transaction of its own. What it does:

    - nothing for small tables (rows x dims < ``min_cells``: by default
      ``ann.MIN_CELLS``, ``ann.MIN_CELLS_WORDS`` for the vocabulary; or fewer than
      ``ann.MIN_ROWS`` rows): exact search is fast there, and a stale index is dropped;
    - trains and calibrates an index when there is none, when the table has doubled or
      halved since training, when a sample shows many vectors rewritten (a re-embed),
      or with ``rebuild=True`` (seconds to tens of seconds at 1M rows);
    - otherwise assigns the new rows to the existing lists (cheap: only the new
      vectors are read) and saves that.

    Returns a summary: ``action`` (``"none"``, ``"dropped"``, ``"built"``,
    ``"updated"``, ``"unchanged"``), ``rows``, ``seconds`` and the index config.
    """
    t0 = time.perf_counter()
    conn = store.conn
    floor = ann.min_cells_for(table) if min_cells is None else min_cells
    dim = vec_table_dim(conn, table)
    name = ann.index_name(table)
    have = conn.execute("select 1 from models where name = ?", [name]).fetchone() is not None

    def done(action: str, rows: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"action": action, "table": table, "rows": rows, "seconds": round(time.perf_counter() - t0, 3),
                "config": config or {}}

    rows = 0 if dim is None else _count(conn, table)
    if dim is None or rows < ann.MIN_ROWS or rows * dim < floor:
        if have:
            with store.atomic():
                conn.execute("delete from models where name = ?", [name])
            return done("dropped", rows)
        return done("none", rows)
    stored = ann.load_index(conn, table, dim) if have and not rebuild else None
    if stored is not None:
        n_trained = int(stored.config.get("n_trained", len(stored.ids)) or 1)
        grown = rows >= ann.RETRAIN_GROWTH * n_trained or rows * ann.RETRAIN_GROWTH <= n_trained
        result = None if grown else _update(store, table, dim, stored)
        if result is not None:
            return done(result[0], rows, result[1])
    # (re)train on the whole table (this process's cached copy goes first: memory)
    with _lock:
        for stale in [k for k in _cache if k[:2] == (database_key(conn), table)]:
            del _cache[stale]
    m = load_matrix(conn, table, use_index=False)
    trained = ann.train(m.vectors)
    fps = m.vectors @ ann.fingerprint_probe(dim)
    config = {**trained.config, "generation": generation(conn), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with store.atomic():
        config = ann.save_index(conn, table, trained.centroids, m.ids, trained.labels, fps, config)
    # keep what we built for this process's next query
    order, offsets = ann.layout(trained.labels, len(trained.centroids))
    ids = m.ids[order]
    vectors = m.vectors[order]
    del m
    built = Matrix(ids, vectors, Positions(ids), ann.IVF(trained.centroids, offsets, trained.nprobe, config))
    _remember((database_key(conn), table, generation(conn), config["stamp"]), built)
    return done("built", rows, config)


def _count(conn: sqlite3.Connection, table: str) -> int:
    try:  # vec0's id table: a plain b-tree, much cheaper to count than the vec0 table
        return int(conn.execute(f'select count(*) from "{table}_rowids"').fetchone()[0])
    except sqlite3.OperationalError:
        return int(conn.execute(f'select count(*) from "{table}"').fetchone()[0])


def refresh_indexes(store: Store, tables: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """:func:`refresh_index` for each vector table (all of them by default)."""
    from .store import VEC_TABLES

    return [refresh_index(store, t) for t in (tables or VEC_TABLES)]


def _update(store: Store, table: str, dim: int, stored: ann.StoredIndex) -> tuple[str, dict[str, Any]] | None:
    """Assign new rows to ``stored``'s lists and save; None when it should be retrained."""
    conn = store.conn
    src = ann.ChunkRows.open(conn, table, dim)
    if src is None:
        return None
    labels, fps = stored.lookup(src.ids)
    if (labels >= 0).mean() < MIN_COVERAGE:
        return None
    # the stored rows of a few random chunks: were their vectors rewritten (a re-embed)?
    rng = np.random.default_rng()
    chunk_of = src.chunk_of(np.arange(len(src.ids)))
    known_chunks = np.unique(chunk_of[labels >= 0])
    picked = rng.choice(known_chunks, min(len(known_chunks), SAMPLE_CHUNKS), replace=False)
    sample = np.flatnonzero(np.isin(chunk_of, picked) & (labels >= 0))
    probe = ann.fingerprint_probe(dim)
    try:
        rewritten = np.abs(src.read_rows(sample) @ probe - fps[sample]) > ann.FINGERPRINT_TOLERANCE
        if rewritten.mean() > MAX_REWRITTEN:
            return None
        unknown = np.flatnonzero(labels < 0)
        new_fps = fps.copy()
        if len(unknown):
            x = src.read_rows(unknown)
            labels[unknown] = ann.assign(x, stored.centroids)
            new_fps[unknown] = x @ probe
    except sqlite3.DatabaseError:
        return None
    if len(unknown) == 0 and len(src.ids) == len(stored.ids):
        return "unchanged", stored.config
    config = {k: v for k, v in stored.config.items() if k not in ("stamp", "count")}
    config["generation"] = generation(conn)
    with store.atomic():
        config = ann.save_index(conn, table, stored.centroids, src.ids, labels, new_fps, config)
    return "updated", config


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
