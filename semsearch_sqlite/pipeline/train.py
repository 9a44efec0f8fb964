"""Writing the word space of a database: its vocabulary (with the ImageNet class vectors
ConSE and focus need), and the image->word model fitted on the cached features, with
every image's semantic vector and tags."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from semsearch_sqlite.errors import ProjectionError
from semsearch_sqlite.model.conse import imagenet_class_names, imagenet_hypernyms, store_class_vectors
from semsearch_sqlite.model.semantic import MATCH_META
from semsearch_sqlite.storage.models import CLASSES_MODEL, CLASSIFIER_MODEL, SEMANTIC_MODEL
from semsearch_sqlite.storage.rows import class_probability_blobs, paths_and_labels
from semsearch_sqlite.storage.store import Store, decode_f32, now
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL, VEC_WORDS, read_vectors
from semsearch_sqlite.text.query import tokenize
from semsearch_sqlite.text.related import ensure_related
from semsearch_sqlite.text.tags import write_tags
from semsearch_sqlite.text.vocabulary import ensure_vocabulary, word_space
from semsearch_sqlite.vectors.upkeep import refresh_index


def refresh_vocabulary(
    store: Store,
    glove: str | None = None,
    vocab_size: int | None = None,
    extra_words: Sequence[str] = (),
    required_words: Sequence[str] = (),
    *,
    rebuild: bool = False,
    on_load: Callable[[], None] | None = None,
    on_related: Callable[[], None] | None = None,
) -> bool:
    """:func:`~semsearch_sqlite.text.vocabulary.ensure_vocabulary`, then the ImageNet class
    vectors of the same word vectors and the vocabulary's index, and the words' relatedness
    vectors where they are missing or stale (``on_related`` called first). True when the
    vocabulary was rewritten."""
    wv = ensure_vocabulary(
        store,
        glove,
        vocab_size,
        extra_words,
        required_words,
        rebuild=rebuild,
        on_load=on_load,
        class_words=imagenet_class_words(),
    )
    if wv is not None:
        store_class_vectors(store, wv)
        refresh_index(store, VEC_WORDS)
    ensure_related(store, on_load=on_related, force=wv is not None)
    return wv is not None


def imagenet_class_words() -> list[str]:
    """The lower-case words of the ImageNet class names (Latin species names left out) and
    the one-word names of their WordNet ancestors (crustacean, arthropod: the kinds tags
    name, see ``model/sense_tags.py``)."""
    words: set[str] = {
        lemma for chain in imagenet_hypernyms() for lemmas in chain for lemma in lemmas if lemma.isalpha()
    }
    for name in imagenet_class_names():
        for synonym in name.split(","):
            synonym = synonym.strip()
            if len(synonym.split()) == 2 and synonym[0].isupper() and synonym.split()[1].islower():
                continue  # "Tinca tinca", "Carcharodon carcharias"
            words.update(t for t in tokenize(synonym) if t.isalpha())
    return sorted(words)


def training_data(
    store: Store, labels: dict[str, str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str | None]]:
    """``(ids, features, ImageNet probabilities or None, labels)`` of every embedded image;
    ``labels`` (path -> label) overrides the stored labels."""
    ids, X = read_vectors(store.conn, VEC_VISUAL)
    rows = paths_and_labels(store.conn)
    keep = [n for n, i in enumerate(ids) if int(i) in rows]
    ids, X = ids[keep], X[keep]
    probs_rows = class_probability_blobs(store.conn)
    probs = None
    if probs_rows and all(int(i) in probs_rows for i in ids):
        probs = np.vstack([decode_f32(probs_rows[int(i)]) for i in ids])
    if labels is not None:
        image_labels = [labels.get(rows[int(i)][0]) for i in ids]
    else:
        image_labels = [rows[int(i)][1] for i in ids]
    return ids, X, probs, image_labels


def imagenet_head(store: Store) -> tuple[np.ndarray, np.ndarray] | None:
    """The backbone's stored ImageNet classifier (kernel, bias), or None."""
    stored = store.load_model(CLASSIFIER_MODEL)
    return None if stored is None else (stored[0]["kernel"], stored[0]["bias"])


def refresh_semantic(
    store: Store,
    *,
    method: str | None = None,
    tags: int = 10,
    labels: dict[str, str] | None = None,
    epochs: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Refit the word-space model and rewrite every semantic vector and tag, in one transaction.

    The training rows are read inside that write transaction, so a write that lands
    while the model is fitted can't be overwritten with vectors fitted without it.
    Returns the training report.
    """
    with store.atomic():
        report = _refit(store, method, tags, labels, epochs, seed)
    refresh_index(store, VEC_SEMANTIC)
    return report


def _refit(
    store: Store, method: str | None, tags: int, labels: dict[str, str] | None, epochs: int | None, seed: int
) -> dict[str, Any]:
    from semsearch_sqlite.model.semantic import class_tags, collection_semantics, fit_semantic

    ids, X, probs, image_labels = training_data(store, labels)
    if len(ids) == 0:
        raise ProjectionError(f"{store.path}: no embedded images to fit the word space on; run ingest first")
    space = word_space(store.conn)
    classes = store.load_model(CLASSES_MODEL)
    if classes is None:
        raise ProjectionError(f"{store.path}: no ImageNet class vectors stored; re-run ingest")
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"method": method or "auto", "seed": seed}
    if epochs:
        kwargs["epochs"] = epochs
    model = fit_semantic(X, probs, image_labels, space, classes[0]["vectors"], head=imagenet_head(store), **kwargs)
    vectors, classes = collection_semantics(model, X, probs)
    report = dict(model.report)
    report.update(
        method=model.method,
        seconds=round(time.perf_counter() - started, 3),
        trained_at=now(),
        images=int(len(ids)),
        labelled=int(sum(lab is not None for lab in image_labels)),
    )
    with store.atomic():
        store.drop_vec_table(VEC_SEMANTIC)
        store.ensure_vec_table(VEC_SEMANTIC, vectors.shape[1])
        store.write_vectors(VEC_SEMANTIC, ids, vectors)
        store.clear_tags()
        if tags:
            store.bump_generation()  # so write_tags sees the current vocabulary
            write_tags(store, ids, vectors, tags, class_tags(model, word_space(store.conn), vectors, classes))
        store.save_model(SEMANTIC_MODEL, model.method, model.to_arrays(), {**model.config, **_jsonable(report)})
        store.update_meta(
            {"semantic_method": model.method, "semantic_report": _jsonable(report), MATCH_META: report.get(MATCH_META)}
        )
        store.bump_generation()
    return report


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, (str, int, float, bool, list, dict)) or v is None:
            out[k] = v
    return out
