"""Search quality, round 2: the joint label classifier, the strong/weak cue, focus
groups, and every GloVe word answering queries (real bundled GloVe, real small DBs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semsearch_sqlite.errors import FocusError, ProjectionError
from semsearch_sqlite.model.conse import class_word_vectors, imagenet_class_names, resolve_focus
from semsearch_sqlite.model.semantic import (
    DEFAULT_STRONG_DISTANCE,
    SemanticModel,
    calibrate_match,
    conse_vectors,
    fit_semantic,
    match_strength,
)
from semsearch_sqlite.pipeline.train import refresh_vocabulary
from semsearch_sqlite.queries.search import similar_words
from semsearch_sqlite.storage.rows import rare_word_count
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.glove import WordVectors
from semsearch_sqlite.text.query import compound_lookup, phrase_vector
from semsearch_sqlite.text.tags import is_display_word
from semsearch_sqlite.text.vocabulary import int8_rows, word_space
from semsearch_sqlite.vectors.maths import unit, unit_rows

DIM = 64
PER_LABEL = 30
SEEN = {
    "cat": "tabby, tabby cat",
    "dog": "golden retriever",
    "car": "sports car, sport car",
    "pizza": "pizza, pizza pie",
}
UNSEEN = {"ship": "container ship, containership, container vessel", "banana": "banana"}


@pytest.fixture(scope="module")
def classes(glove: WordVectors) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = imagenet_class_names()
    vectors, known = class_word_vectors(names, glove)
    return names, vectors, known


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], tuple[np.ndarray, np.ndarray]]:
    """Clustered features, and an ImageNet head whose logits peak at each kind's class."""
    names = imagenet_class_names()
    order = list(SEEN) + list(UNSEEN)
    centres = np.random.default_rng(99).normal(0, 1, (len(order), DIM)) * 2.5
    kernel = np.zeros((DIM, 1000), np.float32)
    for lab, centre in zip(order, centres):
        kernel[:, names.index({**SEEN, **UNSEEN}[lab])] = centre / float(centre @ centre) * 8
    bias = np.zeros(1000, np.float32)
    rng = np.random.default_rng(seed)
    X = np.vstack([centres[i] + rng.normal(0, 1, (PER_LABEL, DIM)) for i in range(len(order))]).astype(np.float32)
    z = X @ kernel + bias
    P = np.exp(z - z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    return X, P.astype(np.float32), [lab for lab in order for _ in range(PER_LABEL)], (kernel, bias)


def _p_at_10(vectors: np.ndarray, labels: list[str], word: str, glove: WordVectors) -> float:
    top = np.argsort(-(unit_rows(vectors) @ glove.phrase(word)[0]))[:10]
    return float(np.mean([labels[i] == word for i in top]))


def test_joint_model_keeps_labels_and_hands_new_kinds_to_imagenet(glove: WordVectors, classes) -> None:
    _, class_vectors, _ = classes
    X, P, labels, head = _data()
    train = [lab if lab in SEEN else None for lab in labels]
    model = fit_semantic(X, P, train, glove, class_vectors, method="auto", head=head)
    assert model.method == "joint"
    vectors = model.image_vectors(X, P)
    for word in list(SEEN) + list(UNSEEN):
        assert _p_at_10(vectors, labels, word, glove) >= 0.9, word  # chance: 1/6
    # a photo of a labelled kind sits on its label's word: the label is its nearest label
    seen = np.isin(labels, list(SEEN))
    own = np.array([glove.phrase(lab)[0] for lab in labels])
    assert np.mean(np.sum(vectors[seen] * own[seen], axis=1) > 0.95) > 0.9
    # stored and rebuilt with numpy only (the head comes from the classifier model)
    config = json.loads(json.dumps(model.config))
    again = SemanticModel.from_arrays(model.to_arrays(), config, head=head)
    np.testing.assert_allclose(again.image_vectors(X, P), vectors, atol=1e-5)
    with pytest.raises(ProjectionError, match="needs the backbone's classifier weights"):
        SemanticModel.from_arrays(model.to_arrays(), config).image_vectors(X, P)


def test_joint_needs_the_imagenet_head(glove: WordVectors, classes) -> None:
    _, class_vectors, _ = classes
    X, P, labels, _head = _data()
    with pytest.raises(ProjectionError, match="--method joint needs the backbone's ImageNet classifier weights"):
        fit_semantic(X, P, labels, glove, class_vectors, method="joint")
    assert fit_semantic(X, P, labels, glove, class_vectors, method="auto").method == "ridge"


def test_match_cue_is_calibrated_on_true_matches(glove: WordVectors, classes) -> None:
    _, class_vectors, _ = classes
    X, P, labels, head = _data()
    names = sorted(set(labels))
    index = np.array([names.index(lab) for lab in labels])
    label_vectors = np.vstack([glove.phrase(n)[0] for n in names])
    conse = conse_vectors(P, class_vectors)
    strong = calibrate_match(conse, index, label_vectors)
    assert strong is not None and 0 < strong < 1
    d = 1 - unit_rows(conse) @ label_vectors.T
    true = d[np.arange(len(d)), index]
    false = np.delete(d.reshape(-1), np.arange(len(d)) * len(names) + index)
    # half the true pairs are that close, and hardly any false pair
    assert np.mean(true <= strong) == pytest.approx(0.5, abs=0.02)
    assert np.mean(false <= strong) < 0.05
    assert match_strength(strong, strong) == "strong" and match_strength(strong + 0.01, strong) == "weak"
    assert match_strength(DEFAULT_STRONG_DISTANCE, None) == "strong"
    assert calibrate_match(conse[:0], index[:0], label_vectors) is None
    model = fit_semantic(X, P, labels, glove, class_vectors, head=head)
    assert model.report["match_strong_distance"] == pytest.approx(strong)


def test_focus_resolves_classes_and_groups(glove: WordVectors, classes) -> None:
    names, vectors, known = classes

    def focus(word: str):
        return resolve_focus(word, names, vectors, known, glove.phrase(word)[0])

    bird = focus("bird")
    assert bird.how == "group" and len(bird.classes) > 50
    assert {"goldfinch", "ostrich"} <= {names[c].split(",")[0] for c in bird.classes}
    assert "great white shark" not in {names[c].split(",")[0] for c in bird.classes}
    assert focus("birds").classes == bird.classes
    assert focus("great white shark").how == "class"
    assert focus("crocodile").describe() == "focus class: African crocodile"
    assert focus("guitar").describe() == "focus: guitar (2 ImageNet classes)"
    with pytest.raises(FocusError, match=r"no ImageNet class is near 'giraffe' \(the nearest, .* has word similarity"):
        focus("giraffe")
    with pytest.raises(FocusError, match="no ImageNet class or group is called 'zzzq'"):
        resolve_focus("zzzq", names, vectors, known, None)


def test_compound_terms_and_hyphens(glove: WordVectors) -> None:
    car, side = unit(glove.get("car")), unit(glove.get("side"))
    expected = unit(car + side)
    for text in ("car_side", "car-side", "car side"):
        v, unknown = phrase_vector(text, glove.get)
        assert unknown == [] and np.allclose(v, expected, atol=1e-6), text
    assert phrase_vector("t-shirt", glove.get)[0] is not None and glove.get("t-shirt") is not None
    find = compound_lookup(glove.get)
    assert np.allclose(find("stop_sign"), phrase_vector("stop sign", glove.get)[0])
    assert find("car_zzzq") is None and find("zzzq") is None


def test_every_glove_word_answers_queries(tmp_path: Path, glove: WordVectors) -> None:
    path = tmp_path / "words.db"
    with Store.open(path, create=True) as store:
        refresh_vocabulary(store, vocab_size=2000)
        space = word_space(store.conn)
        # the 2000 most frequent words, plus the words of the ImageNet class names (tags can name them)
        assert {"llama", "armadillo", "triceratops"} <= set(space.ids) and "tinca" not in space.ids
        assert set(glove.words[:2000]) <= set(space.ids)
        rare = rare_word_count(store.conn)
        assert rare == len(set(glove.words)) - len(space.ids)
        assert store.get_meta("words_lookup_count") == rare
        for word in ("hawksbill", "brontosaurus", "stegosaurus", "mayfly", "tinca"):
            assert word not in space.ids  # never a tag or a neighbour
            v = space.vector(word)
            assert v is not None and float(unit(v) @ unit(glove.get(word))) > 0.999, word
        assert space.vector("gerenuk") is None  # not in glove.6B at all
        q = space.query("hawksbill car_side")
        assert q.unknown == [] and len(q.terms) == 2
        # neighbours are vocabulary words, never punctuation or numbers (2000 words: plenty of both)
        said = [h.word for h in similar_words(store.conn, "said", 20).hits]
        assert len(said) == 20 and all(is_display_word(w) for w in said), said
        assert {'"', ",", "."}.isdisjoint(said)
        assert [h.word for h in similar_words(store.conn, "hawksbill", 5).hits]  # a rare word has neighbours too
        pages = store.conn.execute("select sum(pgsize) from dbstat where name = 'word_lookup'").fetchone()[0]
    # int8 buckets: about one byte a dimension a word (plus the words themselves)
    assert pages < rare * (glove.dim + 16)
    q8 = int8_rows(glove.vectors[:100]).astype(np.float32)
    cos = np.sum(unit_rows(q8) * unit_rows(glove.vectors[:100]), axis=1)
    assert cos.min() > 0.999
