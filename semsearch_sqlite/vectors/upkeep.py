"""Keeping each table's stored IVF index in step with its vectors (called by the writers:
ingest, vocabulary, train); readers never write."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch_sqlite.storage.models import delete_model, has_model
from semsearch_sqlite.storage.rows import generation
from semsearch_sqlite.storage.vec0 import (
    VEC_TABLES,
    ChunkRows,
    count_rows,
    drop_code_lists,
    drop_float_rows,
    has_code_lists,
    has_float_rows,
    read_float_rows,
    vec_table_dim,
)
from semsearch_sqlite.vectors import codes, ivf
from semsearch_sqlite.vectors.maths import unit_rows_inplace
from semsearch_sqlite.vectors.matrix import MIN_COVERAGE, Matrix, Positions, forget, load_matrix, remember

if TYPE_CHECKING:
    from semsearch_sqlite.storage.store import Store


# refresh_index retrains when a sample of stored rows shows more than this share rewritten
MAX_REWRITTEN = 0.05


SAMPLE_CHUNKS = 4


def refresh_index(
    store: Store, table: str, *, rebuild: bool = False, min_cells: int | None = None, compact: bool | None = None
) -> dict[str, Any]:
    """Build, update or drop the stored ANN index of vec0 table ``table``.

    Call it once a write to ``table`` has committed (ingest, vocabulary load); it reads
    with its own statements and saves in a short transaction of its own. What it does:

    - nothing for small tables (rows x dims < ``min_cells``: by default
      ``ivf.MIN_CELLS``, ``ivf.MIN_CELLS_WORDS`` for the vocabulary; or fewer than
      ``ivf.MIN_ROWS`` rows): exact search is fast there, and a stale index is dropped;
    - trains and calibrates an index when there is none, when the table has doubled or
      halved since training, when a sample shows many vectors rewritten (a re-embed),
      or with ``rebuild=True`` (seconds to tens of seconds at 1M rows);
    - otherwise assigns the new rows to the existing lists (cheap: only the new
      vectors are read) and saves that;
    - for image tables whose float32 matrix would exceed ``codes.COMPACT_MIN_BYTES``
      (or with ``compact=True``; ``False`` never) it keeps the compact code index and
      the float-row copy of :mod:`.codes` instead, built in one bounded-memory pass
      and updated the same way.

    Returns a summary: ``action`` (``"none"``, ``"dropped"``, ``"built"``,
    ``"updated"``, ``"unchanged"``), ``rows``, ``seconds`` and the index config.
    """
    t0 = time.perf_counter()
    conn = store.conn
    floor = ivf.min_cells_for(table) if min_cells is None else min_cells
    dim = vec_table_dim(conn, table)
    name = ivf.index_name(table)
    have = has_model(conn, name)

    def done(action: str, rows: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "action": action,
            "table": table,
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 3),
            "config": config or {},
        }

    rows = 0 if dim is None else count_rows(conn, table)
    big = (
        dim is not None
        and table in codes.CODE_TABLES
        and (codes.wants_codes(rows, dim) if compact is None else compact)
    )
    if big and rows >= ivf.MIN_ROWS:
        assert dim is not None
        if have:  # the float index isn't read any more
            with store.atomic():
                delete_model(conn, name)
        action, config = _refresh_codes(store, table, dim, rebuild=rebuild)
        return done(action, rows, config)
    _drop_codes(store, table)
    if dim is None or rows < ivf.MIN_ROWS or rows * dim < floor:
        if have:
            with store.atomic():
                delete_model(conn, name)
            return done("dropped", rows)
        return done("none", rows)
    stored = ivf.load_index(conn, table, dim) if have and not rebuild else None
    if stored is not None:
        n_trained = int(stored.config.get("n_trained", len(stored.ids)) or 1)
        grown = rows >= ivf.RETRAIN_GROWTH * n_trained or rows * ivf.RETRAIN_GROWTH <= n_trained
        result = None if grown else _update(store, table, dim, stored)
        if result is not None:
            return done(result[0], rows, result[1])
    return done("built", rows, _train_index(store, table, dim))


def _drop_codes(store: Store, table: str) -> None:
    """Back to the float matrix: drop the compact code index of a table no longer big."""
    conn = store.conn
    if has_model(conn, codes.codes_name(table)) or has_code_lists(conn, table) or has_float_rows(conn, table):
        with store.atomic():
            delete_model(conn, codes.codes_name(table))
            drop_code_lists(conn, table)
            drop_float_rows(conn, table)
        forget(conn, table)


def _train_index(store: Store, table: str, dim: int) -> dict[str, Any]:
    """(Re)train the IVF index on the whole table, save it, and keep what was built for this
    process's next query. Returns the saved config."""
    conn = store.conn
    forget(conn, table)  # this process's cached copy goes first: memory
    m = load_matrix(conn, table, use_index=False)
    trained = ivf.train(m.vectors)
    fps = m.vectors @ ivf.fingerprint_probe(dim)
    config = {
        **trained.config,
        "generation": generation(conn),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with store.atomic():
        config = ivf.save_index(conn, table, trained.centroids, m.ids, trained.labels, fps, config)
    # keep what we built for this process's next query
    order, offsets = ivf.layout(trained.labels, len(trained.centroids))
    ids = m.ids[order]
    vectors = m.vectors[order]
    del m
    built = Matrix(ids, vectors, Positions(ids), ivf.IVF(trained.centroids, offsets, trained.nprobe, config))
    remember(conn, table, config["stamp"], built)
    return config


def refresh_indexes(store: Store, tables: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """:func:`refresh_index` for each vector table (all of them by default)."""
    return [refresh_index(store, t) for t in (tables or VEC_TABLES)]


def _update(store: Store, table: str, dim: int, stored: ivf.StoredIndex) -> tuple[str, dict[str, Any]] | None:
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
    probe = ivf.fingerprint_probe(dim)
    try:
        rewritten = np.abs(src.read_rows(sample) @ probe - fps[sample]) > ivf.FINGERPRINT_TOLERANCE
        if rewritten.mean() > MAX_REWRITTEN:
            return None
        unknown = np.flatnonzero(labels < 0)
        new_fps = fps.copy()
        if len(unknown):
            x = src.read_rows(unknown)
            labels[unknown] = ivf.assign(x, stored.centroids)
            new_fps[unknown] = x @ probe
    except sqlite3.DatabaseError:
        return None
    if len(unknown) == 0 and len(src.ids) == len(stored.ids):
        return "unchanged", stored.config
    config = {k: v for k, v in stored.config.items() if k not in ("stamp", "count")}
    config["generation"] = generation(conn)
    with store.atomic():
        config = ivf.save_index(conn, table, stored.centroids, src.ids, labels, new_fps, config)
    return "updated", config


def _refresh_codes(store: Store, table: str, dim: int, *, rebuild: bool) -> tuple[str, dict[str, Any]]:
    """Build or update ``table``'s code index and float-row copy; (action, config)."""
    conn = store.conn
    stored = None if rebuild else codes.load_code_index(conn, table, dim)
    copy_ok = has_float_rows(conn, table)
    if stored is not None and copy_ok:
        result = _update_codes(store, table, dim, stored)
        if result is not None:
            return result
    forget(conn, table)  # this process's copy goes first: memory
    if copy_ok:  # rewritten whole: its pages are reused instead of the file growing
        with store.atomic():
            drop_float_rows(conn, table)
    idx, config = codes.build(store, table, dim)
    with store.atomic():
        config = codes.save_code_index(conn, table, idx, config)
    return "built", config


def _update_codes(store: Store, table: str, dim: int, stored: codes.CodeIndex) -> tuple[str, dict[str, Any]] | None:
    """Code the new rows into ``stored``'s lists, drop the deleted ones and save the lists
    that changed; None when it should be rebuilt (grown or shrunk 2x, vectors
    rewritten, or the float-row copy out of step)."""
    conn = store.conn
    src = ChunkRows.open(conn, table, dim, unit_rows_inplace)
    if src is None:
        return None
    n_trained = int(stored.config.get("n_trained", len(stored.ids)) or 1)
    n = len(src.ids)
    if n >= ivf.RETRAIN_GROWTH * n_trained or n * ivf.RETRAIN_GROWTH <= n_trained:
        return None
    known = np.isin(src.ids, stored.ids)
    if known.mean() < MIN_COVERAGE:
        return None
    # the codes of a few random chunks' stored rows: were their vectors rewritten?
    rng = np.random.default_rng()
    chunk_of = src.chunk_of(np.arange(n))
    known_chunks = np.unique(chunk_of[known])
    picked = rng.choice(known_chunks, min(len(known_chunks), SAMPLE_CHUNKS), replace=False)
    sample = np.flatnonzero(np.isin(chunk_of, picked) & known)
    try:
        order = np.argsort(stored.ids)
        at = order[np.searchsorted(stored.ids[order], src.ids[sample])]
        x = src.read_rows(sample)
        differ = (codes.encode(x, stored.threshold) != stored.codes[at]).any(axis=1)
        if differ.mean() > MAX_REWRITTEN:
            return None
        # the writers keep the float copy in step; the same sample checks it did (its
        # whole id list would mean reading the whole copy), to the copy's int16 rounding
        found, copy = read_float_rows(conn, table, src.ids[sample], dim, fallback=False)
        if len(found) != len(sample) or not np.allclose(
            unit_rows_inplace(np.array(copy[np.argsort(found)], dtype=np.float32)),
            x[np.argsort(src.ids[sample])],
            atol=1e-3,
        ):
            return None
        new_rows = np.flatnonzero(~known)
        gone = np.setdiff1d(stored.ids, src.ids)
        if len(new_rows) == 0 and len(gone) == 0:
            return "unchanged", stored.config
        x = src.read_rows(new_rows) if len(new_rows) else None
    except sqlite3.DatabaseError:
        return None
    idx, changed = codes.with_rows(stored, src.ids[new_rows], x, gone)
    config = {k: v for k, v in stored.config.items() if k not in ("stamp", "count")}
    config["generation"] = generation(conn)
    with store.atomic():
        config = codes.save_code_index(conn, table, idx, config, changed=changed)
    return "updated", config
