"""Search quality, round 2 (part 2): WordNet anchoring of query words, neighbour smoothing
of the stored vectors, and the visual re-ranking of text hits. Real GloVe, the shipped
WordNet table, real SQLite databases made by the real ingest pipeline."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import pytest

from semsearch_sqlite.errors import UnknownWordsError
from semsearch_sqlite.model.conse import class_word_vectors, imagenet_class_names
from semsearch_sqlite.model.semantic import collection_semantics, fit_semantic
from semsearch_sqlite.model.smoothing import SMOOTH_WEIGHT, SMOOTH_WIDTH, fit_smoothing, smooth_vectors
from semsearch_sqlite.queries.search import similar_images, space_matrix, text_vector, visual_feedback
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.glove import WordVectors
from semsearch_sqlite.text.query import combine_terms, parse_query
from semsearch_sqlite.text.vocabulary import anchored_lookup, word_space
from semsearch_sqlite.text.wordnet import ANCHOR_WEIGHT, anchored, base_forms, kinship
from semsearch_sqlite.vectors import neighbours
from semsearch_sqlite.vectors.maths import unit, unit_rows
from semsearch_sqlite.vectors.rerank import FEEDBACK_SHORTLIST, FEEDBACK_TOP, feedback_order, feedback_ranking

NAMES = imagenet_class_names()


def kin_names(word: str) -> list[str]:
    found = kinship().kin(word)
    assert found is not None, word
    rows, weights = found
    return [NAMES[r].split(",")[0] for r in rows[np.argsort(-weights, kind="stable")]]


@pytest.fixture(scope="module")
def class_vectors(glove: WordVectors) -> np.ndarray:
    return class_word_vectors(NAMES, glove)[0]


# -- the shipped WordNet table --------------------------------------------------------------
def test_kin_classes_come_from_wordnet() -> None:
    assert set(kin_names("gerenuk")[:3]) == {"impala", "gazelle", "hartebeest"}  # antelopes
    assert kin_names("ketch")[0] == "schooner"  # sailing vessels
    assert {"hen", "cock"} <= set(kin_names("rooster")[:2])
    assert kin_names("sunflower")[0] == "daisy"
    assert kinship().kin("music") is None and kinship().kin("democracy") is None  # nothing close
    assert kinship().kin("zzqqzz") is None
    # only the first senses count: "cat" the house cat, not "big cat"
    assert "tabby" in kin_names("cat")[:7] and "lion" not in kin_names("cat")[:7]


def test_plurals_phrases_and_case() -> None:
    assert kinship().kin("Ketches") is not None and kin_names("ketches") == kin_names("ketch")
    assert kin_names("geese") == kin_names("goose")  # WordNet's irregular plurals
    assert kinship().kin("sea_horse") is not None and kin_names("sea-horse") == kin_names("sea horse")
    assert "box" in base_forms("boxes") and "fly" in base_forms("flies")
    assert base_forms("grass")[0] == "grass"
    assert kinship().singular("geese") == "goose" and kinship().singular("goose") is None
    assert kinship().kin("") is None and kinship().kin("ketch\tx") is None and kinship().kin("a\nketch") is None


def test_shipped_table_is_what_the_tool_writes() -> None:
    raw = resources.files("semsearch_sqlite").joinpath("data/wordnet_classes.tsv.gz").read_bytes()
    lines = gzip.decompress(raw).decode().splitlines()
    rows = [line.split("\t") for line in lines if not line.startswith("=")]
    assert len(rows) > 20_000
    for lemma, best, pairs in rows[::997]:
        assert float(best) >= 0.8 and lemma == lemma.lower()
        weights = [float(p.split(":")[1]) for p in pairs.split()]
        assert max(weights) == 1.0 and min(weights) >= 0.01
        assert all(0 <= int(p.split(":")[0]) < 1000 for p in pairs.split())


# -- anchoring ---------------------------------------------------------------------------------
def test_anchored_moves_a_word_towards_its_kin(glove: WordVectors, class_vectors: np.ndarray) -> None:
    schooner = NAMES.index(next(n for n in NAMES if n.startswith("schooner")))
    oxcart = NAMES.index(next(n for n in NAMES if n.startswith("oxcart")))
    plain = unit(glove.get("ketch"))
    moved = anchored("ketch", plain, class_vectors)
    assert moved is not None
    cv = unit_rows(class_vectors)
    # GloVe alone puts "ketch" nearer the oxcart than the schooner; anchored, it is the other way
    assert cv[oxcart] @ plain > cv[schooner] @ plain
    assert cv[schooner] @ moved > cv[oxcart] @ moved
    assert np.isclose(np.linalg.norm(moved), 1.0, atol=1e-5)
    rows, weights = kinship().kin("ketch")  # type: ignore[misc]
    kin = unit(weights @ class_vectors[rows])
    assert np.allclose(moved, unit(plain + ANCHOR_WEIGHT * kin), atol=1e-5)
    # a word with no close class is left alone; a word GloVe lacks is its kin alone
    assert anchored("music", unit(glove.get("music")), class_vectors) is not None
    assert np.allclose(anchored("music", unit(glove.get("music")), class_vectors), unit(glove.get("music")))
    assert glove.get("gerenuk") is None
    gerenuk = anchored("gerenuk", None, class_vectors)
    assert gerenuk is not None and NAMES[int(np.argmax(cv @ gerenuk))].split(",")[0] in {"impala", "gazelle"}
    assert anchored("gerenuk", None, None) is None  # type: ignore[arg-type]


def test_anchored_lookup_leaves_labels_and_splits_compounds(glove: WordVectors, class_vectors: np.ndarray) -> None:
    lookup = anchored_lookup(glove.get, class_vectors, frozenset({"rooster", "car side"}))
    assert np.allclose(unit(lookup("rooster")), unit(glove.get("rooster")), atol=1e-6)  # a label: as it is
    assert not np.allclose(unit(lookup("hen")), unit(glove.get("hen")), atol=1e-3)  # not a label: anchored
    # a compound label stays the mean of its plain words; another compound is the mean of anchored words
    side = combine_terms(parse_query("car_side"), lookup).vector
    assert np.allclose(side, unit(unit(glove.get("car")) + unit(glove.get("side"))), atol=1e-5)
    cat_face = lookup("cat_face")
    assert cat_face is not None
    assert np.allclose(cat_face, unit(unit(lookup("cat")) + unit(lookup("face"))), atol=1e-5)  # type: ignore[arg-type]
    assert lookup("cat_zzqqzz") is None and lookup("zzqqzz") is None
    # WordNet's own compounds are looked up whole ("sea horse" is a fish, not a sea and a horse)
    assert kinship().kin("sea horse") is not None
    assert not np.allclose(unit(lookup("sea_horse")), unit(unit(lookup("sea")) + unit(lookup("horse"))), atol=1e-3)  # type: ignore[arg-type]


# -- neighbours and smoothing ------------------------------------------------------------------
def test_nearest_rows_exact_and_by_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 24))
    x = np.repeat(centres, 60, axis=0) + 0.15 * rng.normal(size=(2400, 24))
    xu = unit_rows(x.astype(np.float32))
    sims = xu @ xu.T
    np.fill_diagonal(sims, -np.inf)
    truth = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    exact = neighbours.nearest_rows(x, 10)
    assert exact.shape == (2400, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, truth)]) == 1.0
    monkeypatch.setattr(neighbours, "EXACT_ROWS", 500)
    monkeypatch.setattr(neighbours, "CELL_ROWS", 200)
    cells = neighbours.nearest_rows(x, 10)
    assert cells.shape == (2400, 10)
    assert not (cells == np.arange(2400)[:, None]).any()  # never itself
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(cells, truth)]) > 0.9
    assert neighbours.nearest_rows(x[:1], 10).shape == (1, 0)
    assert neighbours.nearest_rows(x[:3], 10).shape == (3, 2)


def test_smooth_vectors_weighs_neighbours_by_likeness() -> None:
    v = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    near = np.array([[[0.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]], np.float32)
    calibration = {"threshold": 0.5, "width": 0.05}
    # the first row's neighbours are both alike (cosine 0.9): weight ~1 each
    out = smooth_vectors(v, near, np.array([[0.9, 0.9], [0.1, 0.1]], np.float32), calibration)
    assert np.allclose(out[0], unit(np.array([1.0, SMOOTH_WEIGHT])), atol=1e-3)
    # the second row's are unlike it (0.1): it keeps its own vector
    assert np.allclose(out[1], [0.0, 1.0], atol=1e-3)
    # at the threshold a neighbour weighs one half
    half = smooth_vectors(v[:1], near[:1, :1], np.array([[0.5]], np.float32), calibration)
    assert np.allclose(half[0], unit(np.array([1.0, SMOOTH_WEIGHT * 0.5])), atol=1e-4)
    assert np.allclose(smooth_vectors(2 * v, np.zeros((2, 0, 2), np.float32), np.zeros((2, 0)), calibration), v)


def test_fit_smoothing_from_labelled_images() -> None:
    rng = np.random.default_rng(4)
    centres = np.abs(rng.normal(size=(3, 16)))
    X = np.repeat(centres, 20, axis=0) + 0.2 * np.abs(rng.normal(size=(60, 16)))
    labels = np.repeat([0, 1, 2], 20)
    calibration = fit_smoothing(X, labels)
    assert calibration is not None
    F = unit_rows(X.astype(np.float32))
    sims = F @ F.T
    np.fill_diagonal(sims, -np.inf)
    same = labels[:, None] == labels[None, :]
    other = np.median(np.where(same, -np.inf, sims).max(1))
    own = np.median(np.where(same, sims, -np.inf).max(1))
    assert calibration["threshold"] == pytest.approx(other, abs=1e-4)
    assert calibration["width"] == pytest.approx(SMOOTH_WIDTH * (own - other), abs=1e-4)
    assert fit_smoothing(X, np.zeros(60, int)) is None  # one label: nothing to calibrate on


def test_collection_vectors_smooth_class_based_models_only(glove: WordVectors, class_vectors: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    X = np.abs(rng.normal(size=(60, 16))).astype(np.float32)
    logits = rng.normal(size=(60, 1000)).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = ["cat" if i % 2 else "dog" for i in range(60)]
    conse = fit_semantic(X, probs, labels, glove, class_vectors, method="conse")
    assert set(conse.config["smoothing"]) == {"threshold", "width"}
    raw = conse.image_vectors(X, probs)
    smoothed = collection_semantics(conse, X, probs)[0]
    near = neighbours.nearest_rows(X, 10)
    F = unit_rows(X)
    sims = np.einsum("nd,nkd->nk", F, F[near])
    assert np.allclose(smoothed, smooth_vectors(raw, raw[near], sims, conse.config["smoothing"]), atol=1e-6)
    assert not np.allclose(smoothed, unit_rows(raw), atol=1e-3)
    ridge = fit_semantic(X, probs, labels, glove, class_vectors, method="ridge")
    assert "smoothing" not in ridge.config
    assert np.allclose(collection_semantics(ridge, X, probs)[0], ridge.image_vectors(X, probs))
    unlabelled = fit_semantic(X, probs, [None] * 60, glove, class_vectors, method="conse")
    assert np.allclose(collection_semantics(unlabelled, X, probs)[0], unlabelled.image_vectors(X, probs))


def test_a_label_glove_lacks_is_fitted_by_its_kin(glove: WordVectors, class_vectors: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    probs = np.full((40, 1000), 1e-3, np.float32)
    model = fit_semantic(X, probs, ["gerenuk"] * 20 + ["llama"] * 20, glove, class_vectors, method="ridge")
    assert model.label_words == ["gerenuk", "llama"] and model.report["skipped_labels"] == []
    without = fit_semantic(X, None, ["gerenuk"] * 20 + ["llama"] * 20, glove, None, method="ridge")
    assert without.report["skipped_labels"] == ["gerenuk"]


# -- the visual re-ranking -----------------------------------------------------------------------
def test_feedback_order_lifts_hits_that_look_like_the_best() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    visual = np.array([a, a, a, b, b, a], np.float32)
    scores = np.array([0.9, 0.88, 0.87, 0.80, 0.79, 0.70], np.float32)
    order = feedback_order(scores, visual)
    assert order.tolist() == [0, 1, 2, 5, 3, 4]  # the 6th looks like the top 3 and passes two strays
    # over a whole matrix: only the shortlist moves
    n = FEEDBACK_SHORTLIST + 50
    rng = np.random.default_rng(3)
    s = np.sort(rng.random(n).astype(np.float32))[::-1].copy()
    vis = unit_rows(rng.normal(size=(n, 4)).astype(np.float32))
    ranked = feedback_ranking(s, vis)
    assert sorted(ranked.tolist()) == list(range(n))
    assert ranked[FEEDBACK_SHORTLIST:].tolist() == list(range(FEEDBACK_SHORTLIST, n))
    assert (
        ranked[:FEEDBACK_SHORTLIST].tolist()
        == feedback_order(s[:FEEDBACK_SHORTLIST], vis[:FEEDBACK_SHORTLIST]).tolist()
    )
    assert feedback_ranking(s[:FEEDBACK_TOP], vis[:FEEDBACK_TOP]).tolist() == list(range(FEEDBACK_TOP))


# -- end to end, on a database made by ingest ----------------------------------------------------
def test_search_anchors_words_and_reranks(plugin_photos: dict) -> None:
    with Store.open(plugin_photos["db"]) as s:
        conn = s.conn
        space = word_space(conn)
        assert space.class_vectors is not None and "cat" in space.labels  # a joint model over ImageNet classes
        # the labels are searched as they are, other words anchored, GloVe-less words answered
        assert np.allclose(text_vector(conn, "cat")[0], space.query("cat").vector, atol=1e-6)
        assert not np.allclose(text_vector(conn, "ketch")[0], space.query("ketch").vector, atol=1e-3)
        with pytest.raises(UnknownWordsError):
            space.query("gerenuk")
        hits = similar_images(conn, "gerenuk", 5).hits
        assert len(hits) == 5
        # every photo is labelled: ranked by the labels' relation (tests/test_search_kinds.py), the
        # distances still the semantic ones (the visual re-ranking of unlabelled photos: test_search_kinds.py too)
        m = space_matrix(conn, "semantic")
        q = text_vector(conn, "dog sofa")[0]
        got = similar_images(conn, "dog sofa", 8).hits
        assert all(h.distance == pytest.approx(1 - float(m.vector(h.image_id) @ q), abs=1e-4) for h in got)
        assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)
        # pages continue each other
        first, longer = similar_images(conn, "dog sofa", 4).hits, similar_images(conn, "dog sofa", 12).hits
        assert [h.image_id for h in first] == [h.image_id for h in longer[:4]]


def test_stored_vectors_are_smoothed(plugin_photos: dict) -> None:
    from semsearch_sqlite.model.semantic import semantic_model
    from semsearch_sqlite.pipeline.train import training_data

    with Store.open(plugin_photos["db"]) as s:
        model = semantic_model(s.conn)
        ids, X, probs, _labels = training_data(s, None)
        stored = space_matrix(s.conn, "semantic")
        want = collection_semantics(model, X, probs)[0]
        got = np.vstack([stored.vector(int(i)) for i in ids])
        assert np.allclose(got, unit_rows(want), atol=1e-5)
        assert not np.allclose(got, unit_rows(model.image_vectors(X, probs)), atol=1e-3)


def test_words_queries_stay_plain(plugin_photos: dict) -> None:
    """Word -> word similarity is GloVe's own: anchoring is for searching images only."""
    from semsearch_sqlite.queries.search import similar_words

    with Store.open(plugin_photos["db"]) as s:
        space = word_space(s.conn)
        plain = space.query("ketch").vector
        hits = similar_words(s.conn, "ketch", 5).hits
        assert len(hits) == 5
        for h in hits:
            assert h.distance == pytest.approx(1 - float(plain @ unit(space.vector(h.word))), abs=1e-4)


def test_feedback_reads_few_rows_of_a_big_table_by_id(plugin_photos: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsearch_sqlite.queries import search
    from semsearch_sqlite.storage.vec0 import VEC_VISUAL
    from semsearch_sqlite.vectors import matrix

    with Store.open(plugin_photos["db"]) as s:
        pairs = space_matrix(s.conn, "semantic").top_k(text_vector(s.conn, "dog sofa")[0], FEEDBACK_SHORTLIST)
        matrix.clear_cache()
        from_matrix = visual_feedback(s.conn, pairs)
        assert VEC_VISUAL in matrix.cached_tables(search.rows.database_key(s.conn))  # small: loaded whole
        matrix.clear_cache()
        monkeypatch.setattr(search, "SMALL_MATRIX_BYTES", 0)
        by_id = visual_feedback(s.conn, pairs)
        assert VEC_VISUAL not in matrix.cached_tables(search.rows.database_key(s.conn))  # big: read by id
        assert by_id == from_matrix
        assert visual_feedback(s.conn, [(10**9, 0.1)] * 5 + pairs) == [(10**9, 0.1)] * 5 + pairs  # unknown id: as is


def test_nearest_rows_with_tiny_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = np.vstack([rng.normal(size=(300, 8)), rng.normal(size=(3, 8)) + 40]).astype(np.float32)  # 3 far outliers
    monkeypatch.setattr(neighbours, "EXACT_ROWS", 50)
    monkeypatch.setattr(neighbours, "CELL_ROWS", 30)
    got = neighbours.nearest_rows(x, 5)
    assert got.shape == (303, 5) and not (got == np.arange(303)[:, None]).any()
    assert set(got[300][:2]) == {301, 302}  # the outliers' cell is smaller than k: the rest come from everywhere
