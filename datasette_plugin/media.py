"""Image bytes: stored thumbnails and display copies served from the database, and
``render_cell`` turning ``thumbnail`` BLOBs into pictures on Datasette's own pages."""

from __future__ import annotations

import base64
from typing import Any

from datasette import Forbidden, NotFound, Response
from markupsafe import Markup, escape

from semsearch_sqlite.storage import rows

from .compat import may_view_table, resolve
from .databases import is_ours
from .render import Urls, alt_text

CELL_THUMBNAIL_LIMIT = 200_000  # bytes: bigger BLOBs in a `thumbnail` column are left alone
CACHE_SECONDS = 3600
MAX_SQLITE_INT = 2**63 - 1
IMAGE_MIMES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")
_MAGIC = [
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
]


def sniff_image(data: bytes) -> str | None:
    """The MIME type of image bytes by their magic number, or None."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_id(raw: str) -> int:
    """The image id of a URL (the routes only match digits); 404 past SQLite's range."""
    value = int(raw)
    if value > MAX_SQLITE_INT:
        raise NotFound("Image not found")
    return value


# -- routes --------------------------------------------------------------------------------


async def thumb_route(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/thumb/<id>.jpg``: the stored thumbnail BLOB."""
    db, private = await resolve(datasette, request)
    iid = image_id(request.url_vars["id"])
    found = await db.execute_fn(lambda conn: rows.thumbnail(conn, iid))
    if found is None:
        raise NotFound("Image not found")
    data, sha256 = found
    return _image_response(request, data, sniff_image(data), f"t{iid}-{sha256}", private)


async def display_route(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/display/<id>``: the stored display copy (or original)."""
    db, private = await resolve(datasette, request)
    if not await may_view_table(datasette, request, db.name, "image_files"):
        raise Forbidden("You do not have permission to view the image_files table")
    iid = image_id(request.url_vars["id"])
    found = await db.execute_fn(lambda conn: rows.display_file(conn, iid))
    if found is None:
        raise NotFound("Image not found")
    data, stored_mime, sha256 = found
    mime = stored_mime if stored_mime in IMAGE_MIMES else sniff_image(data)
    return _image_response(request, data, mime, f"d{iid}-{sha256}", private)


def _image_response(request: Any, data: bytes, mime: str | None, tag: str, private: bool) -> Response:
    etag = f'"{tag}"'
    headers = {
        "Cache-Control": f"{'private' if private else 'public'}, max-age={CACHE_SECONDS}",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    if etag in [t.strip() for t in (request.headers.get("if-none-match") or "").split(",")]:
        return Response(b"", status=304, headers=headers, content_type=mime or "application/octet-stream")
    return Response(data, headers=headers, content_type=mime or "application/octet-stream")


# -- cells ---------------------------------------------------------------------------------


def render_cell(value: Any, column: str, table: str | None, row: Any, database: str, datasette: Any) -> Markup | None:
    """``render_cell``: pictures for thumbnails, links to image pages for image ids."""
    if column == "thumbnail":
        return render_thumbnail(value, column, table, row, database, datasette)
    if not is_ours(datasette, database):
        return None
    if column == "path" and table == "images":
        # the images table's thumbnail column is its 10th, off-screen: show a small one
        # beside the path, which is the second (alt="": the link's text is the path)
        iid = _row_value(row, "id")
        if isinstance(iid, int) and isinstance(value, str):
            urls = Urls(datasette, database)
            return Markup(
                f'<a href="{escape(urls.image(iid))}" class="semsearch-path-cell"><img class="semsearch-cell" '
                f'src="{escape(urls.thumb(iid))}" alt="" loading="lazy" '
                f'style="max-width: 64px; max-height: 48px; vertical-align: middle; margin-right: 0.4em">'
                f"{escape(value)}</a>"
            )
    if column == "image_id" and isinstance(value, int) and not isinstance(value, bool):
        return Markup(f'<a href="{escape(Urls(datasette, database).image(value))}">{value}</a>')
    return None


def render_thumbnail(
    value: Any, column: str, table: str | None, row: Any, database: str, datasette: Any
) -> Markup | None:
    """A ``thumbnail`` column holding image bytes as an ``<img>`` (alt: label, file name)."""
    if column != "thumbnail" or not isinstance(value, (bytes, bytearray, memoryview)):
        return None
    data = bytes(value)
    mime = sniff_image(data)
    if mime is None:
        return None
    ours = is_ours(datasette, database)
    path = _row_value(row, "path")
    alt = escape(alt_text(_row_value(row, "label"), path.rsplit("/", 1)[-1]) if isinstance(path, str) else "thumbnail")
    if ours and table == "images":
        iid = _row_value(row, "id")
        if isinstance(iid, int):
            urls = Urls(datasette, database)
            return Markup(
                f'<a href="{escape(urls.image(iid))}"><img class="semsearch-cell" '
                f'src="{escape(urls.thumb(iid))}" alt="{alt}" loading="lazy" '
                'style="max-width: 128px; max-height: 128px"></a>'
            )
    if len(data) > CELL_THUMBNAIL_LIMIT:
        return None
    img = (
        f'<img class="semsearch-cell" src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}" '
        f'alt="{alt}" style="max-width: 128px; max-height: 128px">'
    )
    iid = _row_value(row, "image_id") if ours else None
    if isinstance(iid, int):
        return Markup(f'<a href="{escape(Urls(datasette, database).image(iid))}">{img}</a>')
    return Markup(img)


def _row_value(row: Any, key: str) -> Any:
    try:
        return row[key]
    except (KeyError, IndexError, TypeError):
        return None
