"""The search-by-image page: a multipart upload, decoded reduced and embedded with the
database's own CNN off the event loop, a bounded number at a time, and the CSRF check
Datasette 0.65 can't do for multipart bodies."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import io
import re
import secrets
import sqlite3
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from datasette import Forbidden, Response

from .compat import CLASS_TABLES, WORD_TABLES, may_view_tables, resolve
from .config import PLUGIN_NAME, Settings, settings
from .media import sniff_image
from .render import image_results, page_k, render, section

UPLOAD_SLACK = 64 * 1024  # multipart overhead allowed on top of the image itself
SPACES = ("visual", "semantic")
UPLOAD_TAGS = 10
UPLOADS_OFF = f"uploads are turned off for this database (plugins: {PLUGIN_NAME}: uploads: false)"

# Uploads whose bodies are read and decoded at once (the others wait, unread); the decode
# and the CNN run in one thread, one image at a time.
UPLOAD_SLOTS = 2
READ_SECONDS = 60  # a body slower than this gives its slot up
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
_decoder: ThreadPoolExecutor | None = None
_decoder_lock = threading.Lock()
_trim: Any = None  # glibc's malloc_trim, False where there is none


async def upload_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/upload``: search by a new image (needs the [ingest] extra,
    and ``uploads`` not turned off in the plugin's settings)."""
    from semsearch_sqlite.queries import new_image

    db, _ = await resolve(datasette, request)
    config = settings(datasette, db.name)
    available, reason = new_image.backbone_available() if config.uploads else (False, UPLOADS_OFF)
    context: dict[str, Any] = {
        "available": available,
        "reason": reason,
        "page": "upload",
        "k": config.per_page,
        "space": "visual",
        "max_size": byte_size(config.max_upload_bytes),
        "section": {},
        "filename": None,
        "preview": None,
        "max_k": config.max_k,
    }
    if request.method != "POST":
        return await render(datasette, request, "semsearch_upload.html", db, context)
    if not available:
        context["section"] = {"error": f"Search by image is off here: {reason}"}
        return await render(
            datasette, request, "semsearch_upload.html", db, context, status=503 if config.uploads else 403
        )
    show_tags = await may_view_tables(datasette, request, db.name, WORD_TABLES + CLASS_TABLES)
    # Bodies are read only once a slot is free: waiting uploads stay in the socket
    async with _upload_slots():
        try:
            status = await _search(datasette, request, db, config, context, show_tags)
        except _UploadError as e:
            context["section"] = {"error": str(e)}
            status = e.status
    return await render(datasette, request, "semsearch_upload.html", db, context, status=status)


async def _search(
    datasette: Any, request: Any, db: Any, config: Settings, context: dict[str, Any], show_tags: bool
) -> int:
    """Read the form, decode and search; fills ``context``, returns the HTTP status."""
    from semsearch_sqlite.queries import new_image

    max_bytes = config.max_upload_bytes
    try:
        fields, files = await asyncio.wait_for(_read_form(request, max_bytes + UPLOAD_SLACK), READ_SECONDS)
    except asyncio.TimeoutError:
        raise _UploadError(f"The upload took longer than {READ_SECONDS} s to arrive; try again.", 408) from None
    if not _csrf_ok(datasette, request, fields.get("csrftoken", "")):
        raise Forbidden("The form's CSRF token is missing or wrong; reload the page and try again")
    k = page_k(fields.get("k"), config.per_page, config.max_k)
    space = fields.get("space") if fields.get("space") in SPACES else "visual"
    context.update(k=k, space=space)
    upload = files.get("image")
    if upload is None or not upload[1]:
        raise _UploadError("Choose an image file to search with.")
    filename, data = upload
    context["filename"] = filename
    if sniff_image(data) is None:
        raise _UploadError(f"{filename}: not a JPEG, PNG, WebP, GIF, BMP or TIFF image.")
    if len(data) > max_bytes:
        raise _UploadError(f"{filename}: too large (at most {context['max_size']}).", 413)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        return upload_results(
            conn,
            lambda: new_image.describe_image(
                conn, decode_upload(data, filename, config.max_upload_pixels), k, space, n_tags=UPLOAD_TAGS
            ),
            show_tags,
        )

    context["section"] = await _off_loop(db, run)
    context["preview"] = context["section"].pop("preview", None)
    return 400 if context["section"].get("error") else 200


def decode_upload(data: bytes, filename: str, max_pixels: int) -> Any:
    """An uploaded image decoded reduced (JPEG at a smaller DCT scale, other formats
    box-reduced at once) to what the model, the preview and ingest's display copy need,
    after a header-only check of its size against ``max_pixels``."""
    from semsearch_sqlite.queries.new_image import decode_reduced

    pixels = _declared_pixels(data)
    if pixels is not None and pixels > max_pixels:
        raise _UploadError(
            f"{filename}: {pixels:,} pixels; this page takes images of at most {max_pixels:,} "
            "pixels. Send a smaller copy.",
            413,
        )
    return decode_reduced(data, filename, max_pixels)


def _declared_pixels(data: bytes) -> int | None:
    """The pixel count an image's header declares (None if unreadable: the decode says why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size[0] * im.size[1]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))  # over Pillow's own limit: its message has the count
        return int(found.group(1)) if found else None
    except Exception:  # noqa: BLE001 - any unreadable header
        return None


def byte_size(n: int) -> str:
    """``n`` bytes for people: "20 MB", "512 KB", "1.5 MB"."""
    for unit, size in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{round(n / size, 1):g} {unit}"
    return f"{n} bytes"


def upload_results(conn: sqlite3.Connection, fn: Callable[[], Any], show_tags: bool = True) -> dict[str, Any]:
    """The upload page's section: neighbour cards, the image's tags (unless ``show_tags``
    is false: the actor may not view the tables they come from) and a preview data URL."""
    found = section(fn)
    if "results" not in found:
        return found
    new = found["results"]
    out = image_results(conn, lambda: new.similar)
    out["tags"] = new.tags.hits if new.tags is not None and show_tags else []
    out["tags_error"] = new.tags_error if show_tags else None
    if new.preview is not None:  # the query image, shown beside its results (it is not stored)
        data, mime, width, height = new.preview
        out["preview"] = {
            "src": f"data:{mime};base64," + base64.b64encode(data).decode("ascii"),
            "width": width,
            "height": height,
        }
    return out


def _upload_slots() -> asyncio.Semaphore:
    """This event loop's upload slots (a Semaphore belongs to one loop)."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(UPLOAD_SLOTS)
    return slots


def _worker() -> ThreadPoolExecutor:
    global _decoder
    with _decoder_lock:
        if _decoder is None:
            _decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semsearch-upload")
        return _decoder


def _give_memory_back() -> None:
    """Return the freed pages of a decode to the system: glibc keeps them in the thread's
    malloc arena otherwise, so the server's RSS stays at its peak (Linux only)."""
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)


async def _off_loop(db: Any, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run a slow ``fn(conn)`` (decode and CNN) in the upload thread, one at a time, on
    its own read-only connection, so Datasette's SQL threads stay free for other
    requests, and the memory of one decode is reused by the next."""
    if not getattr(db, "path", None):
        return await db.execute_fn(fn)

    def work() -> Any:
        from semsearch_sqlite.storage.store import connect

        conn = connect(db.path, readonly=True, immutable=not getattr(db, "is_mutable", True))
        try:
            return fn(conn)
        finally:
            conn.close()
            _give_memory_back()

    return await asyncio.get_running_loop().run_in_executor(_worker(), work)


# -- CSRF ----------------------------------------------------------------------------------


def skip_csrf(datasette: Any, scope: dict[str, Any], route: re.Pattern[str]) -> bool:
    """``skip_csrf`` (Datasette 0.65): asgi-csrf can't read multipart bodies with
    python-multipart >= 0.0.13 (it crashes), so the upload view checks the token itself.

    Exactly the requests Datasette routes to the upload view skip asgi-csrf: the path is
    read as Datasette's router reads it (the raw path, less ``base_url``) and matched
    against the upload route itself, so ``/db/images%2F-%2Fsemsearch%2Fupload`` (the
    decoded path ends the same way, but it routes to the table) is still checked.
    """
    if scope.get("method") != "POST" or scope.get("type") != "http":
        return False
    raw = scope.get("raw_path")
    path = (raw.decode("latin-1") if raw else scope.get("path", "")).partition("?")[0]
    base_url = (datasette.setting("base_url") if datasette is not None else None) or "/"
    if base_url != "/" and path.startswith(base_url):  # as Datasette's route_path does
        path = "/" + path[len(base_url) :]
    return route.match(path) is not None


def _csrf_ok(datasette: Any, request: Any, token: str) -> bool:
    """asgi-csrf's double-submit check, for the upload form (Datasette 0.65).

    Datasette 1.0a protects POSTs with Origin/Sec-Fetch-Site checks before any view runs.
    As asgi-csrf does, a request without cookies (no ambient credentials) passes.
    """
    if hasattr(datasette, "allowed") or "csrftoken" not in request.scope:
        return True
    if not request.headers.get("cookie"):
        return True
    return secrets.compare_digest(token or "", request.scope["csrftoken"]())


# -- multipart -----------------------------------------------------------------------------


class _UploadError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


async def _read_form(request: Any, limit: int) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """A multipart/form-data body, read at most ``limit`` bytes: (fields, files)."""
    ctype = request.headers.get("content-type") or ""
    kind, _, rest = ctype.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise _UploadError("Send the image as a multipart/form-data form (the page's upload form does).")
    boundary = ""
    for param in rest.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise _UploadError("The form has no multipart boundary.")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _UploadError("The upload is too large.", status=413)
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            raise _UploadError("The upload was interrupted.")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise _UploadError("The upload is too large.", status=413)
        chunks.append(body)
        if not message.get("more_body"):
            break
    return parse_multipart(b"".join(chunks), boundary.encode("latin-1"))


def parse_multipart(body: bytes, boundary: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """Split a multipart/form-data body into text fields and ``name -> (filename, bytes)``."""
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        disposition = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                for item in value.split(";")[1:]:
                    k, _, v = item.strip().partition("=")
                    disposition[k.lower()] = v.strip().strip('"')
        name = disposition.get("name")
        if not name:
            continue
        if "filename" in disposition:
            files[name] = (disposition["filename"] or "upload", content)
        else:
            fields[name] = content.decode("utf-8", "replace")
    return fields, files
