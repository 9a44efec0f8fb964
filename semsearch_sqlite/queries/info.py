"""``info``: what a database file holds, as data (``--json``) and as lines for people."""

from __future__ import annotations

import os
from typing import Any

from semsearch_sqlite.queries.duplicates import human_size
from semsearch_sqlite.storage.models import SEMANTIC_MODEL
from semsearch_sqlite.storage.rows import image_sizes, photo_counts, plain_counts, row_count
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL, VEC_WORDS


def describe(store: Store) -> dict[str, Any]:
    """Counts, dimensions, sources and sizes of a database, as plain data."""
    conn = store.conn
    meta = store.meta()

    plain = plain_counts(conn)

    def count(table: str) -> int:
        return row_count(conn, table) if store.vec_dim(table) else 0

    semantic = store.load_model(SEMANTIC_MODEL)
    data: dict[str, Any] = {
        "file": store.path,
        "file_bytes": os.path.getsize(store.path),
        "schema_version": meta.get("schema_version"),
        "written_by": f"semsearch-sqlite {meta.get('package_version')}",
        "created_at": meta.get("created_at"),
        "updated_at": meta.get("updated_at"),
        "images": {
            "count": plain["images"],
            **photo_counts(conn),
            **image_sizes(conn),
            "root": meta.get("images_root"),
        },
        "visual": {
            "backbone": meta.get("backbone"),
            "layer": meta.get("backbone_layer"),
            "dims": store.vec_dim(VEC_VISUAL),
            "vectors": count(VEC_VISUAL),
            "weights_sha256": meta.get("backbone_weights_sha256"),
        },
        "words": {
            "source": meta.get("words_source"),
            "dims": store.vec_dim(VEC_WORDS),
            "count": plain["words"],
            # the relatedness vectors associations read (None: a file from before them)
            "related": (meta.get("words_related") or {}).get("source"),
        },
        "semantic": {
            "method": semantic[1].get("method") if semantic else None,
            "dims": store.vec_dim(VEC_SEMANTIC),
            "vectors": count(VEC_SEMANTIC),
            "tags": plain["tags"],
            "trained_at": semantic[1].get("trained_at") if semantic else None,
        },
    }
    return data


def human_lines(data: dict[str, Any]) -> list[str]:
    """:func:`describe`'s data as ``info`` prints it: sizes in KB/MB (``file: 57.7 MB``
    for ``file_bytes``), photo counts with their share (``dated: 48 of 247``)."""
    out: list[str] = []

    def line(indent: str, key: str, value: Any, count: Any) -> None:
        if key.endswith("_bytes") and isinstance(value, int):
            key, value = key[: -len("_bytes")].replace("_", " ") + " size", human_size(value)
        elif key in ("dated", "located") and isinstance(count, int):
            value = f"{value} of {count} photos"
        out.append(f"{indent}{key}: {value}")

    for key, value in data.items():
        if isinstance(value, dict):
            out.append(f"{key}:")
            for k2, v2 in value.items():
                line("  ", k2, v2, value.get("count"))
        else:
            line("", key, value, None)
    return out


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
