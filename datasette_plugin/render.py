"""What every page of the plugin shares: its URLs, request parameters, the thumbnail
grid's cards, and rendering a template with the common context."""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Callable
from typing import Any

from datasette import Response

from semsearch_sqlite.queries import search
from semsearch_sqlite.storage import rows
from semsearch_sqlite.errors import SemsearchError

from .config import Settings, settings

PLUGIN = "semsearch-sqlite"  # the distribution name: Datasette serves static files under it
DEFAULT_K = Settings.per_page
MAX_PAGE_K = Settings.max_k
EAGER_IMAGES = 24  # the first thumbnails of a grid load at once, the rest lazily


def page_k(raw: Any, default: int = DEFAULT_K, maximum: int = MAX_PAGE_K) -> int:
    """``k`` from a query string, clamped to 1..``maximum`` (anything else: ``default``).

    The pages pass the database's configured ``per_page`` and ``max_k`` (see :mod:`.config`).
    """
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        value = default
    return max(1, min(value, maximum))


def request_k(datasette: Any, database: str, raw: Any, default: int | None = None) -> int:
    """:func:`page_k` with ``database``'s settings: ``default`` (else ``per_page``), at most ``max_k``."""
    found = settings(datasette, database)
    return page_k(raw, found.per_page if default is None else default, found.max_k)


class Urls:
    """The plugin's URLs for one database (``base_url``-safe)."""

    def __init__(self, datasette: Any, database: str):
        self.datasette = datasette
        self.database = database
        self.base = datasette.urls.database(database) + "/-/semsearch"

    def search(self, q: str | None = None, k: int | None = None) -> str:
        return self.base + _query({"q": q, "k": k})

    def words(self, q: str | None = None) -> str:
        return self.base + "/words" + _query({"q": q})

    def upload(self) -> str:
        return self.base + "/upload"

    def report(self) -> str:
        return self.base + "/report"

    def image(self, image_id: int, focus: str | None = None) -> str:
        return f"{self.base}/image/{int(image_id)}" + _query({"focus": focus})

    def thumb(self, image_id: int) -> str:
        return f"{self.base}/thumb/{int(image_id)}.jpg"

    def display(self, image_id: int) -> str:
        return f"{self.base}/display/{int(image_id)}"

    def sql(self, sql: str, **params: Any) -> str:
        """The SQL page running ``sql`` with ``:named`` parameters (1.0a: ``/db/-/query``)."""
        path = self.datasette.urls.database(self.database)
        if hasattr(self.datasette.urls, "database_query"):
            path += "/-/query"
        return path + _query({"sql": sql, **params})

    def table(self, table: str) -> str:
        return self.datasette.urls.table(self.database, table)

    def static(self, path: str) -> str:
        return self.datasette.urls.static_plugins(PLUGIN, path)


def _query(params: dict[str, Any]) -> str:
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return ("?" + urllib.parse.urlencode(kept)) if kept else ""


def card(row: rows.ImageRow, *, rank: int, distance: float | None = None) -> dict[str, Any]:
    """What a thumbnail grid shows of one image."""
    return {"image_id": row.id, "path": row.path, "name": row.name, "label": row.label, "distance": distance,
            "rank": rank, "width": row.thumb_width, "height": row.thumb_height}


def cards(conn: sqlite3.Connection, hits: list[Any]) -> list[dict[str, Any]]:
    """Image hits plus what a thumbnail grid shows (file name, thumbnail size)."""
    found = rows.image_rows(conn, [h.image_id for h in hits])
    out = []
    for h in hits:
        row = found.get(h.image_id) or rows.ImageRow(h.image_id, h.path, h.label)
        out.append(card(rows.ImageRow(h.image_id, h.path, h.label, row.thumb_width, row.thumb_height),
                        rank=h.rank, distance=h.distance))
    return out


def section(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run one query of a page; a SemsearchError becomes the section's error message."""
    try:
        res = fn()
    except SemsearchError as e:
        return {"error": str(e)}
    return {"results": res}


def image_results(conn: sqlite3.Connection, fn: Callable[[], search.Results]) -> dict[str, Any]:
    """:func:`section` for a query returning images: their ``cards``, unknown words, note."""
    out = section(fn)
    if "results" in out:
        res = out["results"]
        out = {"cards": cards(conn, res.hits), "unknown": res.unknown, "note": res.note}
    return out


async def render(
    datasette: Any, request: Any, template: str, db: Any, context: dict[str, Any], status: int = 200
) -> Response:
    """``template`` with the plugin's common context (URLs, CSS and JS) as a response."""
    urls = Urls(datasette, db.name)
    found = settings(datasette, db.name)
    ctx = {
        "database": db.name,
        "semsearch": urls,
        "css_url": urls.static("semsearch.css"),
        "js_url": urls.static("semsearch.js"),
        "eager_images": EAGER_IMAGES,
        "max_k": found.max_k,
        "thumbnail_px": found.thumbnail_px,
        **context,
    }
    html = await datasette.render_template(template, ctx, request=request)
    return Response.html(html, status=status)
