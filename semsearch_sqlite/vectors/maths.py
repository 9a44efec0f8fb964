"""Vector arithmetic shared by every layer (numpy only)."""

from __future__ import annotations

import numpy as np


# -- numpy helpers -------------------------------------------------------------------------
def unit_rows_inplace(m: np.ndarray) -> np.ndarray:
    """Scale each row of float32 ``m`` to length 1 in place (zero rows stay zero)."""
    if m.size:
        norms = np.sqrt(np.einsum("ij,ij->i", m, m))
        norms[norms == 0] = 1
        m /= norms[:, None]
    return m


# word neighbours averaged for a word's hubness r (as in CSLS, Conneau et al. 2018)
CSLS_NEIGHBOURS = 10


def hubness(vectors: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """CSLS r of each unit row of ``vectors``: its mean cosine to its CSLS_NEIGHBOURS nearest
    unit rows of ``vocabulary`` (the nearest, itself when it is a vocabulary word, left out)."""
    sims = np.asarray(vectors, np.float32) @ np.asarray(vocabulary, np.float32).T
    n = sims.shape[1]
    k = min(CSLS_NEIGHBOURS + 1, n)
    sims.partition(n - k, axis=1)  # in place: the k largest last (a copy of 50k columns costs more)
    top = np.sort(sims[:, n - k :], axis=1)[:, ::-1]
    top = top[:, 1:] if k > 1 else top
    return top.mean(axis=1).astype(np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (zero stays zero)."""
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Each row of ``m`` scaled to length 1."""
    m = np.asarray(m, dtype=np.float32)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    n[n == 0] = 1
    return m / n
