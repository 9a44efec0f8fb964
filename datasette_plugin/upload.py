"""The search-by-image page: a multipart upload, embedded with the database's own CNN
off the event loop, and the CSRF check Datasette 0.65 can't do for multipart bodies."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from datasette import Forbidden, Response

from .compat import resolve
from .media import sniff_image
from .render import DEFAULT_K, image_results, page_k, render, section

UPLOAD_SLACK = 64 * 1024  # multipart overhead allowed on top of the image itself
SPACES = ("visual", "semantic")
UPLOAD_TAGS = 10
UPLOAD_PATH = re.compile(r"/-/semsearch/upload$")

_upload_lock = threading.Lock()


async def upload_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/upload``: search by a new image (needs TensorFlow)."""
    from semsearch_sqlite.queries import new_image as embed

    db, _ = await resolve(datasette, request)
    available, reason = embed.backbone_available()
    context: dict[str, Any] = {
        "available": available, "reason": reason, "page": "upload", "k": DEFAULT_K, "space": "visual",
        "max_mb": embed.MAX_UPLOAD_BYTES // (1024 * 1024), "section": {}, "filename": None,
    }
    if request.method != "POST":
        return await render(datasette, request, "semsearch_upload.html", db, context)
    if not available:
        context["section"] = {"error": f"Search by image is off here: {reason}"}
        return await render(datasette, request, "semsearch_upload.html", db, context, status=503)
    try:
        fields, files = await _read_form(request, embed.MAX_UPLOAD_BYTES + UPLOAD_SLACK)
    except _UploadError as e:
        context["section"] = {"error": str(e)}
        return await render(datasette, request, "semsearch_upload.html", db, context, status=e.status)
    if not _csrf_ok(datasette, request, fields.get("csrftoken", "")):
        raise Forbidden("The form's CSRF token is missing or wrong; reload the page and try again")
    k = page_k(fields.get("k"))
    space = fields.get("space") if fields.get("space") in SPACES else "visual"
    context.update(k=k, space=space)
    upload = files.get("image")
    if upload is None or not upload[1]:
        context["section"] = {"error": "Choose an image file to search with."}
        return await render(datasette, request, "semsearch_upload.html", db, context, status=400)
    filename, data = upload
    context["filename"] = filename
    if sniff_image(data) is None:
        context["section"] = {"error": f"{filename}: not a JPEG, PNG, WebP, GIF, BMP or TIFF image."}
        return await render(datasette, request, "semsearch_upload.html", db, context, status=400)
    if len(data) > embed.MAX_UPLOAD_BYTES:
        context["section"] = {"error": f"{filename}: too large (at most {context['max_mb']} MB)."}
        return await render(datasette, request, "semsearch_upload.html", db, context, status=413)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        with _upload_lock:  # one CNN run at a time: it is memory-hungry
            return upload_results(conn, lambda: embed.describe_bytes(conn, data, k, space, name=filename,
                                                                    n_tags=UPLOAD_TAGS))

    context["section"] = await _off_loop(db, run)
    status = 400 if context["section"].get("error") else 200
    return await render(datasette, request, "semsearch_upload.html", db, context, status=status)


def upload_results(conn: sqlite3.Connection, fn: Callable[[], Any]) -> dict[str, Any]:
    """The upload page's section: neighbour cards, the image's tags and a preview data URL."""
    found = section(fn)
    if "results" not in found:
        return found
    new = found["results"]
    out = image_results(conn, lambda: new.similar)
    out["tags"] = new.tags.hits if new.tags is not None else []
    out["tags_error"] = new.tags_error
    if new.preview is not None:
        out["preview"] = f"data:{new.preview[1]};base64," + base64.b64encode(new.preview[0]).decode("ascii")
    return out


async def _off_loop(db: Any, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run a slow ``fn(conn)`` (the CNN) in a worker thread on its own read-only
    connection, so Datasette's SQL threads stay free for other requests."""
    if not getattr(db, "path", None):
        return await db.execute_fn(fn)

    def work() -> Any:
        from semsearch_sqlite.storage.store import connect

        conn = connect(db.path, readonly=True)
        try:
            return fn(conn)
        finally:
            conn.close()

    return await asyncio.get_running_loop().run_in_executor(None, work)


# -- CSRF ----------------------------------------------------------------------------------


def skip_csrf(scope: dict[str, Any]) -> bool:
    """``skip_csrf`` (Datasette 0.65): asgi-csrf can't read multipart bodies with
    python-multipart >= 0.0.13 (it crashes), so the upload view checks the token itself."""
    return scope.get("method") == "POST" and bool(UPLOAD_PATH.search(scope.get("path", "")))


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
