"""The rescoring copy of a big table on disk: int16 rows plus a float32 scale (half the
bytes of float32), rescored searches still finding the exact neighbours, and files
whose copy was written in float32 by earlier versions read as they are."""

from __future__ import annotations

import numpy as np
import pytest

from semsearch_sqlite.storage import vec0
from semsearch_sqlite.storage.vec0 import VEC_VISUAL
from semsearch_sqlite.vectors import codes, matrix, upkeep

from .helpers import make_db, relu_structured, unit, write

N, D = 3000, 128


pytestmark = pytest.mark.usefixtures("fresh_matrix_cache")


def copy_lengths(conn) -> set[int]:
    table = vec0.float_rows_table(VEC_VISUAL)
    return {int(r[0]) for r in conn.execute(f'select distinct length(embedding) from "{table}"')}


def as_float32_copy(store, ids: np.ndarray, x: np.ndarray) -> None:
    """Rewrite copy rows the way earlier versions stored them: raw float32."""
    table = vec0.float_rows_table(VEC_VISUAL)
    with store.atomic():
        store.conn.executemany(
            f'update "{table}" set embedding = ? where id = ?',
            ((v.astype("<f4").tobytes(), int(i)) for i, v in zip(ids, x)),
        )


def exact_top(x: np.ndarray, q: np.ndarray, k: int, skip: int) -> list[int]:
    s = unit(x) @ q
    s[skip - 1] = -np.inf
    return [int(i) + 1 for i in np.argsort(-s, kind="stable")[:k]]


def test_rows_round_trip_within_int16_rounding():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal((20, 300)).astype(np.float32) * 50, np.zeros((1, 300), np.float32)])
    x[3] *= 1e-6  # any scale
    blobs = vec0.encode_float_rows(x)
    assert {len(b) for b in blobs} == {2 * 300 + 4} == {vec0.float_row_bytes(300)}
    back = vec0.decode_float_rows(blobs, 300)
    step = np.abs(x).max(axis=1, keepdims=True) / 32767  # each row's rounding step
    assert np.all(np.abs(back - x) <= 0.501 * step)  # float32 products: a hair over half a step
    assert np.abs(unit(back[:-1]) @ unit(x[:-1]).T - unit(x[:-1]) @ unit(x[:-1]).T).max() < 1e-5  # cosines
    assert not back[-1].any()  # a zero vector stays zero
    # tiny dimensions stay float32: a compact row could be as long as a float32 one
    small = rng.random((3, 2)).astype(np.float32)
    assert np.array_equal(vec0.decode_float_rows(vec0.encode_float_rows(small), 2), small)


def test_the_copy_is_compact_and_searches_find_the_exact_neighbours(tmp_path):
    x = relu_structured(N, D, scale=10)
    store = make_db(tmp_path / "big.db", x)
    assert upkeep.refresh_index(store, VEC_VISUAL, compact=True)["action"] == "built"
    assert copy_lengths(store.conn) == {2 * D + 4}
    m = matrix.matrix(store.conn, VEC_VISUAL)
    assert isinstance(m, codes.CompactMatrix) and m.strategy(10) == "codes"
    u = unit(x)
    # a query by stored id starts from the exact vector (vec0), not the copy
    assert np.allclose(m.vector(17), u[16], atol=1e-6)
    recall = []
    for i in np.random.default_rng(2).choice(N, 50, replace=False).tolist():
        got = m.top_k(u[i], 10, exclude={i + 1})
        recall.append(len({g for g, _ in got} & set(exact_top(x, u[i], 10, i + 1))) / 10)
        for item, dist in got:
            assert dist == pytest.approx(1 - float(u[item - 1] @ u[i]), abs=1e-4)
    assert np.mean(recall) >= 0.95
    store.close()


def test_a_float32_copy_from_an_earlier_version_is_read_as_it_is(tmp_path):
    x = relu_structured(N, D, seed=4, scale=10)
    store = make_db(tmp_path / "old.db", x)
    upkeep.refresh_index(store, VEC_VISUAL, compact=True)
    ids = np.arange(1, N + 1)
    as_float32_copy(store, ids, x)
    assert copy_lengths(store.conn) == {4 * D}
    found, rows = vec0.read_float_rows(store.conn, VEC_VISUAL, np.array([5, 6]), D, fallback=False)
    assert np.array_equal(rows[np.argsort(found)], x[4:6])  # float32 rows come back bit for bit
    # the stored index and its float32 copy are kept, not rebuilt
    assert upkeep.refresh_index(store, VEC_VISUAL, compact=True)["action"] == "unchanged"
    matrix.clear_cache()
    m = matrix.matrix(store.conn, VEC_VISUAL)
    u = unit(x)
    for item, dist in m.top_k(u[9], 10, exclude={10}):
        assert dist == pytest.approx(1 - float(u[item - 1] @ u[9]), abs=1e-5)
    # a writer adds compact rows beside the old ones; both kinds are read
    new = relu_structured(1, D, seed=9, scale=10)
    write(store, VEC_VISUAL, [N + 1], new)
    assert copy_lengths(store.conn) == {4 * D, 2 * D + 4}
    found, rows = vec0.read_float_rows(store.conn, VEC_VISUAL, np.array([3, N + 1]), D, fallback=False)
    got = dict(zip(found.tolist(), rows))
    assert np.array_equal(got[3], x[2])
    assert np.abs(got[N + 1] - new[0]).max() <= 0.501 * np.abs(new).max() / 32767
    # a rebuild rewrites the whole copy compact
    assert upkeep.refresh_index(store, VEC_VISUAL, rebuild=True, compact=True)["action"] == "built"
    assert copy_lengths(store.conn) == {2 * D + 4}
    store.close()
