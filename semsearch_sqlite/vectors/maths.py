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
