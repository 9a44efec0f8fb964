"""``evaluate``: how good the search is, measured on the database's own labels.

Everything is computed in memory from the stored features, probabilities, labels and
word vectors; the only write is one row in ``evaluations``. The zero-shot protocol
refits the word-space model without a seeded share of the classes, then queries those
classes' names: the DeViSE claim, measured.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from semsearch_sqlite.errors import ProjectionError, QueryError
from semsearch_sqlite.pipeline.train import imagenet_head, training_data
from semsearch_sqlite.storage.models import CLASSES_MODEL
from semsearch_sqlite.storage.rows import every_stored_tag
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, read_vectors
from semsearch_sqlite.text.query import tokenize
from semsearch_sqlite.text.tags import nearest_tags, tag_mask
from semsearch_sqlite.text.vocabulary import WordSpace, query_anchoring, word_space
from semsearch_sqlite.vectors.maths import unit_rows
from semsearch_sqlite.vectors.rerank import feedback_ranking

K = 10
TAG_K = 5
# share of each seen class's images held out of training in the zero-shot protocol
TEST_SHARE = 0.3


@dataclass
class _Data:
    ids: np.ndarray
    X: np.ndarray
    probs: np.ndarray | None
    labels: list[str | None]


def _precision_at_k(order: np.ndarray, relevant: np.ndarray, k: int) -> float:
    top = order[:k]
    return float(relevant[top].mean()) if len(top) else 0.0


def _average_precision(order: np.ndarray, relevant: np.ndarray) -> float:
    hits = relevant[order]
    if not hits.any():
        return 0.0
    cum = np.cumsum(hits)
    return float((cum[hits] / (np.flatnonzero(hits) + 1)).mean())


def _neighbour_precision(vectors: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    """Per class: mean share of each image's k nearest others with the same label."""
    v = unit_rows(vectors)
    per: dict[str, list[float]] = {}
    for start in range(0, len(v), 512):
        sims = v[start : start + 512] @ v.T
        for row, i in enumerate(range(start, min(start + 512, len(v)))):
            sims[row, i] = -np.inf
            top = np.argpartition(-sims[row], k)[:k]
            per.setdefault(labels[i], []).append(float((labels[top] == labels[i]).mean()))
    return {c: float(np.mean(p)) for c, p in sorted(per.items())}


def _text_metrics(
    space: WordSpace, image_vectors: np.ndarray, visual: np.ndarray, labels: np.ndarray, classes: list[str], k: int
) -> dict[str, dict[str, float]]:
    """P@k and AP of each class's name as a text query, ranked as search ranks (the
    query anchored as :meth:`WordSpace.image_query` does, then visual feedback)."""
    v = unit_rows(image_vectors)
    out = {}
    for c in classes:
        try:
            q = space.image_query(c, allow_unknown=True).vector
        except QueryError:
            continue
        scores = v @ q
        order = feedback_ranking(scores, visual)
        relevant = labels == c
        out[c] = {"p_at_10": _precision_at_k(order, relevant, k), "ap": _average_precision(order, relevant)}
    return out


def _tag_accuracy(
    space: Any,
    image_vectors: np.ndarray,
    leading: list[list[tuple[str, float, float]]] | None,
    labels: np.ndarray,
    mask: np.ndarray,
    rows: np.ndarray,
) -> float:
    """The share of ``rows`` with a word of their label among their first TAG_K tags."""
    if len(rows) == 0:
        return float("nan")
    tags = nearest_tags(
        space, image_vectors[rows], TAG_K, mask, None if leading is None else [leading[r] for r in rows]
    )
    ok = [bool(set(tokenize(labels[r])) & {w for tag, *_ in t for w in tokenize(tag)}) for r, t in zip(rows, tags)]
    return float(np.mean(ok))


def _fit_vectors(
    data: _Data,
    labels: list[str | None],
    space: WordSpace,
    class_vectors: np.ndarray,
    method: str,
    seed: int,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[list[tuple[str, float]]] | None, WordSpace, float]:
    """The refitted collection's vectors and leading tags, the word space its queries see,
    and the fit's seconds."""
    from semsearch_sqlite.model.semantic import class_tags, collection_semantics, fit_semantic

    started = time.perf_counter()
    model = fit_semantic(data.X, data.probs, labels, space, class_vectors, method=method, seed=seed, head=head)
    vectors, classes = collection_semantics(model, data.X, data.probs)
    seconds = time.perf_counter() - started
    anchor_to, labels_left = query_anchoring(model.config, class_vectors)
    return (
        vectors,
        class_tags(model, space, vectors, classes),
        dataclasses.replace(space, class_vectors=anchor_to, labels=labels_left),
        seconds,
    )


def evaluate(
    store: Store,
    *,
    zero_shot: float = 0.25,
    seed: int = 0,
    methods: tuple[str, ...] = ("auto", "conse"),
    k: int = K,
    save: bool = True,
) -> dict[str, Any]:
    """Measure search quality; returns the figures (and stores them when ``save``).

    When saving, the rows are read inside the write transaction that stores the
    figures, so they describe exactly the data they are stored beside.
    """
    if not save:
        return _measure(store, zero_shot, seed, methods, k, save)
    with store.atomic():
        return _measure(store, zero_shot, seed, methods, k, save)


def _measure(store: Store, zero_shot: float, seed: int, methods: tuple[str, ...], k: int, save: bool) -> dict[str, Any]:
    data = _labelled_data(store)
    lab = np.array(data.labels, dtype=object)
    classes = sorted(set(data.labels))
    space = word_space(store.conn)
    stored = store.load_model(CLASSES_MODEL)
    if stored is None:
        raise ProjectionError(f"{store.path}: no ImageNet class vectors stored; re-run ingest")
    started = time.perf_counter()
    figures: dict[str, Any] = {"images": len(data.ids), "classes": len(classes), "k": k}
    mask, visual = tag_mask(space), unit_rows(data.X)
    figures.update(_as_stored(store, data, space, mask, visual, k))
    split = _ZeroShotSplit.draw(lab, classes, zero_shot, seed)
    comparison = {}
    for method in methods:
        if method == "conse" and data.probs is None:
            continue
        fitted = _fit_vectors(data, split.train_labels, space, stored[0]["vectors"], method, seed, imagenet_head(store))
        comparison[method] = _method_figures(fitted, space, mask, visual, lab, split, k)
    comparison["chance"] = split.chance_figures()
    figures["zero_shot"] = {
        "fraction": zero_shot,
        "seed": seed,
        "held_out": split.held,
        "test_share": TEST_SHARE,
        "pool_images": int(len(split.pool)),
        "methods": comparison,
    }
    figures["seconds"] = round(time.perf_counter() - started, 2)
    if save:
        settings = {"zero_shot": zero_shot, "seed": seed, "methods": list(methods), "k": k}
        provenance = {
            key: store.get_meta(key)
            for key in ("backbone", "backbone_weights_sha256", "words_source", "semantic_method", "package_version")
        }
        store.save_evaluation(settings, provenance, figures)
    return figures


def _labelled_data(store: Store) -> _Data:
    """The embedded images that have a label; at least two classes of them."""
    ids, X, probs, labels = training_data(store, None)
    keep = [i for i, lab in enumerate(labels) if lab]
    if len(keep) < 2 or len({labels[i] for i in keep}) < 2:
        raise ProjectionError(f"{store.path}: evaluate needs labelled images of at least 2 classes (folder = label)")
    return _Data(ids[keep], X[keep], None if probs is None else probs[keep], [labels[i] for i in keep])


def _as_stored(
    store: Store, data: _Data, space: WordSpace, mask: np.ndarray, visual: np.ndarray, k: int
) -> dict[str, Any]:
    """The database as it is: neighbour precision, text search and stored tags."""
    lab = np.array(data.labels, dtype=object)
    classes = sorted(set(data.labels))
    figures: dict[str, Any] = {"visual_p_at_10": _neighbour_precision(data.X, lab, k)}
    sem_ids, sem = read_vectors(store.conn, VEC_SEMANTIC)
    position = {int(i): n for n, i in enumerate(sem_ids)}
    stored_rows = np.array([position.get(int(i), -1) for i in data.ids])
    if (stored_rows >= 0).all():
        sv = sem[stored_rows]
        figures["semantic_p_at_10"] = _neighbour_precision(sv, lab, k)
        figures["text"] = _text_metrics(space, sv, visual, lab, classes, k)
        tagged = every_stored_tag(store.conn, TAG_K)
        stored_tags = [tagged.get(int(i), []) for i in data.ids]
        figures["tag_at_5"] = _tag_accuracy(space, sv, stored_tags, lab, mask, np.arange(len(lab)))
    return figures


@dataclass
class _ZeroShotSplit:
    """The zero-shot protocol: a seeded share of the classes held out of the refit, and a
    share of each seen class's images kept out of training too, so that "seen" measures
    generalisation to new photos, not memory."""

    classes: list[str]
    held: list[str]
    seen: list[str]
    train_labels: list[str | None]
    pool: np.ndarray  # the images queried: held-out classes and held-back seen images
    held_rows: np.ndarray
    seen_rows: np.ndarray
    chance: dict[str, float]

    @classmethod
    def draw(cls, lab: np.ndarray, classes: list[str], zero_shot: float, seed: int) -> _ZeroShotSplit:
        rng = np.random.default_rng(seed)
        n_out = max(1, int(round(zero_shot * len(classes)))) if zero_shot > 0 else 0
        held = sorted(rng.choice(classes, size=n_out, replace=False).tolist()) if n_out else []
        seen = [c for c in classes if c not in held]
        test_seen = np.zeros(len(lab), bool)
        for c in seen:
            rows = np.flatnonzero(lab == c)
            n_test = max(1, int(round(TEST_SHARE * len(rows)))) if len(rows) > 1 else 0
            test_seen[rng.choice(rows, size=n_test, replace=False)] = True
        held_mask = np.isin(lab, held)
        train_labels = [None if (held_mask[i] or test_seen[i]) else c for i, c in enumerate(lab.tolist())]
        pool = np.flatnonzero(held_mask | test_seen)
        chance = {c: float((lab[pool] == c).mean()) for c in classes}
        return cls(
            classes, held, seen, train_labels, pool, np.flatnonzero(held_mask), np.flatnonzero(test_seen), chance
        )

    def chance_figures(self) -> dict[str, Any]:
        """What a random ranking of the pool scores."""
        return {
            "seen_p_at_10": _mean([self.chance[c] for c in self.seen]),
            "zero_shot_p_at_10": _mean([self.chance[c] for c in self.held]),
            "seen_ap": _mean([self.chance[c] for c in self.seen]),
            "zero_shot_ap": _mean([self.chance[c] for c in self.held]),
            "tag_at_5_seen": None,
            "tag_at_5_zero_shot": None,
            "fit_seconds": 0.0,
            "per_class_p_at_10": self.chance,
        }


def _method_figures(
    fitted: tuple[Any, ...],
    space: WordSpace,
    mask: np.ndarray,
    visual: np.ndarray,
    lab: np.ndarray,
    split: _ZeroShotSplit,
    k: int,
) -> dict[str, Any]:
    """Score a refit (:func:`_fit_vectors` on the split's training labels): the pool's text
    queries and the tags of held-back seen images and of held-out classes."""
    vectors, leading, refit_space, seconds = fitted
    pool = split.pool
    text = _text_metrics(refit_space, vectors[pool], visual[pool], lab[pool], split.classes, k)
    return {
        "seen_p_at_10": _mean([text[c]["p_at_10"] for c in split.seen if c in text]),
        "zero_shot_p_at_10": _mean([text[c]["p_at_10"] for c in split.held if c in text]),
        "seen_ap": _mean([text[c]["ap"] for c in split.seen if c in text]),
        "zero_shot_ap": _mean([text[c]["ap"] for c in split.held if c in text]),
        "tag_at_5_seen": _tag_accuracy(space, vectors, leading, lab, mask, split.seen_rows),
        "tag_at_5_zero_shot": _tag_accuracy(space, vectors, leading, lab, mask, split.held_rows),
        "fit_seconds": round(seconds, 3),
        "per_class_p_at_10": {c: v["p_at_10"] for c, v in text.items()},
    }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
