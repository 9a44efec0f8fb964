"""``evaluate``: how good the search is, measured on the database's own labels.

Everything is computed in memory from the stored features, probabilities, labels and
word vectors; the only write is one row in ``evaluations``. The zero-shot protocol
refits the word-space model without a seeded share of the classes, then queries those
classes' names: the DeViSE claim, measured.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from semsearch_sqlite.errors import ProjectionError, QueryError
from semsearch_sqlite.storage.models import CLASSES_MODEL
from semsearch_sqlite.storage.rows import every_stored_tag
from semsearch_sqlite.pipeline.train import imagenet_head, training_data
from semsearch_sqlite.storage.vectors import VEC_SEMANTIC, read_vectors
from semsearch_sqlite.storage.store import Store, now
from semsearch_sqlite.text.tags import nearest_tags, tag_mask
from semsearch_sqlite.text.vocabulary import WordSpace, query_anchoring, word_space
from semsearch_sqlite.text.query import tokenize
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


def _tag_accuracy(space: Any, image_vectors: np.ndarray, leading: list[list[tuple[str, float, float]]] | None,
                  labels: np.ndarray, mask: np.ndarray, rows: np.ndarray) -> float:
    """The share of ``rows`` with a word of their label among their first TAG_K tags."""
    if len(rows) == 0:
        return float("nan")
    tags = nearest_tags(space, image_vectors[rows], TAG_K, mask, None if leading is None else [leading[r] for r in rows])
    ok = [bool(set(tokenize(labels[r])) & {w for tag, *_ in t for w in tokenize(tag)}) for r, t in zip(rows, tags)]
    return float(np.mean(ok))


def _fit_vectors(data: _Data, labels: list[str | None], space: WordSpace, class_vectors: np.ndarray, method: str,
                 seed: int, head: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, list[list[tuple[str, float]]] | None, WordSpace, float]:
    """The refitted collection's vectors and leading tags, the word space its queries see,
    and the fit's seconds."""
    from semsearch_sqlite.model.semantic import class_tags, collection_semantics, fit_semantic

    started = time.perf_counter()
    model = fit_semantic(data.X, data.probs, labels, space, class_vectors, method=method, seed=seed, head=head)
    vectors, classes = collection_semantics(model, data.X, data.probs)
    seconds = time.perf_counter() - started
    anchor_to, labels_left = query_anchoring(model.config, class_vectors)
    return (vectors, class_tags(model, space, vectors, classes),
            dataclasses.replace(space, class_vectors=anchor_to, labels=labels_left), seconds)


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


def _measure(store: Store, zero_shot: float, seed: int, methods: tuple[str, ...], k: int,
             save: bool) -> dict[str, Any]:
    ids, X, probs, labels = training_data(store, None)
    keep = [i for i, lab in enumerate(labels) if lab]
    if len(keep) < 2 or len({labels[i] for i in keep}) < 2:
        raise ProjectionError(f"{store.path}: evaluate needs labelled images of at least 2 classes (folder = label)")
    data = _Data(ids[keep], X[keep], None if probs is None else probs[keep], [labels[i] for i in keep])
    lab = np.array(data.labels, dtype=object)
    classes = sorted(set(data.labels))
    space = word_space(store.conn)
    mask = tag_mask(space)
    stored = store.load_model(CLASSES_MODEL)
    if stored is None:
        raise ProjectionError(f"{store.path}: no ImageNet class vectors stored; re-run ingest")
    class_vectors = stored[0]["vectors"]
    started = time.perf_counter()

    # the database as it is: stored semantic vectors
    sem_ids, sem = read_vectors(store.conn, VEC_SEMANTIC)
    position = {int(i): n for n, i in enumerate(sem_ids)}
    stored_rows = np.array([position.get(int(i), -1) for i in data.ids])
    figures: dict[str, Any] = {"images": len(data.ids), "classes": len(classes), "k": k}
    figures["visual_p_at_10"] = _neighbour_precision(data.X, lab, k)
    visual = unit_rows(data.X)
    if (stored_rows >= 0).all():
        sv = sem[stored_rows]
        figures["semantic_p_at_10"] = _neighbour_precision(sv, lab, k)
        figures["text"] = _text_metrics(space, sv, visual, lab, classes, k)
        tagged = every_stored_tag(store.conn, TAG_K)
        stored_tags = [tagged.get(int(i), []) for i in data.ids]
        figures["tag_at_5"] = _tag_accuracy(space, sv, stored_tags, lab, mask, np.arange(len(lab)))

    # zero-shot protocol: hold out a seeded share of the classes, refit, query them
    rng = np.random.default_rng(seed)
    n_out = max(1, int(round(zero_shot * len(classes)))) if zero_shot > 0 else 0
    held = sorted(rng.choice(classes, size=n_out, replace=False).tolist()) if n_out else []
    seen = [c for c in classes if c not in held]
    # Seen classes are scored on images kept out of training too, so that
    # "seen" measures generalisation to new photos, not memory.
    test_seen = np.zeros(len(lab), bool)
    for c in seen:
        rows = np.flatnonzero(lab == c)
        n_test = max(1, int(round(TEST_SHARE * len(rows)))) if len(rows) > 1 else 0
        test_seen[rng.choice(rows, size=n_test, replace=False)] = True
    held_mask = np.isin(lab, held)
    train_labels = [None if (held_mask[i] or test_seen[i]) else c for i, c in enumerate(data.labels)]
    pool = np.flatnonzero(held_mask | test_seen)
    held_rows = np.flatnonzero(held_mask)
    seen_rows = np.flatnonzero(test_seen)
    chance = {c: float((lab[pool] == c).mean()) for c in classes}
    comparison = {}
    for method in methods:
        if method == "conse" and data.probs is None:
            continue
        vectors, leading, refit_space, seconds = _fit_vectors(data, train_labels, space, class_vectors, method, seed,
                                                     imagenet_head(store))
        text = _text_metrics(refit_space, vectors[pool], visual[pool], lab[pool], classes, k)
        comparison[method] = {
            "seen_p_at_10": _mean([text[c]["p_at_10"] for c in seen if c in text]),
            "zero_shot_p_at_10": _mean([text[c]["p_at_10"] for c in held if c in text]),
            "seen_ap": _mean([text[c]["ap"] for c in seen if c in text]),
            "zero_shot_ap": _mean([text[c]["ap"] for c in held if c in text]),
            "tag_at_5_seen": _tag_accuracy(space, vectors, leading, lab, mask, seen_rows),
            "tag_at_5_zero_shot": _tag_accuracy(space, vectors, leading, lab, mask, held_rows),
            "fit_seconds": round(seconds, 3),
            "per_class_p_at_10": {c: v["p_at_10"] for c, v in text.items()},
        }
    comparison["chance"] = {
        "seen_p_at_10": _mean([chance[c] for c in seen]),
        "zero_shot_p_at_10": _mean([chance[c] for c in held]),
        "seen_ap": _mean([chance[c] for c in seen]),
        "zero_shot_ap": _mean([chance[c] for c in held]),
        "tag_at_5_seen": None,
        "tag_at_5_zero_shot": None,
        "fit_seconds": 0.0,
        "per_class_p_at_10": chance,
    }
    figures["zero_shot"] = {
        "fraction": zero_shot, "seed": seed, "held_out": held, "test_share": TEST_SHARE,
        "pool_images": int(len(pool)), "methods": comparison,
    }
    figures["seconds"] = round(time.perf_counter() - started, 2)
    settings = {"zero_shot": zero_shot, "seed": seed, "methods": list(methods), "k": k}
    if save:
        provenance = {key: store.get_meta(key) for key in ("backbone", "backbone_weights_sha256", "words_source", "semantic_method", "package_version")}
        with store.atomic():
            store.conn.execute(
                "insert into evaluations(created_at, settings, provenance, figures) values (?, ?, ?, ?)",
                [now(), json.dumps(settings), json.dumps(provenance), json.dumps(figures)],
            )
    return figures


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summary_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method for the evaluate table."""
    out = []
    for method, m in figures["zero_shot"]["methods"].items():
        out.append(
            {
                "method": method,
                "seen P@10": m["seen_p_at_10"],
                "zero-shot P@10": m["zero_shot_p_at_10"],
                "seen AP": m["seen_ap"],
                "zero-shot AP": m["zero_shot_ap"],
                "tag@5 seen": m["tag_at_5_seen"],
                "tag@5 zero-shot": m["tag_at_5_zero_shot"],
                "fit s": m["fit_seconds"],
            }
        )
    return out
