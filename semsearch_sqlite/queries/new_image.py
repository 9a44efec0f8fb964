"""Queries by a NEW image (not in the database): embed it with the database's own
backbone, then search. Needs the [ingest] extra (Pillow, and TensorFlow except for
EfficientNet-Lite0, which runs in numpy: see model/effnet_numpy.py); everything else in
the package doesn't."""

from __future__ import annotations

import io
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np

from semsearch_sqlite.errors import BackboneError, StoreError
from semsearch_sqlite.extras import missing_message, require_ingest
from semsearch_sqlite.queries.search import Results, similar_to_vector, space_matrix, tags_for_vector
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.rows import class_probability_blobs, read_meta
from semsearch_sqlite.storage.store import Store, decode_f32
from semsearch_sqlite.storage.vec0 import VEC_VISUAL, read_float_rows, vec_table_dim
from semsearch_sqlite.text.vocabulary import word_space
from semsearch_sqlite.vectors.maths import unit

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# loaded CNNs kept per process (each is tens to hundreds of MB)
BACKBONES_KEPT = 2
_backbones: ProcessCache[Any] = ProcessCache(BACKBONES_KEPT)
SEARCH_BY_IMAGE = "search by a new image"


def backbone_available() -> tuple[bool, str]:
    """Whether new images can be embedded here, and why not (one line naming the fix)."""
    message = missing_message(SEARCH_BY_IMAGE)
    return (False, message) if message else (True, "")


def database_backbone(conn: sqlite3.Connection) -> Any:
    """The backbone this database was embedded with, loaded once per process."""
    require_ingest(SEARCH_BY_IMAGE)
    from semsearch_sqlite.model.cnn import load_query_backbone

    name = read_meta(conn, "backbone")
    if not name:
        raise StoreError("this database has no embedded images yet, so it has no backbone")
    weights = read_meta(conn, "backbone_weights_path")
    layer = read_meta(conn, "backbone_layer")
    if weights and not os.path.exists(weights):
        raise BackboneError(f"the backbone weights {weights} used for this database are not on this machine")
    return _backbones.get_or_load(
        (name, weights, layer), lambda: load_query_backbone(name, weights=weights, layer=layer)
    )


def embed_image(conn: sqlite3.Connection, image: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (and ImageNet probabilities) of a PIL image, with the database's backbone."""
    backbone = database_backbone(conn)
    features, probs = backbone.predict(backbone.preprocess([image]))
    return features[0], (None if probs is None else probs[0])


@dataclass
class NewSemantics:
    """A new image's word-space vector and the tags its classes lead with."""

    vector: np.ndarray
    leading: list[tuple[str, float, float]] | None


def semantic_vector(conn: sqlite3.Connection, features: np.ndarray, probs: np.ndarray | None) -> NewSemantics:
    """A new image's word-space vector and its most probable classes (the tags it leads
    with) from its backbone outputs, both smoothed over its visual neighbours in the
    database as ingest smooths the stored images' (``collection_semantics``)."""
    from semsearch_sqlite.model.semantic import class_tags, image_semantics, semantic_model
    from semsearch_sqlite.model.smoothing import SMOOTH_NEIGHBOURS, smooth_rows, smoothed_top_classes, top_classes

    model = semantic_model(conn)
    if model is None:
        raise StoreError("this database has no word-space model yet; run semsearch-sqlite train")
    vectors, own, n_classes = image_semantics(model, features[None, :], None if probs is None else probs[None, :])
    classes = None if own is None else smoothed_top_classes(own, None, None, n_classes)
    smoothing = model.config.get("smoothing")
    if smoothing:
        semantic = space_matrix(conn, "semantic")
        near = [
            (i, semantic.vector(i), 1.0 - d)
            for i, d in space_matrix(conn, "visual").top_k(unit(features), SMOOTH_NEIGHBOURS)
        ]
        near = [(i, v, s) for i, v, s in near if v is not None]
        if near:
            stored = None if own is None else _stored_class_probabilities(conn, model, [i for i, _, _ in near])
            neighbours = None
            if stored is not None:
                idx, val = top_classes(stored)
                neighbours = (idx[None], val[None])
            vectors, smoothed = smooth_rows(
                vectors,
                np.asarray([v for _, v, _ in near], np.float32)[None, :, :],
                np.array([[s for _, _, s in near]], np.float32),
                smoothing,
                None if own is None else (own, neighbours),
                n_classes,
            )
            classes = smoothed if smoothed is not None else classes
    leading = None if classes is None else class_tags(model, word_space(conn), vectors, classes)
    return NewSemantics(vectors[0], None if leading is None else leading[0])


def _stored_class_probabilities(conn: sqlite3.Connection, model: Any, ids: list[int]) -> np.ndarray | None:
    """The class distribution of stored images ``ids`` (in that order), from their raw
    features and stored ImageNet probabilities; None if any is missing."""
    dim = vec_table_dim(conn, VEC_VISUAL)
    if dim is None:
        return None
    got, raw = read_float_rows(conn, VEC_VISUAL, np.asarray(ids, np.int64), dim)
    where = {int(i): n for n, i in enumerate(got)}
    stored = class_probability_blobs(conn, ids)
    if any(i not in where or i not in stored for i in ids):
        return None
    X = raw[[where[i] for i in ids]]
    return model.class_probabilities(X, np.vstack([decode_f32(stored[i]) for i in ids]))


def search_image(
    conn: sqlite3.Connection, image: Any, k: Any = 10, space: str = "visual", *, where: str | None = None
) -> Results:
    """Images nearest to a new PIL image in the visual or semantic space."""
    features, probs = embed_image(conn, image)
    if space == "semantic":
        return similar_to_vector(conn, semantic_vector(conn, features, probs).vector, k, "semantic", where=where)
    return similar_to_vector(conn, features, k, "visual", where=where)


def tag_image(conn: sqlite3.Connection, image: Any, k: Any = 10) -> Results:
    """The words nearest to a new PIL image (its tags, as ingest would store them)."""
    features, probs = embed_image(conn, image)
    semantic = semantic_vector(conn, features, probs)
    return tags_for_vector(conn, semantic.vector, k, semantic.leading)


@dataclass
class NewImage:
    """What the upload page shows of a new image: its neighbours and its tags."""

    similar: Results
    tags: Results | None
    tags_error: str | None = None
    preview: tuple[bytes, str, int, int] | None = None  # a thumbnail: (bytes, MIME type, width, height)


def describe_image(
    conn: sqlite3.Connection, image: Any, k: Any = 10, space: str = "visual", n_tags: int = 10
) -> NewImage:
    """Neighbours and tags of a new PIL image, embedding it once."""
    from semsearch_sqlite.media.images import make_thumbnail

    thumb = make_thumbnail(image, PREVIEW_LONGEST)
    features, probs = embed_image(conn, image)
    try:
        semantic = semantic_vector(conn, features, probs)
    except StoreError as e:
        if space == "semantic":
            raise
        return NewImage(similar_to_vector(conn, features, k, "visual"), None, str(e), thumb)
    similar = similar_to_vector(conn, semantic.vector if space == "semantic" else features, k, space)
    return NewImage(similar, tags_for_vector(conn, semantic.vector, n_tags, semantic.leading), None, thumb)


PREVIEW_LONGEST = 256  # px: the thumbnail of a new image shown beside its results


def search_file(store: Store, path: str, k: Any = 10, space: str = "visual", *, where: str | None = None) -> Results:
    """Images nearest to the image file at ``path``."""
    require_ingest(SEARCH_BY_IMAGE)
    from semsearch_sqlite.media.images import load_image

    return search_image(store.conn, load_image(path), k, space, where=where)


def tag_file(store: Store, path: str, k: Any = 10) -> Results:
    """The words nearest to the image file at ``path``."""
    require_ingest(SEARCH_BY_IMAGE)
    from semsearch_sqlite.media.images import load_image

    return tag_image(store.conn, load_image(path), k)


def _upload(data: bytes, name: str, max_bytes: int) -> Any:
    """An uploaded image (bytes, at most ``max_bytes``) as a PIL image."""
    from semsearch_sqlite.errors import ImageError

    if len(data) > max_bytes:
        raise ImageError(name, f"too large ({len(data)} bytes; at most {max_bytes})")
    require_ingest(SEARCH_BY_IMAGE)
    from semsearch_sqlite.media.images import load_image

    return load_image(io.BytesIO(data), name=name)


def decode_reduced(data: bytes, name: str, max_pixels: int) -> Any:
    """An uploaded image decoded reduced (JPEG at a smaller DCT scale, other formats
    box-reduced at once) to what the model, a preview and ingest's display copy need."""
    require_ingest(SEARCH_BY_IMAGE)
    from semsearch_sqlite.media.images import DISPLAY_LONGEST, load_image

    return load_image(io.BytesIO(data), max_pixels=max_pixels, name=name, reduce_to=DISPLAY_LONGEST)


def search_bytes(
    conn: sqlite3.Connection,
    data: bytes,
    k: Any = 10,
    space: str = "visual",
    name: str = "upload",
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> Results:
    """Images nearest to an uploaded image given as bytes (at most ``max_bytes``)."""
    return search_image(conn, _upload(data, name, max_bytes), k, space)


def describe_bytes(
    conn: sqlite3.Connection,
    data: bytes,
    k: Any = 10,
    space: str = "visual",
    name: str = "upload",
    n_tags: int = 10,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> NewImage:
    """Neighbours, tags and a thumbnail of an uploaded image given as bytes (at most ``max_bytes``)."""
    return describe_image(conn, _upload(data, name, max_bytes), k, space, n_tags)


def preview_bytes(
    data: bytes, name: str = "upload", longest: int = PREVIEW_LONGEST, max_bytes: int = MAX_UPLOAD_BYTES
) -> tuple[bytes, int, int]:
    """A small JPEG of an uploaded image, to show it beside its results: ``(bytes, width, height)``."""
    from semsearch_sqlite.media.images import make_thumbnail

    jpeg, _, width, height = make_thumbnail(_upload(data, name, max_bytes), longest)
    return jpeg, width, height
