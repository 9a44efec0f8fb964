"""Keeping each table's stored IVF index in step with its vectors (called by the writers:
ingest, vocabulary, train); readers never write."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch_sqlite.storage.models import delete_model, has_model
from semsearch_sqlite.storage.rows import generation
from semsearch_sqlite.storage.vectors import VEC_TABLES, ChunkRows, count_rows, vec_table_dim
from semsearch_sqlite.vectors import ivf as ann
from semsearch_sqlite.vectors.maths import unit_rows_inplace
from semsearch_sqlite.vectors.matrix import MIN_COVERAGE, Matrix, Positions, forget, load_matrix, remember

if TYPE_CHECKING:
    from semsearch_sqlite.storage.store import Store


# refresh_index retrains when a sample of stored rows shows more than this share rewritten
MAX_REWRITTEN = 0.05


SAMPLE_CHUNKS = 4


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
    have = has_model(conn, name)

    def done(action: str, rows: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"action": action, "table": table, "rows": rows, "seconds": round(time.perf_counter() - t0, 3),
                "config": config or {}}

    rows = 0 if dim is None else count_rows(conn, table)
    if dim is None or rows < ann.MIN_ROWS or rows * dim < floor:
        if have:
            with store.atomic():
                delete_model(conn, name)
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
    forget(conn, table)
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
    remember(conn, table, config["stamp"], built)
    return done("built", rows, config)


def refresh_indexes(store: Store, tables: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """:func:`refresh_index` for each vector table (all of them by default)."""
    return [refresh_index(store, t) for t in (tables or VEC_TABLES)]


def _update(store: Store, table: str, dim: int, stored: ann.StoredIndex) -> tuple[str, dict[str, Any]] | None:
    """Assign new rows to ``stored``'s lists and save; None when it should be retrained."""
    conn = store.conn
    src = ChunkRows.open(conn, table, dim, unit_rows_inplace)
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
