"""Filtered top k and near-duplicate pairs on the IVF path (large collections)."""

from __future__ import annotations

import numpy as np
import pytest

from semsearch_sqlite.queries import duplicates
from semsearch_sqlite.vectors import matrix

from .helpers import ivf_matrix, structured, unit


def exact_allowed(m: matrix.Matrix, q: np.ndarray, k: int, allowed: np.ndarray) -> list[int]:
    keep = np.isin(m.ids, allowed)
    scores = np.where(keep, m.vectors @ q, -np.inf)
    return [int(m.ids[i]) for i in np.argsort(-scores, kind="stable")[:k] if keep[i]]


def test_small_subsets_are_scored_exactly() -> None:
    m = ivf_matrix(structured(6000, 32))
    rng = np.random.default_rng(1)
    allowed = np.sort(rng.choice(m.ids, 300, replace=False))
    for q in unit(structured(5, 32, seed=9)):
        got = [i for i, _ in m.top_k(q, 10, allowed=allowed)]
        assert got == exact_allowed(m, q, 10, allowed)
    assert m.top_k(unit(structured(1, 32, seed=3))[0], 10, allowed=np.array([10**9])) == []


def test_large_subsets_go_through_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    m = ivf_matrix(structured(30_000, 48))
    assert m.strategy(10) == "ivf"
    monkeypatch.setattr(matrix, "SUBSET_EXACT_MAX", 1000)
    allowed = m.ids[m.ids % 3 == 0]  # a third of the collection
    calls = []
    real = m.ivf.search
    monkeypatch.setattr(m.ivf, "search", lambda *a: calls.append(a[2]) or real(*a))
    recalls = []
    rng = np.random.default_rng(2)
    for _ in range(40):  # "two-word" queries between stored vectors, as in test_index
        a, b = rng.integers(0, len(m), 2)
        q = unit((m.vectors[a] + m.vectors[b])[None])[0]
        got = [i for i, _ in m.top_k(q, 10, allowed=allowed)]
        assert all(i % 3 == 0 for i in got) and len(got) == 10
        recalls.append(len(set(got) & set(exact_allowed(m, q, 10, allowed))) / 10)
    assert calls and min(calls) >= 10 * 3  # the shortlist is widened by the subset's rarity
    assert np.mean(recalls) >= 0.95


def test_duplicate_pairs_through_the_index_match_all_pairs() -> None:
    base = structured(24_000, 32, seed=2)
    rng = np.random.default_rng(4)
    copies = base[:300] + 0.02 * rng.standard_normal((300, 32)).astype(np.float32)
    m = ivf_matrix(np.vstack([base, copies]))
    assert m.ivf is not None and len(m) > duplicates.EXACT_MAX
    threshold = 0.01
    found = {frozenset((int(m.ids[i]), int(m.ids[j]))) for i, j, _ in duplicates._pairs(m.vectors, m.ids, m, threshold)}
    planted = {frozenset((i + 1, 24_000 + i + 1)) for i in range(300)}
    close = {p for p in planted if 1 - float(m.vector(min(p)) @ m.vector(max(p))) <= threshold}
    assert len(close) > 250  # the planted copies are within the threshold
    assert len(close & found) / len(close) >= 0.95
    assert all(1 - float(m.vector(min(p)) @ m.vector(max(p))) <= threshold + 1e-6 for p in found)
