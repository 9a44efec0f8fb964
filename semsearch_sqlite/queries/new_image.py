"""Queries by a NEW image (not in the database): embed it with the database's own
backbone, then search. Needs TensorFlow, except for EfficientNet-Lite0 (numpy, see model/effnet_numpy.py)."""

from __future__ import annotations

import importlib.util
import io
import os
import sqlite3
from typing import Any

import numpy as np

from semsearch_sqlite.errors import BackboneError, StoreError
from semsearch_sqlite.queries.search import Results, similar_to_vector
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.rows import read_meta
from semsearch_sqlite.storage.store import Store

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# loaded CNNs kept per process (each is tens to hundreds of MB)
BACKBONES_KEPT = 2
_backbones: ProcessCache[Any] = ProcessCache(BACKBONES_KEPT)


def backbone_available() -> tuple[bool, str]:
    """Whether new images can be embedded here, and why not."""
    for module in ("tensorflow", "keras"):
        if importlib.util.find_spec(module) is None:
            return False, f"{module} is not installed here (pip install semsearch-sqlite installs it)"
    return True, ""


def database_backbone(conn: sqlite3.Connection) -> Any:
    """The backbone this database was embedded with, loaded once per process."""
    from semsearch_sqlite.model.backbones import load_query_backbone

    name = read_meta(conn, "backbone")
    if not name:
        raise StoreError("this database has no embedded images yet, so it has no backbone")
    weights = read_meta(conn, "backbone_weights_path")
    layer = read_meta(conn, "backbone_layer")
    if weights and not os.path.exists(weights):
        raise BackboneError(f"the backbone weights {weights} used for this database are not on this machine")
    return _backbones.get_or_load((name, weights, layer), lambda: load_query_backbone(name, weights=weights, layer=layer))


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
    from semsearch_sqlite.media.images import load_image

    return search_image(store.conn, load_image(path), k, space)


def search_bytes(conn: sqlite3.Connection, data: bytes, k: Any = 10, space: str = "visual", name: str = "upload") -> Results:
    """Images nearest to an uploaded image given as bytes (size-limited)."""
    from semsearch_sqlite.errors import ImageError
    from semsearch_sqlite.media.images import load_image

    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(name, f"too large ({len(data)} bytes; at most {MAX_UPLOAD_BYTES})")
    return search_image(conn, load_image(io.BytesIO(data), name=name), k, space)
