"""Approximate nearest neighbours for the in-memory matrices, and a fast vec0 reader.

**IVF** ("inverted file", as in faiss' IndexIVFFlat, in plain numpy): spherical k-means
centroids trained on a sample; the matrix rows are kept grouped by their nearest
centroid, so each list is a contiguous slice, and a query scans exactly (one small
matmul per list) only the lists of its ``nprobe`` nearest centroids. ``nprobe`` is not
guessed: it is calibrated when the index is built, on a few hundred queries of three
kinds (stored vectors, sums of two, noisy copies) against their exact neighbours, to
the smallest value that keeps recall@10 (and @100) at :data:`TARGET_RECALL` for every
kind. Where that would scan more than :data:`MAX_SCAN_FRACTION` of the rows the index
is kept but not used, so queries stay exact.

The index lives in the database (``models`` row ``ann:<table>``, an npz BLOB): the
centroids, and for every row its id, list and a fingerprint of its vector (its dot
product with a fixed random unit vector), which is how a reader notices vectors that
were rewritten since. New rows are assigned to the existing lists; the lists are
retrained once the table has doubled or halved (:func:`semsearch_sqlite.vectors.upkeep.refresh_index`).

**Reading vec0 fast**: ``select key, embedding from vec_x`` costs ~1 ms per 4096-d row,
so the matrix is read from vec0's own shadow tables (``vec_x_chunks`` holds each
chunk's validity bitmap and rowids, ``vec_x_vector_chunks00`` its vectors as one BLOB),
after checking that their layout is the one this code knows; anything unexpected falls
back to the SQL read.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semsearch_sqlite.storage.models import load_model, save_model
from semsearch_sqlite.vectors.maths import unit_rows_inplace

log = logging.getLogger(__name__)

# rows x dims below which exact search takes a few ms (~7 ms at 1 << 24): no index is
# built. The vocabulary loads in seconds (an index would add >10% to that) and its exact
# search is fast enough up to a 400k x 50-d GloVe, so its threshold is higher.
MIN_CELLS = 1 << 24
MIN_CELLS_WORDS = 1 << 25
# nor for fewer rows than this, whatever their dimensions
MIN_ROWS = 1000
# recall@10 (and @100 for k up to 100) that the calibration keeps, on its own queries
TARGET_RECALL = 0.98
# calibration queries of each kind (stored vectors, pair sums, noisy copies)
CALIBRATION_QUERIES = 48
# an index that must scan more than this share of the rows is not used
MAX_SCAN_FRACTION = 0.5
# approximate search answers up to this many (k + excluded) results; more is exact
APPROX_MAX_WANT = 100
KMEANS_ITERATIONS = 6
TRAIN_PER_LIST = 32
MAX_LISTS = 4096
# retrain when the table has grown (or shrunk) by this factor since training
RETRAIN_GROWTH = 2.0
# rows (float32 cells) per block in the batched matmuls: bounds temporary memory
BLOCK_CELLS = 1 << 22
INDEX_FORMAT = 1
MODEL_KIND = "ann-ivf"
FINGERPRINT_SEED = 20240917
FINGERPRINT_TOLERANCE = 1e-4


# set to 1 to make every query exact (the ``exact=`` argument does it per query)
EXACT_ENV = "SEMSEARCH_EXACT"


def exact_forced() -> bool:
    """Whether ``SEMSEARCH_EXACT`` asks for exact search everywhere."""
    return os.environ.get(EXACT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def min_cells_for(table: str) -> int:
    """Rows x dims from which ``table`` gets an index."""
    return MIN_CELLS_WORDS if table == "vec_words" else MIN_CELLS


def index_name(table: str) -> str:
    """The ``models`` row that holds ``table``'s index."""
    return f"ann:{table}"


def fingerprint_probe(dim: int) -> np.ndarray:
    """The fixed random unit vector whose dot product fingerprints each row."""
    v = np.random.default_rng(FINGERPRINT_SEED).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _block_rows(dim: int) -> int:
    return max(256, BLOCK_CELLS // max(dim, 1))


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid (largest dot product) of each row of ``x``, as int32."""
    out = np.empty(len(x), dtype=np.int32)
    step = max(256, (1 << 24) // max(len(centroids), 1))
    ct = np.ascontiguousarray(centroids.T)
    for s in range(0, len(x), step):
        out[s : s + step] = np.argmax(x[s : s + step] @ ct, axis=1)
    return out


def spherical_kmeans(
    x: np.ndarray, nlist: int, iterations: int = KMEANS_ITERATIONS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``nlist`` unit centroids of unit rows ``x`` (trained on a sample) and every row's list."""
    rng = np.random.default_rng(seed)
    n = len(x)
    if n <= nlist * TRAIN_PER_LIST:
        xs = x
    else:
        xs = x[np.sort(rng.choice(n, nlist * TRAIN_PER_LIST, replace=False))]
    centroids = xs[rng.choice(len(xs), nlist, replace=False)].copy()
    for _ in range(iterations):
        labels = assign(xs, centroids)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=nlist)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        nonempty = counts > 0
        sums = np.add.reduceat(xs[order], starts[nonempty], axis=0)
        centroids[nonempty] = sums
        empty = np.flatnonzero(~nonempty)
        if len(empty):  # re-seed empty lists with random sample rows
            centroids[empty] = xs[rng.choice(len(xs), len(empty), replace=False)]
        unit_rows_inplace(centroids)
    return centroids, assign(x, centroids)


def layout(labels: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order that groups rows by list (stable), and the lists' offsets into it."""
    order = np.argsort(labels, kind="stable")
    offsets = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(labels, minlength=nlist), out=offsets[1:])
    return order, offsets


def exact_top(queries: np.ndarray, x: np.ndarray, k: int, skip: np.ndarray | None = None) -> np.ndarray:
    """Row indices of the exact top-``k`` rows of ``x`` for each query, best first.

    ``skip[i]`` (or -1) is a row that query ``i`` must not return (itself). Blocks of
    rows are scored with one matmul each; after the first block only scores above each
    query's current k-th best are looked at.
    """
    nq = len(queries)
    k = min(k, len(x) - (1 if skip is not None and (skip >= 0).any() else 0))
    step = max(1024, k + 1, (1 << 23) // max(nq, 1))
    best_idx = np.zeros((nq, k), dtype=np.int64)
    best_val = np.full((nq, k), -np.inf, dtype=np.float32)
    for s in range(0, len(x), step):
        scores = queries @ x[s : s + step].T  # (nq, rows)
        if skip is not None:
            local = skip - s
            hit = (local >= 0) & (local < scores.shape[1])
            scores[np.flatnonzero(hit), local[hit]] = -np.inf
        if s == 0:  # the first block: its own top k
            kk = min(k, scores.shape[1])
            part = np.argpartition(scores, scores.shape[1] - kk, axis=1)[:, scores.shape[1] - kk :]
            best_val[:, :kk] = np.take_along_axis(scores, part, axis=1)
            best_idx[:, :kk] = part
            continue
        qi, ci = np.nonzero(scores > best_val.min(axis=1)[:, None])
        if len(qi) == 0:
            continue
        # merge every query's candidates with its current best, all at once: a padded
        # (queries, k + most candidates) table, partitioned row by row
        counts = np.bincount(qi, minlength=nq)
        slot = np.arange(len(qi)) - np.repeat(np.cumsum(counts) - counts, counts)
        vals = np.full((nq, k + int(counts.max())), -np.inf, dtype=np.float32)
        idx = np.zeros(vals.shape, dtype=np.int64)
        vals[:, :k], idx[:, :k] = best_val, best_idx
        vals[qi, k + slot] = scores[qi, ci]
        idx[qi, k + slot] = ci + s
        keep = np.argpartition(vals, vals.shape[1] - k, axis=1)[:, -k:]
        best_val = np.take_along_axis(vals, keep, axis=1)
        best_idx = np.take_along_axis(idx, keep, axis=1)
    order = np.argsort(-best_val, axis=1, kind="stable")
    return np.take_along_axis(best_idx, order, axis=1)


# -- the index -------------------------------------------------------------------------------
@dataclass
class IVF:
    """An IVF index over a matrix whose rows are grouped by list.

    ``offsets[l]:offsets[l+1]`` are the rows of list ``l``; ``nprobe`` maps k (10, 100)
    to the calibrated number of lists to scan.
    """

    centroids: np.ndarray
    offsets: np.ndarray
    nprobe: dict[int, int]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def nlist(self) -> int:
        return len(self.centroids)

    def probes_for(self, want: int) -> int | None:
        """Lists to scan for ``want`` results, or None when exact search is the better deal."""
        if want > APPROX_MAX_WANT or not self.nprobe:
            return None
        lo, hi = self.nprobe.get(10, 0), self.nprobe.get(100, 0)
        if want <= 10:
            p = lo
        else:  # geometric interpolation between the two calibrated points
            t = math.log(want / 10) / math.log(10)
            p = math.ceil(lo * (max(hi, lo) / max(lo, 1)) ** t)
        if p <= 0 or p >= self.nlist or self.scan_share(want) > MAX_SCAN_FRACTION:
            return None
        return p

    def scan_share(self, want: int = 10) -> float:
        """The share of rows a query for ``want`` results scans (measured at calibration)."""
        shares = self.config.get("scan_share") or {}
        share = shares.get("10" if want <= 10 else "100")
        if share is None:  # not calibrated: average list size x nprobe
            p = self.nprobe.get(10 if want <= 10 else 100, self.nlist)
            return p / max(self.nlist, 1)
        return float(share)

    def search(self, x: np.ndarray, query: np.ndarray, want: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate rows (best ``want`` of the probed lists) and their scores, unsorted."""
        cs = self.centroids @ query
        nl = len(cs)
        if nprobe >= nl:
            lists = np.arange(nl)
        else:
            lists = np.sort(np.argpartition(cs, nl - nprobe)[nl - nprobe :])
        starts = self.offsets[lists]
        ends = self.offsets[lists + 1]
        # neighbouring lists become one slice
        first = np.ones(len(lists), dtype=bool)
        first[1:] = starts[1:] != ends[:-1]
        heads = np.flatnonzero(first)
        rs = starts[heads]
        re_ = np.maximum.reduceat(ends, heads)
        lens = re_ - rs
        cum = np.zeros(len(rs) + 1, dtype=np.int64)
        np.cumsum(lens, out=cum[1:])
        total = int(cum[-1])
        buf = np.empty(total, dtype=np.float32)
        for s, e, p in zip(rs.tolist(), re_.tolist(), cum[:-1].tolist()):
            if e > s:
                np.matmul(x[s:e], query, out=buf[p : p + e - s])
        if total == 0:
            return np.zeros(0, dtype=np.int64), buf
        if want < total:
            pos = np.argpartition(buf, total - want)[total - want :]
        else:
            pos = np.arange(total)
        seg = np.searchsorted(cum, pos, side="right") - 1
        return rs[seg] + (pos - cum[seg]), buf[pos]


def calibrate(
    x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, *, target: float = TARGET_RECALL, seed: int = 1
) -> dict[str, Any]:
    """The smallest ``nprobe`` that reaches ``target`` recall@10 and @100 for each
    query kind, measured against exact neighbours (IVF is exact inside the lists it
    scans, so a neighbour is found iff its list ranks within ``nprobe``), and the share
    of rows those queries scan on average with it."""
    rng = np.random.default_rng(seed)
    n, dim = x.shape
    m = min(CALIBRATION_QUERIES, n)
    a = rng.choice(n, m, replace=False)
    b = rng.choice(n, m, replace=True)
    noise = rng.standard_normal((m, dim)).astype(np.float32)
    noise *= (0.5 / np.maximum(np.linalg.norm(noise, axis=1), 1e-12))[:, None]
    kinds = {
        "stored": (x[a].copy(), a),
        "pair": (unit_rows_inplace(x[a] + x[b]), None),
        "noisy": (unit_rows_inplace(x[a] + noise), None),
    }
    queries = np.concatenate([q for q, _ in kinds.values()])
    skip = np.concatenate([s if s is not None else np.full(m, -1) for _, s in kinds.values()])
    kmax = max(1, min(100, n - 1))
    truth = exact_top(queries, x, kmax, skip=skip)
    cs = queries @ centroids.T
    order = np.argsort(-cs, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(cs.shape[1]), cs.shape), axis=1)
    found_rank = np.take_along_axis(rank, labels[truth].astype(np.int64), axis=1)  # (queries, kmax)
    sizes = np.bincount(labels, minlength=len(centroids))
    scanned = np.cumsum(sizes[order], axis=1)  # rows scanned with 1, 2, ... lists
    out: dict[str, Any] = {"nprobe": {}, "recall": {}, "scan_share": {}}
    for k in (10, 100):
        kk = min(k, kmax)
        need = out["nprobe"].get(10, 1)
        for i in range(len(kinds)):
            r = np.sort(found_rank[i * m : (i + 1) * m, :kk].ravel())
            need = max(need, int(r[max(0, math.ceil(target * len(r)) - 1)]) + 1)
        out["nprobe"][k] = need
        out["recall"][k] = {
            name: round(float((found_rank[i * m : (i + 1) * m, :kk] < need).mean()), 4) for i, name in enumerate(kinds)
        }
        out["scan_share"][k] = round(float(scanned[:, need - 1].mean()) / n, 5)
    return out


def nlist_for(n: int) -> int:
    """Lists for ``n`` rows: about sqrt(n) (build cost ~ n^1.5 x dims)."""
    return int(min(MAX_LISTS, max(1, min(n // 8, round(math.sqrt(n))))))


@dataclass
class Trained:
    """What :func:`train` returns: centroids, each row's list, calibration."""

    centroids: np.ndarray
    labels: np.ndarray
    nprobe: dict[int, int]
    config: dict[str, Any]


def train(x: np.ndarray, *, nlist: int | None = None, seed: int = 0) -> Trained:
    """Train and calibrate an IVF index over unit rows ``x``."""
    t0 = time.perf_counter()
    n = len(x)
    nl = max(1, min(nlist or nlist_for(n), n))
    centroids, labels = spherical_kmeans(x, nl, seed=seed)
    t1 = time.perf_counter()
    cal = calibrate(x, labels, centroids)
    t2 = time.perf_counter()
    config = {
        "nlist": nl,
        "n_trained": n,
        "nprobe": {str(k): v for k, v in cal["nprobe"].items()},
        "calibration_recall": {str(k): v for k, v in cal["recall"].items()},
        "scan_share": {str(k): v for k, v in cal["scan_share"].items()},
        "target_recall": TARGET_RECALL,
        "train_s": round(t1 - t0, 3),
        "calibrate_s": round(t2 - t1, 3),
    }
    return Trained(centroids, labels, dict(cal["nprobe"]), config)


# -- persistence ----------------------------------------------------------------------------
@dataclass
class StoredIndex:
    """An index as saved in the database: ids sorted, with their lists and fingerprints."""

    centroids: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    fingerprints: np.ndarray
    config: dict[str, Any]

    @property
    def nprobe(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.config.get("nprobe", {}).items()}

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``ids``: its stored list (-1 when unknown) and stored fingerprint."""
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        known = (self.ids[pos] == ids) if len(self.ids) else np.zeros(len(ids), dtype=bool)
        labels = np.where(known, self.labels[pos] if len(self.ids) else -1, -1).astype(np.int32)
        fps = np.where(known, self.fingerprints[pos] if len(self.ids) else np.nan, np.nan).astype(np.float32)
        return labels, fps


def load_index(conn: sqlite3.Connection, table: str, dim: int) -> StoredIndex | None:
    """The stored index of ``table`` if there is one for ``dim``-d vectors (never raises)."""
    try:
        got = load_model(conn, index_name(table))
    except Exception as e:  # noqa: BLE001 - a damaged index must not break queries
        log.warning("semsearch: ignoring the stored index of %s (%s)", table, e)
        return None
    if got is None:
        return None
    arrays, config = got
    try:
        c, ids, labels, fps = arrays["centroids"], arrays["ids"], arrays["labels"], arrays["fingerprints"]
        ok = (
            config.get("format") == INDEX_FORMAT
            and config.get("table") == table
            and c.ndim == 2
            and c.shape[1] == dim
            and len(ids) == len(labels) == len(fps)
            and (len(labels) == 0 or (int(labels.min()) >= 0 and int(labels.max()) < len(c)))
        )
    except (KeyError, AttributeError, ValueError, TypeError):
        ok = False
    if not ok:
        return None
    return StoredIndex(
        c.astype(np.float32, copy=False),
        ids.astype(np.int64, copy=False),
        labels.astype(np.int32, copy=False),
        fps.astype(np.float32, copy=False),
        config,
    )


def save_index(
    conn: sqlite3.Connection,
    table: str,
    centroids: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    fingerprints: np.ndarray,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Write an index (rows sorted by id) into ``models``; returns the config saved."""
    order = np.argsort(ids, kind="stable")
    config = {
        **config,
        "format": INDEX_FORMAT,
        "table": table,
        "dim": int(centroids.shape[1]),
        "count": len(ids),
        "stamp": uuid.uuid4().hex,
    }
    save_model(
        conn,
        index_name(table),
        MODEL_KIND,
        {
            "centroids": centroids.astype(np.float32),
            "ids": ids[order].astype(np.int64),
            "labels": labels[order].astype(np.int32),
            "fingerprints": fingerprints[order].astype(np.float32),
        },
        config,
    )
    return config
