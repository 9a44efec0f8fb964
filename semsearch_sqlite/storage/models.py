"""Named arrays in the ``models`` table: an npz BLOB and a JSON config per row (the
word-space model, the CNN's classifier, class vectors, vector indexes), so that a
shipped file needs nothing but numpy to use them."""

from __future__ import annotations

import io
import json
import sqlite3
from typing import Any

import numpy as np

# names of the rows this package writes
SEMANTIC_MODEL = "semantic"
# word-space methods (the semantic model's config "method") whose image vectors are built
# from the ImageNet class vectors: their stored vectors are smoothed, their queries anchored
CLASS_METHODS = ("conse", "joint")
CLASSES_MODEL = "imagenet_classes"
CLASSIFIER_MODEL = "classifier"


def save_model(
    conn: sqlite3.Connection, name: str, kind: str, arrays: dict[str, np.ndarray], config: dict[str, Any]
) -> None:
    """Store arrays (npz in a BLOB) and a JSON config in ``models``."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    conn.execute(
        "insert into models(name, kind, config, weights, created_at) "
        "values (?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')) "
        "on conflict(name) do update set kind = excluded.kind, config = excluded.config, "
        "weights = excluded.weights, created_at = excluded.created_at",
        [name, kind, json.dumps(config), buf.getvalue()],
    )


def load_model(conn: sqlite3.Connection, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Arrays and config stored under ``name`` in ``models``, or None."""
    try:
        row = conn.execute("select config, weights from models where name = ?", [name]).fetchone()
    except sqlite3.OperationalError:
        return None
    if row is None:
        return None
    with np.load(io.BytesIO(row[1]), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(row[0] or "{}")


def has_model(conn: sqlite3.Connection, name: str) -> bool:
    """Whether a ``models`` row named ``name`` exists."""
    try:
        return conn.execute("select 1 from models where name = ?", [name]).fetchone() is not None
    except sqlite3.OperationalError:
        return False


def delete_model(conn: sqlite3.Connection, name: str) -> None:
    """Delete the ``models`` row ``name`` (call inside a transaction)."""
    conn.execute("delete from models where name = ?", [name])


def model_config(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    """The JSON config of ``models`` row ``name`` without its arrays, or None."""
    try:
        row = conn.execute("select config from models where name = ?", [name]).fetchone()
    except sqlite3.OperationalError:
        return None
    if row is None:
        return None
    try:
        config = json.loads(row[0] or "{}")
    except ValueError:
        return None
    return config if isinstance(config, dict) else None
