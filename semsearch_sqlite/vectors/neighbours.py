"""Each row's nearest other rows, for a whole collection at once (smoothing the semantic
vectors over visual neighbours): exact up to EXACT_ROWS rows, else exact within
k-means cells of about CELL_ROWS rows, which keeps the cost linear in the rows."""

from __future__ import annotations

import math

import numpy as np

from semsearch_sqlite.vectors.ivf import exact_top, layout, spherical_kmeans
from semsearch_sqlite.vectors.maths import unit_rows

# exact all-pairs up to here (1280-d rows on 2 cores: 10k in 1.8 s, 30k in 17 s; by
# cells, 30k take 4 s and the cost grows linearly)
EXACT_ROWS = 20_000
CELL_ROWS = 2_000
QUERY_BLOCK = 2_048


def nearest_rows(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """[n, min(k, n - 1)] indices of each row's nearest other rows by cosine, nearest first.

    Above EXACT_ROWS rows a row's neighbours are searched within its k-means cell only
    (spherical k-means on a sample, n / CELL_ROWS cells): near neighbours share a cell
    far more often than not, and the few that don't are replaced by the next nearest.
    """
    x = unit_rows(np.asarray(vectors, np.float32))
    n = len(x)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), np.int64)
    if n <= EXACT_ROWS:
        return _exact(x, np.arange(n), k)
    nlist = max(2, math.ceil(n / CELL_ROWS))
    _centroids, cells = spherical_kmeans(x, nlist, seed=seed)
    order, offsets = layout(cells, nlist)
    out = np.empty((n, k), np.int64)
    for cell in range(nlist):
        members = order[offsets[cell] : offsets[cell + 1]]
        if len(members) == 0:
            continue
        if len(members) <= k:  # a cell too small to hold k neighbours: the whole matrix
            out[members] = _exact_against(x, members, k)
        else:
            out[members] = members[_exact(x[members], np.arange(len(members)), k)]
    return out


def _exact(x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(rows), k), np.int64)
    for s in range(0, len(rows), QUERY_BLOCK):
        block = rows[s : s + QUERY_BLOCK]
        out[s : s + len(block)] = exact_top(x[block], x, k, skip=block)
    return out


def _exact_against(x: np.ndarray, members: np.ndarray, k: int) -> np.ndarray:
    return np.vstack(
        [
            exact_top(x[members[s : s + QUERY_BLOCK]], x, k, skip=members[s : s + QUERY_BLOCK])
            for s in range(0, len(members), QUERY_BLOCK)
        ]
    )
