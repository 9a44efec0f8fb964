"""Queries by a NEW image (not in the database): embed it with the database's own
backbone, then search. Needs the [ingest] extra (TensorFlow, Pillow); everything else
in the package doesn't."""

from __future__ import annotations

import io
import os
import sqlite3
from typing import Any

import numpy as np

from semsearch_sqlite.errors import BackboneError, StoreError
from semsearch_sqlite.extras import missing_message, require_ingest
from semsearch_sqlite.queries.search import Results, similar_to_vector
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.rows import read_meta
from semsearch_sqlite.storage.store import Store

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
    from semsearch_sqlite.model.backbones import load_backbone

    name = read_meta(conn, "backbone")
    if not name:
        raise StoreError("this database has no embedded images yet, so it has no backbone")
    weights = read_meta(conn, "backbone_weights_path")
    layer = read_meta(conn, "backbone_layer")
    if weights and not os.path.exists(weights):
        raise BackboneError(f"the backbone weights {weights} used for this database are not on this machine")
    return _backbones.get_or_load((name, weights, layer), lambda: load_backbone(name, weights=weights, layer=layer))


def embed_image(conn: sqlite3.Connection, image: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (and ImageNet probabilities) of a PIL image, with the database's backbone."""
    backbone = database_backbone(conn)
    features, probs = backbone.predict(backbone.preprocess([image]))
    return features[0], (None if probs is None else probs[0])


def search_image(conn: sqlite3.Connection, image: Any, k: Any = 10, space: str = "visual") -> Results:
    """Images nearest to a new PIL image in the visual or semantic space."""
    features, probs = embed_image(conn, image)
    if space == "semantic":
        from semsearch_sqlite.model.semantic import semantic_model

        model = semantic_model(conn)
        if model is None:
            raise StoreError("this database has no word-space model yet; run semsearch-sqlite train")
        vector = model.image_vectors(features[None, :], None if probs is None else probs[None, :])[0]
        return similar_to_vector(conn, vector, k, "semantic")
    return similar_to_vector(conn, features, k, "visual")


def search_file(store: Store, path: str, k: Any = 10, space: str = "visual") -> Results:
    """Images nearest to the image file at ``path``."""
    require_ingest(SEARCH_BY_IMAGE)
    from semsearch_sqlite.media.images import load_image

    return search_image(store.conn, load_image(path), k, space)


def search_bytes(conn: sqlite3.Connection, data: bytes, k: Any = 10, space: str = "visual", name: str = "upload",
                 max_bytes: int = MAX_UPLOAD_BYTES) -> Results:
    """Images nearest to an uploaded image given as bytes (at most ``max_bytes``)."""
    from semsearch_sqlite.errors import ImageError

    if len(data) > max_bytes:
        raise ImageError(name, f"too large ({len(data)} bytes; at most {max_bytes})")
    require_ingest(SEARCH_BY_IMAGE)
    from semsearch_sqlite.media.images import load_image

    return search_image(conn, load_image(io.BytesIO(data), name=name), k, space)


PREVIEW_LONGEST = 256


def preview_bytes(data: bytes, name: str = "upload", longest: int = PREVIEW_LONGEST) -> tuple[bytes, int, int]:
    """A small JPEG of an uploaded image, to show it beside its results: ``(bytes, width, height)``."""
    from semsearch_sqlite.errors import ImageError
    from semsearch_sqlite.media.images import load_image, make_thumbnail

    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(name, f"too large ({len(data)} bytes; at most {MAX_UPLOAD_BYTES})")
    jpeg, _, width, height = make_thumbnail(load_image(io.BytesIO(data), name=name), longest)
    return jpeg, width, height
