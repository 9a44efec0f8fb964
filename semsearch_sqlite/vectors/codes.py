"""Search big vector tables in bounded memory: 1-bit codes in RAM, exact rescoring from the file.

A table whose float32 matrix would exceed :data:`COMPACT_MIN_BYTES` (1M x 4096-d VGG16
features: 16 GB, in every serving process) is searched like this instead:

- every vector is kept in memory as a **1-bit code**: one bit per dimension, set where
  the unit vector is above that dimension's mean (CNN features are non-negative after
  their ReLU, so the sign alone says little; the mean splits each dimension in two).
  4096-d: 512 bytes per vector, 32x smaller than float32;
- the codes are grouped by the lists of an **IVF** index (spherical k-means, as in
  :mod:`.ivf`); a query scans the codes of its ``nprobe`` nearest lists by Hamming
  distance (``np.bitwise_count``) and keeps the ``shortlist`` best;
- the shortlist is **rescored** with the vectors read from the file (the plain copy
  in ``storage.vec0.read_float_rows``: a few hundred 8 KB int16 rows by id), exact to the
  copy's rounding (~1e-5): only the candidate set is approximate.

``nprobe`` and ``shortlist`` are calibrated when the index is built (stored vectors,
sums of two, noisy copies against their exact neighbours) to the cheapest pair that
keeps recall@10 at :data:`TARGET_RECALL` (why these codes: docs/research.md).

The index is written by the writers (``upkeep.refresh_index``): centroids, thresholds
and calibration in ``models`` (``codes:<table>``), the codes in one row per list. Readers
never write: rows added since are read and coded in memory, deleted rows are dropped,
and when the stored index doesn't fit at all a query is answered exactly by streaming
the table chunk by chunk (slow, but within the same memory).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semsearch_sqlite.storage.models import load_model, model_config, save_model
from semsearch_sqlite.storage.vec0 import (
    ChunkRows,
    chunk_ids,
    read_chunks,
    read_code_lists,
    read_float_rows,
    read_vectors_by_id,
    write_code_lists,
)
from semsearch_sqlite.vectors import ivf
from semsearch_sqlite.vectors.maths import unit_rows_inplace

log = logging.getLogger("semsearch_sqlite")

# float32 bytes (rows x dims x 4) from which an image table is searched through codes
# (100k x 4096-d, 1.6 GB, stays a float matrix with its IVF index: 3 ms a query)
COMPACT_MIN_BYTES = 2 << 30
# the tables that may be: the image spaces (the vocabulary is read whole by its users)
CODE_TABLES = ("vec_visual", "vec_semantic")
TARGET_RECALL = 0.97
# shortlists tried by the calibration (rows rescored exactly per query, for k <= 10)
SHORTLISTS = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# one rescored row (a 16 KB read) costs about as much as this many code comparisons
RESCORE_COST = 200
# calibration never scans more than this share of the rows
MAX_SCAN = 0.25
CALIBRATION_QUERIES = 48
# chunks read per write transaction while building (bounds the WAL)
CHUNKS_PER_COMMIT = 64
CODES_FORMAT = 1
# a filtered search reads at most this many allowed vectors by id (a few MB of 4096-d rows);
# a wider filter is one scan of the table
ALLOWED_READ_MAX = 20_000
MODEL_KIND = "ann-ivf-bits"


def codes_name(table: str) -> str:
    """The ``models`` row that holds ``table``'s code index (centroids, thresholds, calibration)."""
    return f"codes:{table}"


def wants_codes(rows: int, dim: int) -> bool:
    """Whether a table of ``rows`` x ``dim`` floats is big enough for the compact path."""
    return rows * dim * 4 >= COMPACT_MIN_BYTES


# -- the maths ---------------------------------------------------------------------------------
def code_bytes(dim: int) -> int:
    """Bytes per code: one bit per dimension, padded to whole 64-bit words."""
    return 8 * ((dim + 63) // 64)


def encode(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """1-bit codes (uint8 rows of :func:`code_bytes`) of unit rows ``x``."""
    x = np.atleast_2d(x)
    bits = np.packbits(x > threshold, axis=1)
    pad = code_bytes(x.shape[1]) - bits.shape[1]
    if pad:
        bits = np.concatenate([bits, np.zeros((len(bits), pad), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(bits)


def hamming(codes: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Hamming distances (int32) of uint8 code rows to one code."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int32)
    words = codes.view(np.uint64)
    return np.bitwise_count(words ^ code.view(np.uint64)).sum(axis=1, dtype=np.int32)


class TopK:
    """The running exact top ``k`` rows of many queries over blocks of rows."""

    def __init__(self, queries: np.ndarray, k: int, skip_ids: np.ndarray | None = None):
        self.q = queries
        self.k = k
        self.skip = skip_ids  # per query: an id it must not return (-1: none)
        self.val = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.idx = np.full((len(queries), k), -1, dtype=np.int64)

    def add(self, block: np.ndarray, first: int, block_ids: np.ndarray) -> None:
        """Score unit rows ``block`` (row numbers ``first``..., ids ``block_ids``) against every query."""
        scores = self.q @ block.T
        if self.skip is not None:
            for qi in np.flatnonzero(np.isin(self.skip, block_ids)).tolist():
                scores[qi, block_ids == self.skip[qi]] = -np.inf
        vals = np.concatenate([self.val, scores], axis=1)
        idx = np.concatenate([self.idx, np.broadcast_to(np.arange(first, first + len(block)), scores.shape)], axis=1)
        keep = (
            np.argpartition(-vals, self.k - 1, axis=1)[:, : self.k]
            if vals.shape[1] > self.k
            else np.argsort(-vals, axis=1)
        )
        self.val = np.take_along_axis(vals, keep, axis=1)
        self.idx = np.take_along_axis(idx, keep, axis=1)

    def best(self) -> np.ndarray:
        order = np.argsort(-self.val, axis=1, kind="stable")
        return np.take_along_axis(self.idx, order, axis=1)


def calibrate(
    queries: np.ndarray,
    truth: np.ndarray,
    kinds: np.ndarray,
    labels: np.ndarray,
    codes: np.ndarray,
    centroids: np.ndarray,
    threshold: np.ndarray,
    *,
    target: float = TARGET_RECALL,
) -> dict[str, Any]:
    """The cheapest ``(nprobe, shortlist)`` whose recall@10 reaches ``target`` for every
    query kind: a true neighbour is found when its list is among the ``nprobe`` nearest
    and its Hamming rank among the probed rows is below ``shortlist``."""
    n = len(labels)
    nlist = len(centroids)
    sizes = np.bincount(labels, minlength=nlist)
    probes = sorted(
        {p for p in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512) if p <= nlist} | {nlist}
    )
    qcodes = encode(queries, threshold)
    found = np.zeros((len(probes), len(SHORTLISTS), len(queries)), dtype=np.float32)
    scanned = np.zeros((len(probes), len(queries)))
    where = np.full(n, -1, dtype=np.int64)
    for i, q in enumerate(queries):
        order = np.argsort(-(centroids @ q))
        rank_of_list = np.empty(nlist, dtype=np.int64)
        rank_of_list[order] = np.arange(nlist)
        cum = np.cumsum(sizes[order])
        # only the lists a calibrated probe may scan
        last = max(1, int(np.searchsorted(cum, MAX_SCAN * n, side="right")) + 1)
        cand = np.flatnonzero(rank_of_list[labels] < min(last, nlist))
        h = hamming(codes[cand], qcodes[i])
        by_h = cand[np.argsort(h, kind="stable")]
        lr = rank_of_list[labels[by_h]]
        t = truth[i][truth[i] >= 0]
        where[by_h] = np.arange(len(by_h))
        pos = where[t]  # each true neighbour's place in Hamming order (-1: not probed)
        where[by_h] = -1
        for a, p in enumerate(probes):
            scanned[a, i] = cum[min(p, nlist) - 1]
            mask = lr < p
            rank = np.cumsum(mask) - 1  # rank among the probed rows, in Hamming order
            ok = pos >= 0
            ok[ok] &= mask[pos[ok]]
            tr = np.where(ok, rank[np.maximum(pos, 0)], 1 << 30)
            for b, r in enumerate(SHORTLISTS):
                found[a, b, i] = float((tr < r).sum()) / max(len(t), 1)
    best = None
    kinds_list = sorted(set(kinds.tolist()))
    table: dict[str, Any] = {}
    for a, p in enumerate(probes):
        share = float(scanned[a].mean()) / n
        if share > MAX_SCAN and best is not None:
            break
        for b, r in enumerate(SHORTLISTS):
            rec = min(float(found[a, b, kinds == k].mean()) for k in kinds_list)
            cost = scanned[a].mean() + RESCORE_COST * r
            table[f"{p}/{r}"] = round(rec, 4)
            if rec >= target and (best is None or cost < best[0]):
                best = (cost, p, r, rec, share)
    if best is None:  # nothing reached the target: the widest affordable search
        a = max(i for i, p in enumerate(probes) if float(scanned[i].mean()) / n <= MAX_SCAN or i == 0)
        b = len(SHORTLISTS) - 1
        rec = min(float(found[a, b, kinds == k].mean()) for k in kinds_list)
        best = (0.0, probes[a], SHORTLISTS[b], rec, float(scanned[a].mean()) / n)
    _, p, r, rec, share = best
    return {
        "nprobe": int(p),
        "shortlist": int(r),
        "calibration_recall": round(rec, 4),
        "scan_share": round(share, 5),
        "target_recall": target,
    }


# -- the index in memory -------------------------------------------------------------------------
@dataclass
class CodeIndex:
    """Codes grouped by IVF list: ``codes[offsets[l]:offsets[l+1]]`` are list ``l``'s rows,
    ``ids`` the same rows' ids."""

    centroids: np.ndarray
    threshold: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray
    codes: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def nlist(self) -> int:
        return len(self.centroids)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.ids.nbytes + self.centroids.nbytes + self.offsets.nbytes)

    def shortlist(self, query: np.ndarray, want: int) -> np.ndarray:
        """Row numbers (into ``ids``) of the best candidates for ``want`` results."""
        nprobe = int(self.config.get("nprobe", self.nlist))
        size = int(self.config.get("shortlist", 256))
        if want > 10:  # calibrated for 10: more results, proportionally more of both
            nprobe = min(self.nlist, math.ceil(nprobe * math.sqrt(want / 10)))
            size = math.ceil(size * want / 10)
        cs = self.centroids @ query
        nl = len(cs)
        lists = np.arange(nl) if nprobe >= nl else np.sort(np.argpartition(cs, nl - nprobe)[nl - nprobe :])
        starts, ends = self.offsets[lists], self.offsets[lists + 1]
        total = int((ends - starts).sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        rows = np.empty(total, dtype=np.int64)
        dist = np.empty(total, dtype=np.int32)
        qc = encode(query[None, :], self.threshold)[0]
        at = 0
        for s, e in zip(starts.tolist(), ends.tolist()):
            if e > s:
                dist[at : at + e - s] = hamming(self.codes[s:e], qc)
                rows[at : at + e - s] = np.arange(s, e)
                at += e - s
        if size < total:
            keep = np.argpartition(dist, size)[:size]
            return rows[keep]
        return rows


def _layout(labels: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    return ivf.layout(labels, nlist)


def load_code_index(conn: sqlite3.Connection, table: str, dim: int) -> CodeIndex | None:
    """The stored code index of ``table`` for ``dim``-d vectors, or None (never raises)."""
    try:
        got = load_model(conn, codes_name(table))
        if got is None:
            return None
        arrays, config = got
        centroids, threshold = arrays["centroids"].astype(np.float32), arrays["threshold"].astype(np.float32)
        if (
            config.get("format") != CODES_FORMAT
            or centroids.ndim != 2
            or centroids.shape[1] != dim
            or threshold.shape != (dim,)
        ):
            return None
        nlist, width, count = len(centroids), code_bytes(dim), int(config.get("count", -1))
        stamp = config.get("stamp")
        ids = np.empty(count, dtype=np.int64)
        codes = np.empty((count, width), dtype=np.uint8)
        offsets = np.zeros(nlist + 1, dtype=np.int64)
        at, seen = 0, 0
        for lst, row_stamp, n, id_blob, code_blob in read_code_lists(conn, table):
            if (
                row_stamp != stamp
                or not 0 <= lst < nlist
                or lst < seen
                or at + n > count
                or len(id_blob) != 8 * n
                or len(code_blob) != width * n
            ):
                return None
            offsets[seen + 1 : lst + 1] = at
            ids[at : at + n] = np.frombuffer(id_blob, "<i8")
            codes[at : at + n] = np.frombuffer(code_blob, np.uint8).reshape(n, width)
            at += n
            offsets[lst + 1] = at
            seen = lst + 1
        offsets[seen + 1 :] = at
        if at != count:
            return None
        return CodeIndex(centroids, threshold, offsets, ids, codes, config)
    except (KeyError, ValueError, TypeError, AttributeError, sqlite3.Error) as e:
        log.warning("semsearch: ignoring the stored code index of %s (%s)", table, e)
        return None


def save_code_index(
    conn: sqlite3.Connection, table: str, idx: CodeIndex, config: dict[str, Any], changed: np.ndarray | None = None
) -> dict[str, Any]:
    """Write ``idx`` (inside a transaction): all lists, or only the ``changed`` ones."""
    config = {
        **config,
        "format": CODES_FORMAT,
        "table": table,
        "dim": int(idx.centroids.shape[1]),
        "nlist": idx.nlist,
        "count": len(idx.ids),
        "stamp": uuid.uuid4().hex,
    }
    save_model(conn, codes_name(table), MODEL_KIND, {"centroids": idx.centroids, "threshold": idx.threshold}, config)
    lists = range(idx.nlist) if changed is None else sorted(set(int(c) for c in changed))
    write_code_lists(
        conn,
        table,
        config["stamp"],
        (
            (lst, idx.ids[idx.offsets[lst] : idx.offsets[lst + 1]], idx.codes[idx.offsets[lst] : idx.offsets[lst + 1]])
            for lst in lists
        ),
        replace_all=changed is None,
    )
    idx.config = config
    return config


def code_index_stamp(conn: sqlite3.Connection, table: str) -> str | None:
    """A token that changes whenever ``table``'s code index is rewritten (None: none)."""
    config = model_config(conn, codes_name(table))
    return None if config is None else str(config.get("stamp"))


def with_rows(
    idx: CodeIndex, add_ids: np.ndarray, add_x: np.ndarray | None, drop_ids: np.ndarray
) -> tuple[CodeIndex, np.ndarray]:
    """``idx`` with unit rows ``add_x`` (ids ``add_ids``) coded into their nearest lists and
    ``drop_ids`` removed; also the lists that changed."""
    labels = np.repeat(np.arange(idx.nlist, dtype=np.int32), np.diff(idx.offsets))
    keep = ~np.isin(idx.ids, drop_ids) if len(drop_ids) else np.ones(len(idx.ids), dtype=bool)
    changed = [np.unique(labels[~keep])]
    ids, codes, labels = idx.ids[keep], idx.codes[keep], labels[keep]
    if add_x is not None and len(add_ids):
        new_labels = ivf.assign(add_x, idx.centroids)
        ids = np.concatenate([ids, add_ids.astype(np.int64)])
        codes = np.concatenate([codes, encode(add_x, idx.threshold)])
        labels = np.concatenate([labels, new_labels])
        changed.append(np.unique(new_labels))
    order, offsets = _layout(labels, idx.nlist)
    out = CodeIndex(idx.centroids, idx.threshold, offsets, ids[order], codes[order], dict(idx.config))
    return out, np.unique(np.concatenate(changed)).astype(np.int64)


# -- building (the writers) ------------------------------------------------------------------------
def _training_rows(src: ChunkRows, n: int, nl: int, rng: np.random.Generator) -> np.ndarray:
    """The training sample's rows: random rows of random chunks (chunk order follows ingest
    order, so whole chunks would be a biased sample)."""
    want = min(n, nl * ivf.TRAIN_PER_LIST)
    chunk_of = src.chunk_of(np.arange(n))
    nchunks = int(chunk_of.max()) + 1 if n else 0
    picked = np.sort(rng.choice(nchunks, min(nchunks, max(1, math.ceil(4 * want / 1024))), replace=False))
    pool = np.flatnonzero(np.isin(chunk_of, picked))
    return np.sort(rng.choice(pool, min(want, len(pool)), replace=False))


def _calibration_queries(
    sample: np.ndarray, sample_ids: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration queries from the unit training ``sample``: stored rows (themselves
    excluded), sums of two, noisy copies. Returns ``(queries, kind of each, id to skip)``."""
    m = min(CALIBRATION_QUERIES, len(sample))
    a = rng.choice(len(sample), m, replace=False)
    b = rng.choice(len(sample), m, replace=True)
    noise = rng.standard_normal((m, sample.shape[1])).astype(np.float32)
    noise *= (0.5 / np.maximum(np.linalg.norm(noise, axis=1), 1e-12))[:, None]
    queries = np.concatenate(
        [sample[a], unit_rows_inplace(sample[a] + sample[b]), unit_rows_inplace(sample[a] + noise)]
    )
    kinds = np.repeat(np.arange(3), m)
    skip = np.concatenate([sample_ids[a], np.full(2 * m, -1)])
    return queries, kinds, skip


def build(
    store: Any, table: str, dim: int, *, nlist: int | None = None, seed: int = 0, progress: Any = None
) -> tuple[CodeIndex, dict[str, Any]]:
    """Train, code and calibrate the code index of ``table`` in bounded memory (one
    pass over the table, chunk by chunk), filling its float-row copy on the way.

    Returns the index (not yet saved) and its config."""
    from semsearch_sqlite.storage.rows import generation
    from semsearch_sqlite.storage.vec0 import create_float_rows, write_float_rows

    t0 = time.perf_counter()
    conn = store.conn
    gen = generation(conn)
    src = ChunkRows.open(conn, table, dim)
    if src is None:
        raise sqlite3.DatabaseError(f"{table}: unexpected vec0 layout; the compact index needs vec0's chunks")
    n = len(src.ids)
    nl = max(1, min(nlist or ivf.nlist_for(n), n))
    rng = np.random.default_rng(seed)
    sample_rows = _training_rows(src, n, nl, rng)
    sample = unit_rows_inplace(src.read_rows(sample_rows))
    centroids, _ = ivf.spherical_kmeans(sample, nl, seed=seed)
    threshold = sample.mean(axis=0).astype(np.float32)
    t1 = time.perf_counter()
    queries, kinds, skip = _calibration_queries(sample, src.ids[sample_rows], rng)
    del sample
    top = TopK(queries, min(10, max(1, n - 1)), skip)
    ids = np.empty(n, dtype=np.int64)
    labels = np.empty(n, dtype=np.int32)
    codes = np.empty((n, code_bytes(dim)), dtype=np.uint8)
    # one pass: copy, code, assign, score; a write transaction per group of chunks, so
    # the copy matches what it read and the WAL stays small
    at = 0
    all_chunks = chunk_ids(conn, table)
    with store.atomic():
        create_float_rows(conn, table)
    for g in range(0, len(all_chunks), CHUNKS_PER_COMMIT):
        with store.atomic():
            for block_ids, raw in read_chunks(conn, table, dim, all_chunks[g : g + CHUNKS_PER_COMMIT]):
                if at + len(block_ids) > n:  # the table grew since: the rest waits for the next refresh
                    block_ids, raw = block_ids[: n - at], raw[: n - at]
                write_float_rows(conn, table, block_ids, raw)
                x = unit_rows_inplace(raw.copy())
                e = at + len(x)
                ids[at:e] = block_ids
                labels[at:e] = ivf.assign(x, centroids)
                codes[at:e] = encode(x, threshold)
                top.add(x, at, block_ids)
                at = e
        if progress is not None:
            progress(min(len(all_chunks), g + CHUNKS_PER_COMMIT), len(all_chunks))
    ids, labels, codes = ids[:at], labels[:at], codes[:at]
    t2 = time.perf_counter()
    cal = (
        calibrate(queries, top.best(), kinds, labels, codes, centroids, threshold)
        if at
        else {"nprobe": 1, "shortlist": SHORTLISTS[0]}
    )
    t3 = time.perf_counter()
    order, offsets = _layout(labels, nl)
    idx = CodeIndex(centroids, threshold, offsets, ids[order], codes[order])
    config = {
        **cal,
        "nlist": nl,
        "n_trained": at,
        "generation": gen,
        "train_s": round(t1 - t0, 2),
        "code_s": round(t2 - t1, 2),
        "calibrate_s": round(t3 - t2, 2),
        "bytes_per_vector": code_bytes(dim) + 8,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return idx, config


# -- the matrix of a big table ----------------------------------------------------------------------
class CompactMatrix:
    """A big vector table searched through its codes (see the module docstring).

    Same face as ``matrix.Matrix`` (``ids``, ``dim``, ``vector``, ``top_k``,
    ``strategy``); vectors are read from the file on demand through a read-only
    connection of its own. ``index`` None: every query streams the table exactly.
    """

    def __init__(self, path: str, table: str, dim: int, ids: np.ndarray, index: CodeIndex | None):
        self.path = path
        self.table = table
        self.dim = dim
        self.ids = ids
        self.index = index
        self.ivf = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._sorted = np.sort(ids)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Memory held (codes, ids, centroids)."""
        return int((self.index.nbytes if self.index is not None else self.ids.nbytes) + self._sorted.nbytes)

    def _reader(self) -> sqlite3.Connection:
        from semsearch_sqlite.storage.store import connect

        if self._conn is None:
            self._conn = connect(self.path, readonly=True)
        return self._conn

    def _read(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            found, raw = read_float_rows(self._reader(), self.table, ids, self.dim)
        return found, unit_rows_inplace(np.array(raw, dtype=np.float32))

    def _stream(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            for ids, raw in read_chunks(self._reader(), self.table, self.dim):
                yield ids, unit_rows_inplace(np.array(raw, dtype=np.float32))

    def vector(self, item_id: int) -> np.ndarray | None:
        """The unit vector of ``item_id`` (read from vec0 itself: exact, not the int16 copy) or None."""
        i = int(np.searchsorted(self._sorted, int(item_id)))
        if i >= len(self._sorted) or self._sorted[i] != int(item_id):
            return None
        with self._lock:
            found, raw = read_vectors_by_id(self._reader(), self.table, np.array([int(item_id)]))
        return unit_rows_inplace(np.array(raw, dtype=np.float32).reshape(-1, self.dim))[0] if len(found) else None

    def strategy(self, k: int, exclude: set[int] | None = None, weights: Any = None, exact: bool | None = None) -> str:
        """``"codes"`` or ``"exact"`` (a streamed scan of the table)."""
        want = k + (len(exclude) if exclude else 0)
        if (
            self.index is None
            or weights is not None
            or exact
            or (exact is None and ivf.exact_forced())
            or want > ivf.APPROX_MAX_WANT
        ):
            return "exact"
        return "codes"

    def top_k(
        self,
        query: np.ndarray,
        k: int,
        exclude: set[int] | None = None,
        weights: np.ndarray | None = None,
        exact: bool | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest ``(id, cosine distance)`` to unit vector ``query``;
        ``allowed`` (ids) restricts the candidates before the top k is taken."""
        n = len(self.ids)
        if n == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        want = min(n, k + (len(exclude) if exclude else 0))
        if allowed is not None:
            found, scores = self._allowed(q, want, np.asarray(allowed, dtype=np.int64), weights)
        elif self.strategy(k, exclude, weights, exact) == "codes":
            assert self.index is not None
            found, x = self._read(self.index.ids[self.index.shortlist(q, want)])
            scores = x @ q
        else:
            found, scores = self._exact(q, want, weights)
        order = np.lexsort((found, -scores))
        out = []
        for j in order.tolist():
            item = int(found[j])
            if exclude and item in exclude:
                continue
            out.append((item, float(1.0 - scores[j])))
            if len(out) >= k:
                break
        return out

    def _allowed(
        self, q: np.ndarray, want: int, allowed: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the allowed ids: read by id from the file when they are few
        (a filter such as one label), else one filtered scan of the table."""
        if len(allowed) <= ALLOWED_READ_MAX:
            found, x = self._read(np.unique(allowed))
            return found, _scores(x, q, weights)
        return self._exact(q, want, weights, allowed=np.unique(allowed))

    def _exact(
        self, q: np.ndarray, want: int, weights: np.ndarray | None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        best_ids = np.zeros(0, dtype=np.int64)
        best = np.zeros(0, dtype=np.float32)
        for ids, x in self._stream():
            if allowed is not None:
                keep = np.isin(ids, allowed, assume_unique=True)
                ids, x = ids[keep], x[keep]
            s = _scores(x, q, weights)
            best_ids = np.concatenate([best_ids, ids])
            best = np.concatenate([best, s.astype(np.float32)])
            if len(best) > want:
                keep = np.argpartition(-best, want - 1)[:want]
                best_ids, best = best_ids[keep], best[keep]
        return best_ids, best

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _scores(x: np.ndarray, q: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Cosines of unit rows ``x`` with ``q``; with ``weights``, of both re-weighted (focus)."""
    if weights is None:
        return (x @ q).astype(np.float32)
    w = np.asarray(weights, dtype=np.float32).reshape(-1)
    qw = q * w
    qn = float(np.linalg.norm(qw)) or 1.0
    den = np.sqrt((x * x) @ (w * w))
    den[den == 0] = 1
    return ((x @ (qw * w)) / (den * qn)).astype(np.float32)


def load_compact(conn: sqlite3.Connection, table: str, dim: int, path: str) -> CompactMatrix:
    """The :class:`CompactMatrix` of ``table``: its stored code index brought up to date
    in memory (rows added since coded, deleted ones dropped), or none when the stored
    index is missing or covers too little (queries then stream the table)."""
    from semsearch_sqlite.storage.rows import generation

    idx = load_code_index(conn, table, dim)
    src = None
    if idx is None or int(idx.config.get("generation", -1)) != generation(conn):
        src = ChunkRows.open(conn, table, dim, unit_rows_inplace)
    if src is None and idx is None:
        ids = np.concatenate([i for i, _ in read_chunks(conn, table, dim)] or [np.zeros(0, np.int64)])
        return CompactMatrix(path, table, dim, ids, None)
    if src is not None:
        if idx is None:
            return CompactMatrix(path, table, dim, src.ids, None)
        known = np.isin(src.ids, idx.ids)
        if len(known) and known.mean() < 1 / ivf.RETRAIN_GROWTH:
            return CompactMatrix(path, table, dim, src.ids, None)
        new_rows = np.flatnonzero(~known)
        gone = np.setdiff1d(idx.ids, src.ids)
        if len(new_rows) or len(gone):
            x = src.read_rows(new_rows) if len(new_rows) else None
            idx, _ = with_rows(idx, src.ids[new_rows], x, gone)
    assert idx is not None
    return CompactMatrix(path, table, dim, idx.ids, idx)
