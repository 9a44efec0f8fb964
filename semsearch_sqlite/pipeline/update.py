"""Incremental word-space upkeep: after an ingest that added, changed or removed a few
photos, only those photos and the neighbours they touch get new semantic vectors and tags.

A full refit (:func:`~semsearch_sqlite.pipeline.train.refresh_semantic`) rewrites every
photo. Between refits the stored model projects new photos, and the visual neighbour
graph that smoothing used (each photo's SMOOTH_NEIGHBOURS nearest photos and their
cosines) is stored beside the model, so a new photo's effect is local: it is smoothed over
its own neighbours, and the photos whose neighbour lists it enters (or whose neighbour
left) are smoothed again. The model is refit when labels changed enough to matter: a label
appeared or vanished, or more than REFIT_SHARE of the labelled photos changed since the
fit. Until then the results differ from a full rebuild's only by the refit those few
labelled photos would have brought (tests/test_ingest_incremental.py states the tolerance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from semsearch_sqlite.storage.models import SEMANTIC_MODEL, model_config
from semsearch_sqlite.storage.rows import class_probability_blobs, image_ids, label_counts, paths_and_labels
from semsearch_sqlite.storage.store import Store, decode_f32
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL, ChunkRows, read_chunks, read_vectors_by_id
from semsearch_sqlite.vectors.maths import unit_rows

# the model's modules are imported where a photo is projected: a run with nothing to do
# (most re-runs) only reads a few rows and needs none of them

NEIGHBOURS_MODEL = "semantic_neighbours"
SMOOTH_NEIGHBOURS = 10  # model.smoothing.SMOOTH_NEIGHBOURS (tests/test_ingest_incremental.py checks)
# refit once the labelled photos changed (added, removed, relabelled, re-embedded) by more
# than this share of those the model was fitted on
REFIT_SHARE = 0.1
# rows read per statement when fetching a few photos' features by id
BY_ID_BLOCK = 500


@dataclass
class Graph:
    """Each embedded photo's visual neighbours as smoothing used them (ids sorted)."""

    ids: np.ndarray  # [N] image ids
    near: np.ndarray  # [N, k] neighbour image ids, nearest first
    sims: np.ndarray  # [N, k] their cosines (backbone features)
    config: dict[str, Any]


def fit_state(store: Store) -> dict[str, Any] | None:
    """The stored graph's config (fit time, labels then), without its arrays; None if none."""
    return model_config(store.conn, NEIGHBOURS_MODEL)


def semantic_trained_at(store: Store) -> str | None:
    """When the stored word-space model was fitted (its report's ``trained_at``)."""
    report = store.get_meta("semantic_report") or {}
    return report.get("trained_at") if isinstance(report, dict) else None


def refit_reason(store: Store, method: str | None) -> str | None:
    """Why the next update must refit the word-space model (None: the stored one serves)."""
    config = model_config(store.conn, SEMANTIC_MODEL)
    if config is None:
        return "no word-space model yet"
    if not store.vec_dim(VEC_SEMANTIC):
        # dropped with the word space it was in: the stored model maps into that old space
        return "the word space changed"
    if method and method not in ("auto", config.get("method")):
        return f"--method {method}"
    state = fit_state(store)
    if state is None or state.get("trained_at") != semantic_trained_at(store):
        return "no neighbour graph for the stored model"
    fitted: dict[str, int] = state.get("labels", {})
    now = label_counts(store.conn)
    if {k for k, v in now.items() if v} != {k for k, v in fitted.items() if v}:
        return "labels changed"
    changed = sum(abs(now.get(k, 0) - fitted.get(k, 0)) for k in set(now) | set(fitted))
    changed += int(state.get("pending", 0))
    if changed > REFIT_SHARE * max(1, sum(fitted.values())):
        return f"{changed} labelled photos changed"
    return None


def record_fit(store: Store) -> None:
    """After a full refit: store the neighbour graph it smoothed over, with the label
    counts it was fitted on (call inside a transaction)."""
    from semsearch_sqlite.pipeline.train import training_data
    from semsearch_sqlite.vectors.neighbours import nearest_rows

    ids, X, _probs, _labels = training_data(store, None)
    order = np.argsort(ids)
    ids, X = ids[order], X[order]
    k = min(SMOOTH_NEIGHBOURS, max(len(ids) - 1, 0))
    near = nearest_rows(X, k) if len(ids) > 1 else np.zeros((len(ids), 0), np.int64)
    F = unit_rows(np.asarray(X, np.float32))
    sims = np.empty(near.shape, np.float32)
    for s in range(0, len(F), 2048):
        sims[s : s + 2048] = np.einsum("nd,nkd->nk", F[s : s + 2048], F[near[s : s + 2048]])
    config = {
        "trained_at": semantic_trained_at(store),
        "labels": label_counts(store.conn),
        "pending": 0,
        "k": k,
        "count": len(ids),
    }
    _save(store, Graph(ids.astype(np.int64), ids[near].astype(np.int64), sims, config))


def _save(store: Store, graph: Graph) -> None:
    store.save_model(NEIGHBOURS_MODEL, "knn", {"ids": graph.ids, "near": graph.near, "sims": graph.sims}, graph.config)


def _load(store: Store) -> Graph | None:
    got = store.load_model(NEIGHBOURS_MODEL)
    if got is None:
        return None
    a, config = got
    return Graph(a["ids"].astype(np.int64), a["near"].astype(np.int64), a["sims"].astype(np.float32), config)


def vector_ids(store: Store, table: str) -> np.ndarray | None:
    """The ids stored in vec0 table ``table`` (its chunk index only), or None if unreadable."""
    dim = store.vec_dim(table)
    if dim is None:
        return np.zeros(0, np.int64)
    src = ChunkRows.open(store.conn, table, dim)
    return None if src is None else np.sort(src.ids)


def pending_rows(store: Store) -> tuple[np.ndarray, np.ndarray, Graph | None] | None:
    """``(fresh, stale, graph)``: embedded photos without a semantic vector (new or
    re-embedded), graph rows gone or re-embedded, and the graph (None when there is
    nothing to do: it isn't read). None when this can't be told (then refit)."""
    visual, semantic = vector_ids(store, VEC_VISUAL), vector_ids(store, VEC_SEMANTIC)
    state = fit_state(store)
    if visual is None or semantic is None or state is None:
        return None
    if int(state.get("count", -1)) == len(visual) == len(semantic) and np.array_equal(visual, semantic):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), None  # nothing to do: the graph isn't read
    # every id array here is sorted or at least unique: numpy's set operations skip their sorts
    visual = np.intersect1d(visual, np.array(image_ids(store.conn), np.int64), assume_unique=True)
    fresh = np.setdiff1d(visual, semantic, assume_unique=True)
    graph = _load(store)
    if graph is None:
        return None
    gone = np.setdiff1d(graph.ids, visual, assume_unique=True)
    stale = np.union1d(gone, np.intersect1d(graph.ids, fresh, assume_unique=True))
    return fresh, stale, graph


def update_semantic(
    store: Store, tags: int, on_stage: Callable[[str, int | None], None] | None = None
) -> dict[str, Any] | None:
    """Give the fresh photos (:func:`pending_rows`) semantic vectors and tags with the
    stored model, and re-smooth the photos whose neighbours changed, in one transaction.
    Returns counts, or None when it can't (the caller refits)."""
    with store.atomic():
        pending = pending_rows(store)
        if pending is None:
            return None
        fresh, stale, graph = pending
        if graph is None or (len(fresh) == 0 and len(stale) == 0):
            return {"fresh": 0, "resmoothed": 0}  # nothing to do: the model isn't loaded
        from semsearch_sqlite.model.semantic import semantic_model

        model = semantic_model(store.conn)
        if model is None:
            return None
        if on_stage:
            on_stage("finding visual neighbours", None)
        updated = _update_graph(store, graph, fresh, stale)
        if updated is None:
            return None
        graph, touched = updated
        if on_stage:
            on_stage(f"word vectors and tags of {len(touched)} photos", None)
        rows = touched if model.config.get("smoothing") else fresh
        _write_semantics(store, model, graph, rows, tags)
        changed = np.intersect1d(fresh, stale)  # re-embedded: a labelled one counts towards a refit
        if len(changed):
            labelled = paths_and_labels(store.conn)
            graph.config["pending"] = int(graph.config.get("pending", 0)) + sum(
                1 for i in changed.tolist() if labelled.get(i, (None, None))[1]
            )
        graph.config["count"] = len(graph.ids)
        _save(store, graph)
        store.bump_generation()
    return {"fresh": int(len(fresh)), "resmoothed": int(len(rows) - len(fresh))}


def _update_graph(store: Store, graph: Graph, fresh: np.ndarray, stale: np.ndarray) -> tuple[Graph, np.ndarray] | None:
    """The graph with ``stale`` rows out and ``fresh`` rows in, by one exact scan of the
    stored features; and the rows whose neighbour list changed (fresh ones included)."""
    k = graph.near.shape[1]
    keep = ~np.isin(graph.ids, stale)
    ids, near, sims = graph.ids[keep], graph.near[keep], graph.sims[keep]
    broken = np.isin(near, stale).any(axis=1)
    queries = np.concatenate([fresh, ids[broken]])
    total = len(ids) + len(fresh)
    if k < min(SMOOTH_NEIGHBOURS, total - 1):
        return None  # a small collection grew past its lists: the full path rebuilds them
    got, Q = _features(store, queries)
    if len(got) != len(queries):
        return None
    Q = unit_rows(Q)
    best_ids = np.full((len(queries), k), -1, np.int64)
    best_sims = np.full((len(queries), k), -np.inf, np.float32)
    is_fresh = np.arange(len(queries)) < len(fresh)
    kth = sims[:, -1] if k else np.zeros(len(ids), np.float32)
    dim = store.vec_dim(VEC_VISUAL)
    assert dim is not None
    setter = _blas_threads_setter()
    previous = setter(1) if setter else None  # a few query rows: one BLAS thread is 2-8x faster here
    try:
        entering = _scan(store, dim, ids, Q, queries, fresh, is_fresh, kth, broken, best_ids, best_sims)
    finally:
        if setter and previous is not None:
            setter(previous)
    for row, items in entering.items():
        pairs = sorted([*zip(sims[row].tolist(), near[row].tolist()), *items], reverse=True)[:k]
        sims[row] = [s for s, _ in pairs]
        near[row] = [i for _, i in pairs]
    broken_rows = np.flatnonzero(broken)
    near[broken_rows], sims[broken_rows] = best_ids[len(fresh) :], best_sims[len(fresh) :]
    ids = np.concatenate([ids, fresh])
    near = np.vstack([near, best_ids[: len(fresh)]])
    sims = np.vstack([sims, best_sims[: len(fresh)]])
    order = np.argsort(ids)
    touched = np.union1d(queries, graph.ids[keep][list(entering)] if entering else np.zeros(0, np.int64))
    return Graph(ids[order], near[order], sims[order], dict(graph.config)), touched


def _scan(
    store: Store,
    dim: int,
    ids: np.ndarray,
    Q: np.ndarray,
    queries: np.ndarray,
    fresh: np.ndarray,
    is_fresh: np.ndarray,
    kth: np.ndarray,
    broken: np.ndarray,
    best_ids: np.ndarray,
    best_sims: np.ndarray,
) -> dict[int, list[tuple[float, int]]]:
    """One pass over the stored features: each query's running top k (in place), and the
    kept rows whose neighbour lists a fresh photo enters (row -> [(cosine, fresh id)])."""
    entering: dict[int, list[tuple[float, int]]] = {}
    for chunk_ids, block in read_chunks(store.conn, VEC_VISUAL, dim):
        S = (unit_rows(block) @ Q.T).T
        S[chunk_ids[None, :] == queries[:, None]] = -np.inf  # not its own neighbour
        _merge_top(best_ids, best_sims, chunk_ids, S)
        # old rows whose list a fresh photo enters
        at = np.minimum(np.searchsorted(ids, chunk_ids), max(len(ids) - 1, 0))
        old = (ids[at] == chunk_ids) if len(ids) else np.zeros(len(chunk_ids), bool)
        if old.any() and is_fresh.any():
            rows, scores = at[old], S[is_fresh][:, old]
            hit = (scores > kth[rows][None, :]) & ~broken[rows][None, :]
            for qi, cj in zip(*np.nonzero(hit)):
                entering.setdefault(int(rows[cj]), []).append((float(scores[qi, cj]), int(fresh[qi])))
    return entering


def _blas_threads_setter() -> Callable[[int], int] | None:
    """OpenBLAS's per-thread thread count setter, when numpy's OpenBLAS has one."""
    try:
        from semsearch_sqlite.model.effnet_numpy import _blas_thread_setter
    except ImportError:
        return None
    return _blas_thread_setter()


def _merge_top(best_ids: np.ndarray, best_sims: np.ndarray, chunk_ids: np.ndarray, S: np.ndarray) -> None:
    """Keep each row's ``k`` highest of its running best and this chunk's scores (in place)."""
    k = best_ids.shape[1]
    all_sims = np.hstack([best_sims, S])
    all_ids = np.hstack([best_ids, np.broadcast_to(chunk_ids, S.shape)])
    top = np.argsort(-all_sims, axis=1, kind="stable")[:, :k]
    best_sims[:] = np.take_along_axis(all_sims, top, axis=1)
    best_ids[:] = np.take_along_axis(all_ids, top, axis=1)


def _features(store: Store, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, raw features)`` of ``ids``, in that order (ids not found are left out)."""
    parts = [
        read_vectors_by_id(store.conn, VEC_VISUAL, ids[s : s + BY_ID_BLOCK]) for s in range(0, len(ids), BY_ID_BLOCK)
    ]
    dim = store.vec_dim(VEC_VISUAL) or 0
    got = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    X = np.vstack([p[1] for p in parts]) if parts else np.zeros((0, dim), np.float32)
    where = {int(i): n for n, i in enumerate(got)}
    keep = [where[int(i)] for i in ids if int(i) in where]
    return got[keep], X[keep]


def _write_semantics(store: Store, model: Any, graph: Graph, rows: np.ndarray, tags: int) -> None:
    """Semantic vectors and tags of ``rows``, smoothed over their graph neighbours as
    :func:`~semsearch_sqlite.model.semantic.collection_semantics` smooths a collection."""
    from semsearch_sqlite.model.semantic import class_tags, image_semantics
    from semsearch_sqlite.model.smoothing import smooth_rows, smoothed_top_classes
    from semsearch_sqlite.text.tags import write_tags
    from semsearch_sqlite.text.vocabulary import word_space

    at = np.searchsorted(graph.ids, rows)
    near, sims = graph.near[at], graph.sims[at]
    needed = np.union1d(rows, near[near >= 0])
    got, X = _features(store, needed)
    blobs = class_probability_blobs(store.conn, got.tolist())
    probs = np.vstack([decode_f32(blobs[int(i)]) for i in got]) if all(int(i) in blobs for i in got) else None
    vectors, own, n_classes = image_semantics(model, X, probs)
    index = {int(i): n for n, i in enumerate(got)}
    mine = np.array([index[int(i)] for i in rows])
    smoothing = model.config.get("smoothing")
    if smoothing and near.shape[1]:
        nb = np.vectorize(lambda i: index[int(i)])(near)
        classes = None if own is None else ((own[0][mine], own[1][mine]), (own[0][nb], own[1][nb]))
        out, top = smooth_rows(vectors[mine], vectors[nb], sims, smoothing, classes, n_classes)
    else:
        out = vectors[mine]
        top = None if own is None else smoothed_top_classes((own[0][mine], own[1][mine]), None, None, n_classes)
    store.write_vectors(VEC_SEMANTIC, rows.tolist(), out)
    if tags:
        write_tags(store, rows.tolist(), out, tags, class_tags(model, word_space(store.conn), out, top))
