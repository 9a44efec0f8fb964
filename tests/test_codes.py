"""Big tables in bounded memory: 1-bit codes by IVF list, exact rescoring from the
file's float-row copy, the writers keeping that copy in step, stale indexes read
correctly, and the exact fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from semsearch_sqlite.storage import vec0
from semsearch_sqlite.storage.models import has_model, model_config
from semsearch_sqlite.storage.store import Store, connect
from semsearch_sqlite.storage.vec0 import VEC_VISUAL
from semsearch_sqlite.vectors import codes, matrix, upkeep

from .helpers import file_state, make_db, relu_structured, unit, write

N, D = 3000, 128


pytestmark = pytest.mark.usefixtures("fresh_matrix_cache")


def exact(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, exclude: set[int] | None = None) -> list[int]:
    s = unit(x) @ q
    order = np.lexsort((ids, -s))
    return [int(ids[i]) for i in order if not exclude or int(ids[i]) not in exclude][:k]


@pytest.fixture
def big(tmp_path):
    """A file whose image table has a stored code index (forced: it is small)."""
    path = tmp_path / "big.db"
    x = relu_structured(N, D)
    store = make_db(path, x)
    summary = upkeep.refresh_index(store, VEC_VISUAL, compact=True)
    assert summary["action"] == "built"
    return path, store, x


def test_codes_and_hamming_match_the_bits():
    rng = np.random.default_rng(0)
    x = unit(rng.random((50, 100)).astype(np.float32))
    thr = x.mean(axis=0)
    c = codes.encode(x, thr)
    assert c.shape == (50, codes.code_bytes(100)) == (50, 16)
    bits = np.unpackbits(c, axis=1)[:, :100].astype(bool)
    assert (bits == (x > thr)).all() and not np.unpackbits(c, axis=1)[:, 100:].any()
    want = (bits != bits[7]).sum(axis=1)
    assert np.array_equal(codes.hamming(c, c[7]), want)


def test_readers_search_the_codes_and_rescore_exactly(big):
    path, store, x = big
    store.close()
    conn = connect(path, readonly=True)
    m = matrix.matrix(conn, VEC_VISUAL)
    assert isinstance(m, codes.CompactMatrix) and m.strategy(10) == "codes"
    assert len(m) == N and m.dim == D
    assert m.nbytes < N * D  # far below the float matrix's 4 bytes a cell
    ids = np.arange(1, N + 1)
    u = unit(x)
    rng = np.random.default_rng(3)
    found = []
    for i in rng.choice(N, 60, replace=False).tolist():
        got = m.top_k(u[i], 10, exclude={i + 1})
        truth = exact(x, ids, u[i], 10, exclude={i + 1})
        found.append(len({g for g, _ in got} & set(truth)) / 10)
        # the distances are the exact ones of the stored vectors, to the copy's int16 rounding
        for item, dist in got:
            assert dist == pytest.approx(1 - float(u[item - 1] @ u[i]), abs=5e-4)
    assert np.mean(found) >= 0.95
    assert np.allclose(m.vector(17), u[16], atol=1e-6) and m.vector(N + 5) is None
    config = model_config(conn, codes.codes_name(VEC_VISUAL))
    assert config is not None and config["nprobe"] >= 1 and config["shortlist"] in codes.SHORTLISTS
    conn.close()


def test_exact_queries_and_weights_stream_the_table(big):
    path, store, x = big
    m = matrix.matrix(store.conn, VEC_VISUAL)
    ids = np.arange(1, N + 1)
    q = unit(x[5:6])[0]
    got = m.top_k(q, 12, exact=True)
    assert [g for g, _ in got] == exact(x, ids, q, 12)
    w = np.linspace(0, 2, D).astype(np.float32)
    weighted = [g for g, _ in m.top_k(q, 8, weights=w)]
    xw = x * w
    assert weighted == exact(xw, ids, unit((x[5] * w)[None, :])[0], 8)
    store.close()


def test_filtered_searches_are_exact_over_the_allowed_ids(big, monkeypatch):
    path, store, x = big
    m = matrix.matrix(store.conn, VEC_VISUAL)
    ids = np.arange(1, N + 1)
    q = unit(x[9:10])[0]
    allowed = np.arange(3, N + 1, 7)  # every 7th image, as a label filter would give
    want = exact(x[allowed - 1], allowed, q, 10)
    assert [g for g, _ in m.top_k(q, 10, allowed=allowed)] == want
    # a filter too wide to read by id is one filtered scan of the table: the same answer
    monkeypatch.setattr(codes, "ALLOWED_READ_MAX", 5)
    assert [g for g, _ in m.top_k(q, 10, allowed=allowed)] == want
    assert m.top_k(q, 10, allowed=np.zeros(0, dtype=np.int64)) == []
    assert set(dict(m.top_k(q, 5, allowed=ids)).keys()) <= set(ids.tolist())
    store.close()


def test_writers_keep_the_float_copy_in_step(big):
    path, store, x = big
    conn = store.conn
    assert vec0.has_float_rows(conn, VEC_VISUAL)
    new = np.full((1, D), 0.25, dtype=np.float32)
    write(store, VEC_VISUAL, [9], new)
    found, rows = vec0.read_float_rows(conn, VEC_VISUAL, np.array([9, 10]), D)
    assert sorted(found.tolist()) == [9, 10]
    assert np.allclose(rows[found.tolist().index(9)], new[0], rtol=1e-3)
    with store.atomic():
        store.delete_vectors(VEC_VISUAL, [10])
    assert len(vec0.read_float_rows(conn, VEC_VISUAL, np.array([10]), D, fallback=False)[0]) == 0
    with store.atomic():
        store.drop_vec_table(VEC_VISUAL)
    assert not vec0.has_float_rows(conn, VEC_VISUAL) and not vec0.has_code_lists(conn, VEC_VISUAL)
    store.close()


def test_rows_missing_from_the_copy_are_read_from_vec0(big):
    path, store, x = big
    with store.atomic():
        vec0.delete_float_rows(store.conn, VEC_VISUAL, [4, 5])
    found, rows = vec0.read_float_rows(store.conn, VEC_VISUAL, np.array([3, 4, 5]), D)
    assert sorted(found.tolist()) == [3, 4, 5]
    assert np.allclose(rows[found.tolist().index(5)], x[4])
    # a copy out of step (written around the Store) is rebuilt by the next refresh
    with store.atomic():
        store.bump_generation()
    assert upkeep.refresh_index(store, VEC_VISUAL, compact=True)["action"] == "built"
    assert len(vec0.read_float_rows(store.conn, VEC_VISUAL, np.array([4, 5]), D, fallback=False)[0]) == 2
    store.close()


def test_a_stale_index_is_brought_up_to_date_in_memory_without_writing(big):
    path, store, x = big
    extra = relu_structured(40, D, seed=9)
    write(store, VEC_VISUAL, list(range(N + 1, N + 41)), extra)  # rows the index lacks
    with store.atomic():
        store.delete_vectors(VEC_VISUAL, [1, 2, 3])
        store.bump_generation()
    store.close()
    before = file_state(path)
    reader = connect(path, readonly=True)
    m = matrix.matrix(reader, VEC_VISUAL)
    assert isinstance(m, codes.CompactMatrix) and m.index is not None
    assert len(m) == N - 3 + 40
    for j in range(0, 40, 7):  # a new row is its own nearest neighbour
        assert m.top_k(unit(extra[j : j + 1])[0], 1)[0][0] == N + 1 + j
    q = unit(x[:1])[0]
    assert not {1, 2, 3} & {g for g, _ in m.top_k(q, 20)}
    assert reader.total_changes == 0
    reader.close()
    assert file_state(path) == before
    # the writer's refresh folds them in; a re-embed (every vector rewritten) rebuilds
    store = Store.open(path)
    assert upkeep.refresh_index(store, VEC_VISUAL, compact=True)["action"] == "updated"
    assert upkeep.refresh_index(store, VEC_VISUAL, compact=True)["action"] == "unchanged"
    ids = vec0.ChunkRows.open(store.conn, VEC_VISUAL, D).ids
    write(store, VEC_VISUAL, ids.tolist(), relu_structured(len(ids), D, seed=4))
    assert upkeep.refresh_index(store, VEC_VISUAL, compact=True)["action"] == "built"
    store.close()


def test_without_a_usable_code_index_big_tables_stream_exactly(big, monkeypatch):
    path, store, x = big
    ids = np.arange(1, N + 1)
    q = unit(x[11:12])[0]
    # a code list rewritten under another stamp: the index is ignored, not trusted
    with store.atomic():
        store.conn.execute(f"update {vec0.code_lists_table(VEC_VISUAL)} set stamp = 'other' where list = 0")
        store.bump_generation()
    assert codes.load_code_index(store.conn, VEC_VISUAL, D) is None
    m = matrix.matrix(store.conn, VEC_VISUAL)
    assert isinstance(m, codes.CompactMatrix) and m.index is None and m.strategy(10) == "exact"
    assert [g for g, _ in m.top_k(q, 10)] == exact(x, ids, q, 10)
    # no code index at all, but too big for a float matrix: still streamed
    with store.atomic():
        store.conn.execute("delete from models")
        store.bump_generation()
    monkeypatch.setattr(codes, "COMPACT_MIN_BYTES", 1024)
    m = matrix.matrix(store.conn, VEC_VISUAL)
    assert isinstance(m, codes.CompactMatrix) and m.index is None
    assert [g for g, _ in m.top_k(q, 10)] == exact(x, ids, q, 10)
    store.close()


def test_small_again_means_a_float_matrix_again(big):
    path, store, x = big
    summary = upkeep.refresh_index(store, VEC_VISUAL, compact=False, min_cells=0)
    assert summary["action"] == "built"  # the float IVF index
    conn = store.conn
    assert not has_model(conn, codes.codes_name(VEC_VISUAL))
    assert not vec0.has_float_rows(conn, VEC_VISUAL) and not vec0.has_code_lists(conn, VEC_VISUAL)
    m = matrix.matrix(conn, VEC_VISUAL)
    assert isinstance(m, matrix.Matrix) and m.ivf is not None
    store.close()


def test_in_memory_databases_keep_the_float_matrix(monkeypatch):
    monkeypatch.setattr(codes, "COMPACT_MIN_BYTES", 1024)
    store = Store.open(":memory:", create=True)
    x = relu_structured(1200, 32)
    with store.atomic():
        store.ensure_vec_table(VEC_VISUAL, 32)
        store.write_vectors(VEC_VISUAL, list(range(1, 1201)), x)
    assert isinstance(matrix.matrix(store.conn, VEC_VISUAL), matrix.Matrix)
    store.close()


def test_the_chunk_stream_matches_the_table_with_holes(tmp_path):
    x = relu_structured(2500, 16)
    store = make_db(tmp_path / "holes.db", x)
    with store.atomic():
        store.delete_vectors(VEC_VISUAL, list(range(100, 1500, 3)))
    ids, want = vec0.read_vectors(store.conn, VEC_VISUAL)
    parts = list(vec0.read_chunks(store.conn, VEC_VISUAL, 16))
    got_ids = np.concatenate([i for i, _ in parts])
    got = np.concatenate([r for _, r in parts])
    order = np.argsort(got_ids)
    assert np.array_equal(got_ids[order], ids) and np.array_equal(got[order], want)
    chunks = vec0.chunk_ids(store.conn, VEC_VISUAL)
    assert len(chunks) == 3 and len(list(vec0.read_chunks(store.conn, VEC_VISUAL, 16, chunks[1:2]))) == 1
    store.close()
