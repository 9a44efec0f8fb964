"""Results as flat rows for export: CSV and JSON downloads on the pages, ``--csv`` in the
CLI, :meth:`Results.as_records` and :meth:`Collection.export` in Python.

One row per hit, its fields as the query returns them, with ``abs_path`` beside ``path``
when the ingested folder is known (``info``'s ``images.root``) and, for images, the
photo's EXIF fields (date, camera, place).
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import sqlite3
from collections.abc import Sequence
from typing import Any

from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.storage import rows

FORMATS = ("csv", "json")
MIME_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json; charset=utf-8"}


def images_root(conn: sqlite3.Connection) -> str | None:
    """The folder the images were ingested from (absolute), or None when unknown."""
    root = rows.read_meta(conn, "images_root")
    return str(root) if root else None


def absolute_path(root: str | None, path: str | None) -> str | None:
    """``path`` (stored relative to the ingested folder) under ``root``; None without a root."""
    if not root or path is None:
        return None
    return posixpath.join(root.replace("\\", "/"), path)


def records(
    hits: Sequence[Any], root: str | None = None, conn: sqlite3.Connection | None = None
) -> list[dict[str, Any]]:
    """``hits`` as flat dicts: ``abs_path`` after ``path`` when ``root`` is known; with
    ``conn``, image hits also get the photo metadata columns (taken_at, camera...)."""
    ids = [h.image_id for h in hits if hasattr(h, "image_id")]
    metadata = rows.photo_metadata_of(conn, ids) if conn is not None and ids else {}
    out = []
    for h in hits:
        d = h.as_dict()
        if isinstance(d.get("thumbnail"), (bytes, bytearray)):
            d.pop("thumbnail")  # images are served by the pages, not inlined in a file
        # the position first (as the tables show it), then the hit's own fields
        row: dict[str, Any] = {key: d.pop(key) for key in ("group", "rank") if key in d}
        for key, value in d.items():
            row[key] = value
            if key == "path" and root:
                row["abs_path"] = absolute_path(root, value)
        if "image_id" in d and conn is not None:
            for key in rows.PHOTO_METADATA_KEYS:
                row.setdefault(key, metadata.get(d["image_id"], {}).get(key))
        out.append(row)
    return out


def columns_of(records_: Sequence[dict[str, Any]], default: Sequence[str] = ()) -> list[str]:
    """The header of ``records_``: every key, in first-seen order (``default`` when empty)."""
    if not records_:
        return list(default)
    return list(dict.fromkeys(k for r in records_ for k in r))


def csv_text(records_: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``records_`` as CSV (a header row, then one row per record; None as empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = list(columns) if columns is not None else columns_of(records_)
    writer.writerow(header)
    for r in records_:
        writer.writerow(["" if r.get(c) is None else r.get(c) for c in header])
    return buffer.getvalue()


def json_text(records_: Sequence[dict[str, Any]], **extra: Any) -> str:
    """``{"rows": records_, **extra}`` as indented JSON."""
    return json.dumps({"rows": list(records_), **extra}, indent=2)


def export_text(records_: Sequence[dict[str, Any]], fmt: str, default_columns: Sequence[str] = (), **extra: Any) -> str:
    """``records_`` as ``fmt`` (``csv`` or ``json``); ``extra`` goes into the JSON object."""
    if fmt == "csv":
        return csv_text(records_, columns_of(records_, default_columns))
    if fmt == "json":
        return json_text(records_, **extra)
    raise QueryError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
