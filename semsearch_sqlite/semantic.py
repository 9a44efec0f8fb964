"""The word space in the database: fitting the image->word model on the cached
features, writing every image's semantic vector and tags, and turning text queries
into vectors of that space (without TensorFlow)."""

from __future__ import annotations

import sqlite3
import time
from importlib import resources
from typing import Any

import numpy as np

from .errors import ProjectionError
from .store import VEC_SEMANTIC, VEC_VISUAL, Store, decode_f32, load_model, now
from .tags import write_tags
from .vocab import word_space
from .words import WordVectors

SEMANTIC_MODEL = "semantic"
CLASSES_MODEL = "imagenet_classes"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names (with synonyms), shipped with the package."""
    text = resources.files("semsearch_sqlite").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:  # pragma: no cover - packaging error
        raise ProjectionError(f"imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


def store_class_vectors(store: Store, wv: WordVectors) -> None:
    """Store the word vector of each ImageNet class (for ConSE and focus)."""
    from .conse import class_word_vectors

    names = imagenet_class_names()
    vectors, known = class_word_vectors(names, wv)
    with store.atomic():
        store.save_model(
            CLASSES_MODEL, "class_vectors",
            {"vectors": np.asarray(vectors, np.float32), "known": np.asarray(known, bool)},
            {"names": names, "source": wv.source},
        )


def _training_data(
    store: Store, labels: dict[str, str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str | None]]:
    from .store import read_vectors

    ids, X = read_vectors(store.conn, VEC_VISUAL)
    rows = {r[0]: (r[1], r[2]) for r in store.conn.execute("select id, path, label from images")}
    keep = [n for n, i in enumerate(ids) if int(i) in rows]
    ids, X = ids[keep], X[keep]
    probs_rows = dict(store.conn.execute("select image_id, probs from image_classes").fetchall())
    probs = None
    if probs_rows and all(int(i) in probs_rows for i in ids):
        probs = np.vstack([decode_f32(probs_rows[int(i)]) for i in ids])
    if labels is not None:
        image_labels = [labels.get(rows[int(i)][0]) for i in ids]
    else:
        image_labels = [rows[int(i)][1] for i in ids]
    return ids, X, probs, image_labels


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

    Returns the training report.
    """
    from .semantic_model import fit_semantic

    ids, X, probs, image_labels = _training_data(store, labels)
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
    model = fit_semantic(X, probs, image_labels, space, classes[0]["vectors"], **kwargs)
    vectors = model.image_vectors(X, probs)
    report = dict(model.report)
    report.update(method=model.method, seconds=round(time.perf_counter() - started, 3), trained_at=now(),
                  images=int(len(ids)), labelled=int(sum(lab is not None for lab in image_labels)))
    with store.atomic():
        store.drop_vec_table(VEC_SEMANTIC)
        store.ensure_vec_table(VEC_SEMANTIC, vectors.shape[1])
        store.write_vectors(VEC_SEMANTIC, ids, vectors)
        store.conn.execute("delete from tags")
        if tags:
            store.bump_generation()  # so write_tags sees the current vocabulary
            write_tags(store, ids, vectors, tags)
        store.save_model(SEMANTIC_MODEL, model.method, model.to_arrays(), {**model.config, **_jsonable(report)})
        store.update_meta({"semantic_method": model.method, "semantic_report": _jsonable(report)})
        store.bump_generation()
    from .index import refresh_index

    refresh_index(store, VEC_SEMANTIC)
    return report


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, (str, int, float, bool, list, dict)) or v is None:
            out[k] = v
    return out


def semantic_model(conn: sqlite3.Connection) -> Any:
    """The stored word-space model (numpy only), or None."""
    from .semantic_model import SemanticModel

    stored = load_model(conn, SEMANTIC_MODEL)
    if stored is None:
        return None
    return SemanticModel.from_arrays(*stored)
