"""The image->word model: projections (Keras and closed form), ConSE, and the four methods.

Features are synthetic but structured (a Gaussian cluster per label, 64-d); labels and
queries are real GloVe words; class probabilities point at real ImageNet classes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from semsearch_sqlite.errors import ProjectionError
from semsearch_sqlite.model.conse import class_word_vectors, conse_vectors, imagenet_class_names
from semsearch_sqlite.model.projection import Projection, fit_projection
from semsearch_sqlite.model.semantic import SemanticModel, fit_semantic
from semsearch_sqlite.text.glove import WordVectors
from semsearch_sqlite.vectors.maths import unit_rows

DIM = 64
PER_LABEL = 30
# label -> ImageNet class its images look like to the backbone
SEEN = {
    "cat": "tabby, tabby cat",
    "dog": "golden retriever",
    "car": "sports car, sport car",
    "pizza": "pizza, pizza pie",
}
UNSEEN = {"ship": "container ship, containership, container vessel", "banana": "banana"}


@pytest.fixture(scope="module")
def classes(glove: WordVectors) -> tuple[list[str], np.ndarray]:
    names = imagenet_class_names()
    return names, class_word_vectors(names, glove)[0]


def _data(labels: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Clustered features and ImageNet probabilities peaked at each label's class."""
    names = imagenet_class_names()
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1, (len(SEEN) + len(UNSEEN), DIM)) * 2.5
    order = list(SEEN) + list(UNSEEN)
    X, P, out = [], [], []
    for lab in labels:
        for _ in range(PER_LABEL):
            X.append(centres[order.index(lab)] + rng.normal(0, 1, DIM))
            p = rng.dirichlet(np.full(1000, 0.05)) * 0.4
            p[names.index({**SEEN, **UNSEEN}[lab])] += 0.6
            P.append(p / p.sum())
            out.append(lab)
    return np.asarray(X, np.float32), np.asarray(P, np.float32), out


def _targets(glove: WordVectors, labels: list[str]) -> np.ndarray:
    return np.vstack([glove.phrase(lab)[0] for lab in labels])


def _precision_at_10(vectors: np.ndarray, labels: list[str], word: str, glove: WordVectors) -> float:
    scores = unit_rows(vectors) @ glove.phrase(word)[0]
    top = np.argsort(-scores)[:10]
    return float(np.mean([labels[i] == word for i in top]))


@pytest.fixture(scope="module")
def mlp(glove: WordVectors) -> tuple[Projection, np.ndarray, list[str]]:
    X, _, labels = _data(list(SEEN))
    return fit_projection(X, _targets(glove, labels), "mlp", seed=0, epochs=25), X, labels


# -- projections -----------------------------------------------------------------------------
def test_mlp_training_reduces_the_cosine_loss(mlp: tuple[Projection, np.ndarray, list[str]]) -> None:
    proj, _, _ = mlp
    assert proj.method == "mlp"
    assert proj.report["epochs"] >= 2
    assert proj.report["train_loss"] < proj.report["first_loss"] - 0.3
    assert proj.report["val_cosine"] > 0.8
    assert {"train_cosine", "val_cosine", "train_loss", "val_loss", "seconds"} <= set(proj.report)


def test_numpy_forward_pass_equals_keras_predict(mlp: tuple[Projection, np.ndarray, list[str]]) -> None:
    proj, X, _ = mlp
    expected = proj.keras_model().predict(X, verbose=0)
    np.testing.assert_allclose(proj.project(X), expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(proj.project(X), axis=1), 1.0, atol=1e-5)
    # rebuilt from the stored arrays alone (what a database holds)
    rebuilt = Projection.from_arrays(proj.to_arrays(), json.loads(json.dumps(proj.config)))
    assert rebuilt._keras is None
    np.testing.assert_allclose(rebuilt.project(X), expected, atol=1e-5)
    np.testing.assert_allclose(rebuilt.keras_model().predict(X, verbose=0), expected, atol=1e-5)


def test_label_word_retrieves_its_images(mlp: tuple[Projection, np.ndarray, list[str]], glove: WordVectors) -> None:
    proj, _, _ = mlp
    X, _, labels = _data(list(SEEN), seed=1)  # new images of the same labels
    vectors = proj.project(X)
    for word in SEEN:
        assert _precision_at_10(vectors, labels, word, glove) >= 0.8  # chance: 0.25


def test_ridge_is_closed_form_and_round_trips(glove: WordVectors) -> None:
    X, _, labels = _data(list(SEEN))
    epochs_seen: list[int] = []
    proj = fit_projection(X, _targets(glove, labels), "ridge", on_epoch=lambda e, logs: epochs_seen.append(e))
    assert epochs_seen == [] and proj.report["epochs"] is None
    assert proj.report["seconds"] < 1.0
    assert proj.report["val_cosine"] > 0.9
    arrays = proj.to_arrays()
    assert all(a.dtype == np.float32 for a in arrays.values())
    again = Projection.from_arrays(arrays, json.loads(json.dumps(proj.config)))
    np.testing.assert_allclose(again.project(X), proj.project(X), atol=1e-6)
    X2, _, labels2 = _data(list(SEEN), seed=1)
    assert _precision_at_10(proj.project(X2), labels2, "pizza", glove) == 1.0


def test_projection_errors(glove: WordVectors) -> None:
    X, _, labels = _data(["cat", "dog"])
    Y = _targets(glove, labels)
    with pytest.raises(ProjectionError, match="unknown projection method 'svm'"):
        fit_projection(X, Y, "svm")
    with pytest.raises(ProjectionError, match="same n"):
        fit_projection(X, Y[:-1], "ridge")
    proj = fit_projection(X, Y, "ridge")
    with pytest.raises(ProjectionError, match=r"expects features of shape \[n, 64\], got \[2, 32\]"):
        proj.project(np.zeros((2, 32), np.float32))
    with pytest.raises(ProjectionError, match="incomplete"):
        Projection.from_arrays({}, proj.config)


# -- ConSE -----------------------------------------------------------------------------------
def test_class_word_vectors_skip_latin_names(glove: WordVectors, classes: tuple[list[str], np.ndarray]) -> None:
    names, vectors = classes
    assert vectors.shape == (1000, glove.dim)
    _, known = class_word_vectors(names, glove)
    assert known.sum() > 950
    np.testing.assert_allclose(np.linalg.norm(vectors[known], axis=1), 1.0, atol=1e-5)
    # "tench, Tinca tinca": the Latin name is left out, so the vector is the word "tench"
    tench = names.index("tench, Tinca tinca")
    assert float(vectors[tench] @ glove.phrase("tench")[0]) > 0.999


def test_conse_vector_of_a_tabby_is_nearest_to_cat(glove: WordVectors, classes: tuple[list[str], np.ndarray]) -> None:
    names, vectors = classes
    assert names[281] == "tabby, tabby cat"
    probs = np.full((1, 1000), 0.3 / 999, np.float32)
    probs[0, 281] = 0.7
    v = conse_vectors(probs, vectors)[0]
    candidates = ["cat", "dog", "car", "pizza", "ship", "tree"]
    sims = {w: float(v @ glove.phrase(w)[0]) for w in candidates}
    assert max(sims, key=sims.get) == "cat", sims
    assert abs(np.linalg.norm(v) - 1) < 1e-5


def test_conse_top_and_shape_check(classes: tuple[list[str], np.ndarray]) -> None:
    _, vectors = classes
    probs = np.zeros((1, 1000), np.float32)
    probs[0, [281, 207]] = [0.6, 0.4]
    only_top = conse_vectors(probs, vectors, top=1)[0]
    np.testing.assert_allclose(only_top, vectors[281], atol=1e-6)
    with pytest.raises(ProjectionError, match=r"must be \[n, 1000\], got \[1, 10\]"):
        conse_vectors(np.zeros((1, 10)), vectors)


# -- the combination -------------------------------------------------------------------------
def test_four_methods_and_the_fallbacks(glove: WordVectors, classes: tuple[list[str], np.ndarray]) -> None:
    _, class_vectors = classes
    X, P, labels = _data(list(SEEN) + list(UNSEEN))
    train = [lab if lab in SEEN else None for lab in labels]  # ship and banana are never labelled
    # without the backbone's classifier weights the default is the closed-form projection
    model = fit_semantic(X, P, train, glove, class_vectors, method="auto", seed=0)
    assert model.method == "ridge" and model.label_words == sorted(SEEN, key=list(SEEN).index)
    for word in SEEN:
        assert _precision_at_10(model.image_vectors(X, P), labels, word, glove) >= 0.8, word
    # the plain projection can't find the words it never saw; ConSE can
    assert _precision_at_10(model.image_vectors(X, P), labels, "banana", glove) < 0.5
    conse = fit_semantic(X, P, train, glove, class_vectors, method="conse")
    assert _precision_at_10(conse.image_vectors(X, P), labels, "banana", glove) >= 0.8
    for dropped in ("gated", "blend", "hinge"):
        with pytest.raises(ProjectionError, match="unknown word-space method"):
            fit_semantic(X, P, train, glove, class_vectors, method=dropped)
        with pytest.raises(ProjectionError, match="no longer offered; re-run train"):
            SemanticModel.from_arrays({}, {"method": dropped})


def test_semantic_model_round_trips_through_json(glove: WordVectors, classes: tuple[list[str], np.ndarray]) -> None:
    _, class_vectors = classes
    X, P, labels = _data(["cat", "dog", "ship"])
    train = [lab if lab != "ship" else None for lab in labels]
    for method in ("ridge", "conse"):
        model = fit_semantic(X, P, train, glove, class_vectors, method=method)
        config = json.loads(json.dumps(model.config))  # what the models table holds
        again = SemanticModel.from_arrays(model.to_arrays(), {**config, "seconds": 1.0, "trained_at": "x"})
        assert again.method == method
        np.testing.assert_allclose(again.image_vectors(X, P), model.image_vectors(X, P), atol=1e-6)
    json.dumps(model.report)


def test_no_labels_means_conse_only(glove: WordVectors, classes: tuple[list[str], np.ndarray]) -> None:
    _, class_vectors = classes
    X, P, labels = _data(["cat", "ship"])
    model = fit_semantic(X, P, [None] * len(labels), glove, class_vectors)
    assert model.method == "conse" and model.projection is None
    np.testing.assert_allclose(model.image_vectors(None, P), conse_vectors(P, class_vectors), atol=1e-6)
    assert _precision_at_10(model.image_vectors(X, P), labels, "cat", glove) == 1.0
    with pytest.raises(ProjectionError, match="--method ridge needs labelled images"):
        fit_semantic(X, P, [None] * len(labels), glove, class_vectors, method="ridge")


def test_unknown_label_words_are_skipped_and_reported(
    glove: WordVectors, classes: tuple[list[str], np.ndarray]
) -> None:
    _, class_vectors = classes
    X, P, labels = _data(["cat", "dog", "car"])
    renamed = ["xqzzyvk_blorptz" if lab == "car" else lab for lab in labels]
    model = fit_semantic(X, P, renamed, glove, class_vectors)
    assert model.method == "ridge"
    assert model.report["skipped_labels"] == ["xqzzyvk_blorptz"]
    assert model.report["train_images"] == 2 * PER_LABEL
    gibberish = ["xqzzyvk_blorptz"] * len(labels)
    assert fit_semantic(X, P, gibberish, glove, class_vectors).method == "conse"
    with pytest.raises(ProjectionError, match="unknown label words: xqzzyvk_blorptz"):
        fit_semantic(X, P, gibberish, glove, class_vectors, method="ridge")


def test_model_without_probabilities(glove: WordVectors, classes: tuple[list[str], np.ndarray]) -> None:
    _, class_vectors = classes
    X, P, labels = _data(["cat", "dog"])
    model = fit_semantic(X, None, labels, glove, class_vectors)
    assert model.method == "ridge" and not model.needs_probs
    assert model.image_vectors(X, None).shape == (len(X), glove.dim)
    conse = fit_semantic(X, P, labels, glove, class_vectors, method="conse")
    with pytest.raises(ProjectionError, match="needs ImageNet class probabilities"):
        conse.image_vectors(X, None)
    with pytest.raises(ProjectionError, match="unknown word-space method 'magic'"):
        fit_semantic(X, P, labels, glove, class_vectors, method="magic")
    with pytest.raises(ProjectionError, match="needs ImageNet class probabilities"):
        fit_semantic(X, None, labels, glove, class_vectors, method="conse")
