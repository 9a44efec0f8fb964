"""The search layer at scale: exact and IVF strategies behind Matrix.top_k, the index
stored in the database, cache invalidation, the fast vec0 reader, read-only readers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from semsearch_sqlite.storage import vec0
from semsearch_sqlite.storage.store import Store, connect
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL
from semsearch_sqlite.vectors import ivf, matrix, upkeep

from .helpers import file_state, ivf_matrix, make_db, structured, unit, write


def clustered(n: int, d: int, clusters: int, spread: float, seed: int = 0) -> np.ndarray:
    """Gaussian mixture, float32."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    x = centers[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d))
    return x.astype(np.float32)


def exact_ids(m: matrix.Matrix, q: np.ndarray, k: int, exclude: set[int] | None = None) -> list[int]:
    scores = m.vectors @ q
    want = min(len(scores), k + len(exclude or ()) + 20)
    top = np.argpartition(-scores, want - 1)[:want]
    order = top[np.lexsort((m.ids[top], -scores[top]))]
    return [int(m.ids[i]) for i in order if not exclude or int(m.ids[i]) not in exclude][:k]


@pytest.fixture(autouse=True)
def fresh_cache():
    matrix.clear_cache()
    yield
    matrix.clear_cache()


# -- strategies --------------------------------------------------------------------------------
def test_ivf_returns_the_exact_top_k_on_structured_data():
    m = ivf_matrix(clustered(2400, 32, clusters=40, spread=0.15))
    assert m.ivf is not None and m.strategy(10) == "ivf"
    rng = np.random.default_rng(1)
    for i in rng.choice(len(m), 100, replace=False):
        q = m.vectors[i]
        got = m.top_k(q, 10)
        assert [g for g, _ in got] == exact_ids(m, q, 10)
        want = m.top_k(q, 10, exact=True)
        assert [d for _, d in got] == pytest.approx([d for _, d in want], abs=1e-5)


def test_ivf_recall_on_a_medium_set_is_at_least_095():
    m = ivf_matrix(structured(30_000, 48))
    assert m.strategy(10) == "ivf"
    assert m.ivf is not None and m.ivf.scan_share(10) < 0.5
    rng = np.random.default_rng(2)
    recalls = []
    for n_ in range(200):
        if n_ % 2:  # a stored vector asking for its neighbours
            i = int(rng.integers(len(m)))
            q, excl = m.vectors[i], {int(m.ids[i])}
        else:  # a "two-word" query between stored vectors
            a, b = rng.integers(0, len(m), 2)
            q, excl = unit((m.vectors[a] + m.vectors[b])[None])[0], None
        got = {i for i, _ in m.top_k(q, 10, exclude=excl)}
        recalls.append(len(got & set(exact_ids(m, q, 10, excl))) / 10)
    assert np.mean(recalls) >= 0.95


def test_exclusions_weights_and_large_k():
    m = ivf_matrix(clustered(3000, 24, clusters=30, spread=0.3, seed=3))
    q = m.vectors[10]
    me = int(m.ids[10])
    got = m.top_k(q, 10, exclude={me})
    assert len(got) == 10 and me not in {i for i, _ in got}
    assert [i for i, _ in got] == exact_ids(m, q, 10, {me})
    # weights: the focused search's re-weighted cosine, always exact
    w = np.linspace(0.1, 2.0, 24).astype(np.float32)
    assert m.strategy(10, weights=w) == "exact"
    mw = unit(m.vectors * w)
    expect = np.lexsort((m.ids, -(mw @ unit((q * w)[None])[0])))[:5]
    weighted = m.top_k(q, 5, weights=w)
    assert [i for i, _ in weighted] == [int(m.ids[j]) for j in expect]
    # a large k (or many exclusions) is answered exactly
    assert m.strategy(500) == "exact"
    assert [i for i, _ in m.top_k(q, 500)] == exact_ids(m, q, 500)
    assert m.strategy(10, exclude=set(range(1, 200))) == "exact"
    # ids, not row positions, come back; vector() finds rows by id
    assert np.array_equal(m.vector(me), q)
    assert m.vector(10**9) is None and m.vector(-1) is None


def test_exact_can_be_forced(monkeypatch):
    m = ivf_matrix(clustered(2000, 16, clusters=20, spread=0.2))
    assert m.strategy(10) == "ivf"
    assert m.strategy(10, exact=True) == "exact"
    monkeypatch.setenv(matrix.EXACT_ENV, "1")
    assert m.strategy(10) == "exact"
    assert m.strategy(10, exact=False) == "ivf"
    monkeypatch.setenv(matrix.EXACT_ENV, "0")
    assert m.strategy(10) == "ivf"


def test_small_tables_get_no_index_and_stay_exact(tmp_path):
    store = make_db(tmp_path / "s.db", clustered(500, 16, 5, 0.3))
    summary = upkeep.refresh_index(store, VEC_VISUAL)
    assert summary["action"] == "none"
    assert store.load_model(ivf.index_name(VEC_VISUAL)) is None
    m = matrix.matrix(store.conn, VEC_VISUAL)
    assert m.ivf is None and m.strategy(10) == "exact"
    assert upkeep.refresh_index(store, VEC_SEMANTIC)["action"] == "none"  # no such table


# -- the stored index -------------------------------------------------------------------------
def test_stored_index_round_trip_and_incremental_rows(tmp_path):
    path = tmp_path / "photos.db"
    x = clustered(3000, 32, clusters=30, spread=0.2, seed=4)
    ids = np.arange(1, 3001) * 7  # ids are not row numbers
    store = make_db(path, x, ids=ids)
    built = upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)
    assert built["action"] == "built" and built["rows"] == 3000
    saved = store.load_model(ivf.index_name(VEC_VISUAL))
    assert saved is not None
    arrays, config = saved
    assert config["table"] == VEC_VISUAL and config["count"] == 3000 and config["dim"] == 32
    assert sorted(arrays) == ["centroids", "fingerprints", "ids", "labels"]
    assert upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)["action"] == "unchanged"

    # a reader in another connection (read-only) uses it as stored
    matrix.clear_cache()
    reader = Store.open(path, readonly=True)
    m = matrix.matrix(reader.conn, VEC_VISUAL)
    assert m.ivf is not None and m.strategy(10) == "ivf"
    assert np.array_equal(m.ivf.centroids, arrays["centroids"])
    assert sorted(m.ids.tolist()) == sorted(ids.tolist())
    for i in (0, 1234, 2999):
        q = unit(x[i : i + 1])[0]
        assert m.top_k(q, 1)[0][0] == int(ids[i])
        assert np.allclose(m.vector(int(ids[i])), q, atol=1e-6)
        assert [a for a, _ in m.top_k(q, 10)] == exact_ids(m, q, 10)

    # new rows and a rewritten vector, without a refresh: the reader assigns them in memory
    new = clustered(40, 32, clusters=30, spread=0.2, seed=4)[:40] + 0.01
    write(store, VEC_VISUAL, list(range(100_001, 100_041)), new)
    moved = clustered(3000, 32, clusters=30, spread=0.2, seed=4)[2000] * -1.0  # far from where it was
    write(store, VEC_VISUAL, [int(ids[0])], moved[None])
    m2 = matrix.matrix(reader.conn, VEC_VISUAL)
    assert m2 is not m and len(m2) == 3040 and m2.ivf is not None
    assert m2.top_k(unit(new[5:6])[0], 1)[0][0] == 100_006
    assert m2.top_k(unit(moved[None])[0], 1)[0][0] == int(ids[0])
    assert np.allclose(m2.vector(int(ids[0])), unit(moved[None])[0], atol=1e-6)

    # the writer's refresh stores the new rows' lists: same answers, index updated
    summary = upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)
    assert summary["action"] == "updated" and summary["config"]["count"] == 3040
    m3 = matrix.matrix(reader.conn, VEC_VISUAL)
    assert m3 is not m2  # the stored index changed, so the cache key did
    assert m3.top_k(unit(new[5:6])[0], 1)[0][0] == 100_006
    reader.close()
    store.close()


def test_refresh_retrains_when_the_table_doubles_and_drops_when_small(tmp_path):
    store = make_db(tmp_path / "g.db", clustered(1500, 16, 15, 0.2, seed=5))
    assert upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)["action"] == "built"
    write(store, VEC_VISUAL, list(range(1501, 3101)), clustered(1600, 16, 15, 0.2, seed=6))
    summary = upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)
    assert summary["action"] == "built" and summary["config"]["n_trained"] == 3100
    # re-embedding everything (same ids, new vectors) retrains too
    write(store, VEC_VISUAL, list(range(1, 3101)), clustered(3100, 16, 15, 0.2, seed=7))
    assert upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)["action"] == "built"
    assert upkeep.refresh_index(store, VEC_VISUAL, min_cells=0, rebuild=True)["action"] == "built"
    # below the size where an index pays, a stored one is dropped
    assert upkeep.refresh_index(store, VEC_VISUAL)["action"] == "dropped"
    assert store.load_model(ivf.index_name(VEC_VISUAL)) is None
    store.close()


def test_an_index_for_other_dimensions_is_ignored(tmp_path):
    store = make_db(tmp_path / "d.db", clustered(1200, 16, 12, 0.2))
    upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)
    with store.atomic():
        store.drop_vec_table(VEC_VISUAL)
        store.ensure_vec_table(VEC_VISUAL, 8)
        store.write_vectors(VEC_VISUAL, list(range(1, 1201)), clustered(1200, 8, 12, 0.2))
        store.bump_generation()
    m = matrix.matrix(store.conn, VEC_VISUAL)
    assert m.ivf is None and m.vectors.shape == (1200, 8)
    store.close()


# -- caching -----------------------------------------------------------------------------------
def test_cache_follows_generation_and_index(tmp_path):
    store = make_db(tmp_path / "c.db", clustered(1000, 8, 10, 0.2))
    m1 = matrix.matrix(store.conn, VEC_VISUAL)
    assert matrix.matrix(store.conn, VEC_VISUAL) is m1
    other = connect(tmp_path / "c.db", readonly=True)
    assert matrix.matrix(other, VEC_VISUAL) is m1  # same file, same generation: shared
    with store.atomic():  # a write without a generation bump is not seen (by design)
        store.write_vectors(VEC_VISUAL, [5000], np.ones((1, 8), np.float32))
    assert matrix.matrix(store.conn, VEC_VISUAL) is m1
    with store.atomic():
        store.bump_generation()
    m2 = matrix.matrix(store.conn, VEC_VISUAL)
    assert m2 is not m1 and m2.vector(5000) is not None
    upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)
    m3 = matrix.matrix(other, VEC_VISUAL)
    assert m3 is not m2 and m3.ivf is not None
    other.close()
    store.close()


# -- reading vec0 ------------------------------------------------------------------------------
def test_fast_reader_matches_the_sql_read_with_holes(tmp_path):
    x = clustered(2500, 12, 10, 0.5)
    store = make_db(tmp_path / "r.db", x)
    with store.atomic():
        store.delete_vectors(VEC_VISUAL, list(range(3, 2500, 7)))  # holes in every chunk
        store.write_vectors(VEC_VISUAL, [4, 9000], x[:2] * 3)  # rewritten + new
        store.bump_generation()
    fast = vec0.open_rows(store.conn, VEC_VISUAL, 12)
    assert isinstance(fast, vec0.ChunkRows)
    slow = vec0.SqlRows(store.conn, VEC_VISUAL)
    assert sorted(fast.ids.tolist()) == slow.ids.tolist()
    a = np.empty((len(fast.ids), 12), np.float32)
    b = np.empty((len(slow.ids), 12), np.float32)
    assert fast.fill(a, None) and slow.fill(b, None)
    order = np.argsort(fast.ids)
    assert np.array_equal(a[order], b)
    rows = np.array([0, 17, len(fast.ids) - 1])
    assert np.array_equal(fast.read_rows(rows), a[rows])
    # the drop-in for store.read_vectors: same ids, same raw vectors
    ids_fast, raw_fast = vec0.read_vectors(store.conn, VEC_VISUAL)
    ids_sql, raw_sql = store.read_vectors(VEC_VISUAL)
    assert np.array_equal(ids_fast, ids_sql) and np.array_equal(raw_fast, raw_sql)
    assert vec0.read_vectors(store.conn, VEC_SEMANTIC)[0].shape == (0,)
    m = matrix.load_matrix(store.conn, VEC_VISUAL)
    m_sql = matrix.load_matrix(store.conn, VEC_VISUAL, fast=False)
    for i in (1, 4, 9000, 2499):
        assert np.array_equal(m.vector(i), m_sql.vector(i))
    assert m.vector(3) is None
    store.close()


def test_fast_reader_notices_a_write_between_its_reads(tmp_path):
    path = tmp_path / "w.db"
    store = make_db(path, clustered(1500, 8, 10, 0.5))
    reader = connect(path, readonly=True)
    src = vec0.ChunkRows.open(reader, VEC_VISUAL, 8)
    assert src is not None
    write(store, VEC_VISUAL, [77], np.ones((1, 8), np.float32))  # moves row 77
    assert src.fill(np.empty((len(src.ids), 8), np.float32), None) is False
    m = matrix.load_matrix(reader, VEC_VISUAL)  # retries and gets a consistent copy
    assert np.allclose(m.vector(77), np.full(8, 8**-0.5), atol=1e-6)
    reader.close()
    store.close()


def test_unknown_vec0_layouts_fall_back_to_sql(tmp_path, monkeypatch):
    store = make_db(tmp_path / "f.db", clustered(300, 8, 3, 0.5))
    monkeypatch.setattr(vec0, "_CHUNKS_SQL", re.compile("never"))
    assert isinstance(vec0.open_rows(store.conn, VEC_VISUAL, 8), vec0.SqlRows)
    m = matrix.matrix(store.conn, VEC_VISUAL)
    assert len(m) == 300 and m.top_k(m.vectors[0], 1)[0][0] == int(m.ids[0])
    store.close()


# -- readers never write ------------------------------------------------------------------------
def test_readers_never_write(tmp_path):
    path = tmp_path / "ro.db"
    x = clustered(2000, 16, 20, 0.2)
    store = make_db(path, x)
    upkeep.refresh_index(store, VEC_VISUAL, min_cells=0)
    write(store, VEC_VISUAL, list(range(5001, 5051)), x[:50] + 0.05)  # rows the index lacks
    store.close()
    before = file_state(path)
    assert before[2] == 0
    for stored_index in (True, False):
        matrix.clear_cache()
        reader = Store.open(path, readonly=True)
        m = matrix.matrix(reader.conn, VEC_VISUAL)
        assert (m.ivf is not None) is stored_index
        assert len(m) == 2050 and m.top_k(m.vectors[3], 5)
        assert reader.conn.total_changes == 0
        reader.close()
        if stored_index:  # now the same file without any index
            with Store.open(path) as w, w.atomic():
                w.conn.execute("delete from models")
            before = file_state(path)
        assert file_state(path) == before


def test_equal_scores_at_the_cut_are_taken_in_id_order(tmp_path):
    # several images with the very same vector (e.g. new photos of one label in word space)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    same = [6, 13, 27, 41, 55]
    x[same] = x[0]
    store = make_db(tmp_path / "t.db", x)
    m = matrix.matrix(store.conn, VEC_VISUAL)
    q = x[0] / np.linalg.norm(x[0])
    everything = [i for i, _ in m.top_k(q, 20, exact=True)]
    assert everything[:6] == sorted(everything[:6])  # six equal scores: by id
    for k in range(1, 7):  # a shorter list is always the start of the longer one
        assert [i for i, _ in m.top_k(q, k, exact=True)] == everything[:k]
    store.close()
