"""Pages, image routes, cell rendering and hidden tables of the semsearch Datasette plugin.

Every query is a call into :mod:`semsearch_sqlite.search` (or ``embed`` for uploads);
this module only checks permissions, reads request parameters and renders templates.
Works on Datasette 0.65 and 1.0a (see the ``_visibility`` and ``_can_execute_sql``
compat helpers).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import re
import secrets
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any

from datasette import Forbidden, NotFound, Response
from datasette.utils import tilde_decode
from markupsafe import Markup, escape

from semsearch_sqlite import search
from semsearch_sqlite.errors import SemsearchError

log = logging.getLogger(__name__)

PLUGIN = "semsearch-sqlite"  # the distribution name: Datasette serves static files under it
META_TABLE = "semsearch_meta"
DEFAULT_K = 24
MAX_PAGE_K = 100
TAGS_SHOWN = 10
FOCUS_LINKS = 5
EAGER_IMAGES = 24  # the first thumbnails of a grid load at once, the rest lazily
CELL_THUMBNAIL_LIMIT = 200_000  # bytes: bigger BLOBs in a `thumbnail` column are left alone
CACHE_SECONDS = 3600
UPLOAD_SLACK = 64 * 1024  # multipart overhead allowed on top of the image itself
MAX_SQLITE_INT = 2**63 - 1
SPACES = ("visual", "semantic")
UPLOAD_PATH = re.compile(r"/-/semsearch/upload$")
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

# per Datasette instance: database name -> (holds a semsearch store, its vec0 shadow
# tables); filled by prepare_connection and startup, read synchronously by render_cell
# and get_metadata
_tables: "weakref.WeakKeyDictionary[Any, dict[str, tuple[bool, list[str]]]]" = weakref.WeakKeyDictionary()
_tables_lock = threading.Lock()
_warned: set[str] = set()
_upload_lock = threading.Lock()


# -- connections ---------------------------------------------------------------------------


def prepare(conn: sqlite3.Connection, database: str, datasette: Any = None) -> None:
    """Load sqlite-vec and register the semsearch SQL functions on ``conn``; never raises."""
    if database == "_internal":
        return
    try:
        from semsearch_sqlite.sqlite_ext import load_sqlite_vec

        load_sqlite_vec(conn)
    except Exception as e:  # noqa: BLE001 - a failure here would turn every request into a 500
        _warn_once("vec", "semsearch: sqlite-vec unavailable on database %s (%s)", database, e)
    try:
        from semsearch_sqlite.sqlfuncs import register_functions

        register_functions(conn)
    except Exception as e:  # noqa: BLE001
        _warn_once("functions", "semsearch: SQL functions unavailable on database %s (%s)", database, e)
    try:
        if datasette is not None:
            _note_tables(conn, database, datasette)
    except Exception as e:  # noqa: BLE001
        _warn_once("tables", "semsearch: cannot list the tables of database %s (%s)", database, e)


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _note_tables(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    rows = conn.execute("select name, sql from sqlite_master where type = 'table'").fetchall()
    ours = any(name == META_TABLE for name, _ in rows)
    vec_tables = [name for name, sql in rows if sql and "using vec0" in " ".join(sql.lower().split())]
    shadow = sorted(
        name
        for name, sql in rows
        if any(name.startswith(v + "_") for v in vec_tables) and not (sql or "").lower().startswith("create virtual")
    )
    with _tables_lock:
        _tables.setdefault(datasette, {})[database] = (ours, shadow)


def _known_tables(datasette: Any) -> dict[str, tuple[bool, list[str]]]:
    with _tables_lock:
        return dict(_tables.get(datasette, {}))


def _is_ours(datasette: Any, database: str) -> bool:
    return _known_tables(datasette).get(database, (False, []))[0]


async def startup(datasette: Any) -> None:
    """Find each database's vec0 shadow tables; on Datasette 1.0a mark them hidden in
    its config (1.0a hides SQLite shadow tables itself, but sqlite-vec 0.1.x doesn't
    declare its tables as shadow tables, and 1.0a has no ``get_metadata`` hook)."""
    for name, db in list(datasette.databases.items()):
        if name == "_internal":
            continue
        try:
            await db.execute_fn(lambda conn, name=name: _note_tables(conn, name, datasette))
        except Exception as e:  # noqa: BLE001 - never stop Datasette from starting
            _warn_once("tables", "semsearch: cannot list the tables of database %s (%s)", name, e)
    config = getattr(datasette, "config", None)
    shadow = {name: tables for name, (_, tables) in _known_tables(datasette).items() if tables}
    if hasattr(datasette, "allowed") and shadow and (config is None or isinstance(config, dict)):
        config = copy.deepcopy(config or {})  # the caller's dict stays as it was
        for name, tables in shadow.items():
            db_config = config.setdefault("databases", {}).setdefault(name, {})
            for table in tables:
                db_config.setdefault("tables", {}).setdefault(table, {}).setdefault("hidden", True)
        datasette.config = config


def hidden_tables_metadata(datasette: Any, database: str | None = None) -> dict[str, Any]:
    """``get_metadata`` (Datasette 0.65): mark vec0 shadow tables hidden.

    Datasette 1.0a has no ``get_metadata`` hook; :func:`startup` does it there.
    """
    known = _known_tables(datasette)
    names = [database] if database is not None else list(known)
    databases = {
        name: {"tables": {t: {"hidden": True} for t in known[name][1]}} for name in names if known.get(name, (0, []))[1]
    }
    return {"databases": databases} if databases else {}


# -- permissions (Datasette 0.65 and 1.0a) -------------------------------------------------


async def _visibility(datasette: Any, actor: Any, database: str) -> tuple[bool, bool]:
    """(visible, private) of the ``images`` table of ``database`` for ``actor``.

    Datasette 1.0a: ``allowed``/``check_visibility`` with resource objects, which cascade
    from instance to database to table. 0.65: the ``permissions=`` list that its own
    table page checks (table, then database, then instance).
    """
    if hasattr(datasette, "allowed"):
        from datasette.resources import TableResource

        return await datasette.check_visibility(
            actor, action="view-table", resource=TableResource(database=database, table="images")
        )
    return await datasette.check_visibility(
        actor,
        permissions=[("view-table", (database, "images")), ("view-database", database), "view-instance"],
    )


async def _can_execute_sql(datasette: Any, actor: Any, database: str) -> bool:
    """Whether ``actor`` may run arbitrary SQL on ``database`` (for the "as SQL" links)."""
    if hasattr(datasette, "allowed"):
        from datasette.resources import DatabaseResource

        resource = DatabaseResource(database=database)
        return bool(await datasette.allowed(action="execute-sql", resource=resource, actor=actor))
    return bool(await datasette.permission_allowed(actor, "execute-sql", resource=database, default=True))


async def semsearch_databases(datasette: Any, actor: Any) -> list[str]:
    """Names of the databases holding a semsearch store that ``actor`` may view."""
    names = []
    for name, db in list(datasette.databases.items()):
        if name == "_internal" or not await _is_semsearch(db):
            continue
        if (await _visibility(datasette, actor, name))[0]:
            names.append(name)
    return names


async def _is_semsearch(db: Any) -> bool:
    try:
        return bool(await db.table_exists(META_TABLE))
    except Exception:  # noqa: BLE001 - an unreadable database is simply not ours
        return False


async def _resolve(datasette: Any, request: Any) -> tuple[Any, bool]:
    """The database of the URL, after the permission check: (db, private)."""
    route = tilde_decode(request.url_vars["database"])
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise NotFound("Database not found")
    visible, private = await _visibility(datasette, request.actor, db.name)
    if not visible:
        raise Forbidden("You do not have permission to view this database")
    if not await _is_semsearch(db):
        raise NotFound("This database holds no semsearch-sqlite store")
    return db, private


# -- helpers -------------------------------------------------------------------------------


def page_k(raw: Any, default: int = DEFAULT_K) -> int:
    """``k`` from a query string, clamped to 1..MAX_PAGE_K (anything else: ``default``)."""
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return default
    return max(1, min(value, MAX_PAGE_K))


def sniff_image(data: bytes) -> str | None:
    """The MIME type of image bytes by their magic number, or None."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _image_id(raw: str) -> int:
    value = int(raw)  # the route only matches digits
    if value > MAX_SQLITE_INT:
        raise NotFound("Image not found")
    return value


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

    def static(self, path: str) -> str:
        return self.datasette.urls.static_plugins(PLUGIN, path)


def _query(params: dict[str, Any]) -> str:
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return ("?" + urllib.parse.urlencode(kept)) if kept else ""


def _cards(conn: sqlite3.Connection, hits: list[Any]) -> list[dict[str, Any]]:
    """Image hits plus what a thumbnail grid shows (file name, thumbnail size)."""
    ids = [h.image_id for h in hits]
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    sizes = {
        r[0]: (r[1], r[2])
        for r in conn.execute(f"select id, thumb_width, thumb_height from images where id in ({marks})", ids)
    }
    out = []
    for h in hits:
        w, h_ = sizes.get(h.image_id, (None, None))
        out.append(
            {
                "image_id": h.image_id,
                "path": h.path,
                "name": h.path.rsplit("/", 1)[-1],
                "label": h.label,
                "distance": h.distance,
                "rank": h.rank,
                "width": w,
                "height": h_,
            }
        )
    return out


def _section(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run one query of a page; a SemsearchError becomes the section's error message."""
    try:
        res = fn()
    except SemsearchError as e:
        return {"error": str(e)}
    return {"results": res}


def _image_results(conn: sqlite3.Connection, fn: Callable[[], search.Results]) -> dict[str, Any]:
    section = _section(fn)
    if "results" in section:
        res = section["results"]
        section = {"cards": _cards(conn, res.hits), "unknown": res.unknown, "note": res.note}
    return section


async def _render(
    datasette: Any, request: Any, template: str, db: Any, context: dict[str, Any], status: int = 200
) -> Response:
    urls = Urls(datasette, db.name)
    ctx = {
        "database": db.name,
        "semsearch": urls,
        "css_url": urls.static("semsearch.css"),
        "js_url": urls.static("semsearch.js"),
        "eager_images": EAGER_IMAGES,
        **context,
    }
    html = await datasette.render_template(template, ctx, request=request)
    return Response.html(html, status=status)


# -- pages ---------------------------------------------------------------------------------


async def search_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch?q=cat+sofa&k=24``: text -> images."""
    db, _ = await _resolve(datasette, request)
    q = (request.args.get("q") or "").strip()
    k = page_k(request.args.get("k"))
    section: dict[str, Any] = {}
    if q:
        section = await db.execute_fn(
            lambda conn: _image_results(conn, lambda: search.similar_images(conn, q, k, allow_unknown=True))
        )
    urls = Urls(datasette, db.name)
    sql_url = None
    if q and await _can_execute_sql(datasette, request.actor, db.name):
        sql_url = urls.sql("select * from similar_images(:q, :k)", q=q, k=k)
    status = 400 if section.get("error") else 200
    return await _render(
        datasette, request, "semsearch_search.html", db,
        {"q": q, "k": k, "section": section, "sql_url": sql_url, "page": "search"}, status,
    )


async def image_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/image/<id>[?focus=word]``: one image, its tags, its neighbours."""
    db, _ = await _resolve(datasette, request)
    image_id = _image_id(request.url_vars["id"])
    focus = (request.args.get("focus") or "").strip() or None
    k = page_k(request.args.get("k"), default=12)

    def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
        row = conn.execute(
            "select i.id, i.path, i.label, i.width, i.height, i.mime, i.size, i.sha256, "
            "f.display_width, f.display_height, f.display is not null "
            "from images i left join image_files f on f.image_id = i.id where i.id = ?",
            [image_id],
        ).fetchone()
        if row is None:
            return None
        keys = ["id", "path", "label", "width", "height", "mime", "size", "sha256", "display_width",
                "display_height", "has_display"]
        out: dict[str, Any] = {"image": dict(zip(keys, row))}
        out["image"]["name"] = row[1].rsplit("/", 1)[-1]
        out["tags"] = _section(lambda: search.image_tags(conn, image_id, TAGS_SHOWN).hits)
        out["visual"] = _image_results(conn, lambda: search.similar_to_image(conn, image_id, k, "visual"))
        out["semantic"] = _image_results(conn, lambda: search.similar_to_image(conn, image_id, k, "semantic"))
        if focus:
            out["focused"] = _image_results(conn, lambda: search.focused_search(conn, image_id, focus, k))
        return out

    data = await db.execute_fn(read)
    if data is None:
        raise NotFound("Image not found")
    urls = Urls(datasette, db.name)
    can_sql = await _can_execute_sql(datasette, request.actor, db.name)
    sql_urls = {}
    if can_sql:
        sql_urls = {
            "tags": urls.sql("select * from image_tags(:id)", id=image_id),
            "visual": urls.sql("select * from similar_to_image(:id, :k, 'visual')", id=image_id, k=k),
            "semantic": urls.sql("select * from similar_to_image(:id, :k, 'semantic')", id=image_id, k=k),
        }
        if focus:
            sql_urls["focused"] = urls.sql(
                "select * from similar_images_focused(:id, :focus, :k)", id=image_id, focus=focus, k=k
            )
    tags = data["tags"].get("results") or []
    return await _render(
        datasette, request, "semsearch_image.html", db,
        {**data, "focus": focus, "k": k, "focus_words": [t.word for t in tags[:FOCUS_LINKS]],
         "sql_urls": sql_urls, "page": "image"},
    )


async def words_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/words?q=cat``: the nearest vocabulary words."""
    db, _ = await _resolve(datasette, request)
    q = (request.args.get("q") or "").strip()
    k = page_k(request.args.get("k"))
    section: dict[str, Any] = {}
    if q:
        section = await db.execute_fn(
            lambda conn: _section(lambda: search.similar_words(conn, q, k, allow_unknown=True))
        )
    sql_url = None
    if q and await _can_execute_sql(datasette, request.actor, db.name):
        sql_url = Urls(datasette, db.name).sql("select * from similar_words(:q, :k)", q=q, k=k)
    status = 400 if section.get("error") else 200
    return await _render(
        datasette, request, "semsearch_words.html", db,
        {"q": q, "k": k, "section": section, "sql_url": sql_url, "page": "words"}, status,
    )


async def upload_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/upload``: search by a new image (needs TensorFlow)."""
    from semsearch_sqlite import embed

    db, _ = await _resolve(datasette, request)
    available, reason = embed.backbone_available()
    context: dict[str, Any] = {
        "available": available, "reason": reason, "page": "upload", "k": DEFAULT_K, "space": "visual",
        "max_mb": embed.MAX_UPLOAD_BYTES // (1024 * 1024), "section": {}, "filename": None,
    }
    if request.method != "POST":
        return await _render(datasette, request, "semsearch_upload.html", db, context)
    if not available:
        context["section"] = {"error": f"Search by image is off here: {reason}"}
        return await _render(datasette, request, "semsearch_upload.html", db, context, status=503)
    try:
        fields, files = await _read_form(request, embed.MAX_UPLOAD_BYTES + UPLOAD_SLACK)
    except _UploadError as e:
        context["section"] = {"error": str(e)}
        return await _render(datasette, request, "semsearch_upload.html", db, context, status=e.status)
    if not _csrf_ok(datasette, request, fields.get("csrftoken", "")):
        raise Forbidden("The form's CSRF token is missing or wrong; reload the page and try again")
    k = page_k(fields.get("k"))
    space = fields.get("space") if fields.get("space") in SPACES else "visual"
    context.update(k=k, space=space)
    upload = files.get("image")
    if upload is None or not upload[1]:
        context["section"] = {"error": "Choose an image file to search with."}
        return await _render(datasette, request, "semsearch_upload.html", db, context, status=400)
    filename, data = upload
    context["filename"] = filename
    if sniff_image(data) is None:
        context["section"] = {"error": f"{filename}: not a JPEG, PNG, WebP, GIF, BMP or TIFF image."}
        return await _render(datasette, request, "semsearch_upload.html", db, context, status=400)
    if len(data) > embed.MAX_UPLOAD_BYTES:
        context["section"] = {"error": f"{filename}: too large (at most {context['max_mb']} MB)."}
        return await _render(datasette, request, "semsearch_upload.html", db, context, status=413)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        with _upload_lock:  # one CNN run at a time: it is memory-hungry
            return _image_results(conn, lambda: embed.search_bytes(conn, data, k, space, name=filename))

    context["section"] = await _off_loop(db, run)
    status = 400 if context["section"].get("error") else 200
    return await _render(datasette, request, "semsearch_upload.html", db, context, status=status)


async def _off_loop(db: Any, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run a slow ``fn(conn)`` (the CNN) in a worker thread on its own read-only
    connection, so Datasette's SQL threads stay free for other requests."""
    if not getattr(db, "path", None):
        return await db.execute_fn(fn)

    def work() -> Any:
        from semsearch_sqlite.store import connect

        conn = connect(db.path, readonly=True)
        try:
            return fn(conn)
        finally:
            conn.close()

    return await asyncio.get_running_loop().run_in_executor(None, work)


async def not_found(datasette: Any, request: Any) -> Response:
    """Every other URL under ``/<db>/-/semsearch/``."""
    raise NotFound("No such semsearch page; image ids are whole numbers")


# -- image bytes ---------------------------------------------------------------------------


async def thumb_route(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/thumb/<id>.jpg``: the stored thumbnail BLOB."""
    db, private = await _resolve(datasette, request)
    image_id = _image_id(request.url_vars["id"])
    row = (await db.execute("select thumbnail, sha256 from images where id = ?", [image_id])).first()
    if row is None or not row[0]:
        raise NotFound("Image not found")
    return _image_response(request, bytes(row[0]), sniff_image(bytes(row[0])), f"t{image_id}-{row[1]}", private)


async def display_route(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/display/<id>``: the stored display copy (or original)."""
    db, private = await _resolve(datasette, request)
    image_id = _image_id(request.url_vars["id"])
    row = (
        await db.execute(
            "select f.display, f.display_mime, i.sha256 from image_files f join images i on i.id = f.image_id "
            "where f.image_id = ?",
            [image_id],
        )
    ).first()
    if row is None or not row[0]:
        raise NotFound("Image not found")
    data = bytes(row[0])
    mime = row[1] if row[1] in IMAGE_MIMES else sniff_image(data)
    return _image_response(request, data, mime, f"d{image_id}-{row[2]}", private)


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


# -- uploads -------------------------------------------------------------------------------


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


# -- cells ---------------------------------------------------------------------------------


def render_thumbnail(
    value: Any, column: str, table: str | None, row: Any, database: str, datasette: Any
) -> Markup | None:
    """``render_cell``: a ``thumbnail`` column holding image bytes as an ``<img>``."""
    if column != "thumbnail" or not isinstance(value, (bytes, bytearray, memoryview)):
        return None
    data = bytes(value)
    mime = sniff_image(data)
    if mime is None:
        return None
    ours = _is_ours(datasette, database)
    if ours and table == "images":
        image_id = _row_value(row, "id")
        if isinstance(image_id, int):
            urls = Urls(datasette, database)
            return Markup(
                f'<a href="{escape(urls.image(image_id))}"><img class="semsearch-cell" '
                f'src="{escape(urls.thumb(image_id))}" alt="image {image_id}" loading="lazy" '
                'style="max-width: 128px; max-height: 128px"></a>'
            )
    if len(data) > CELL_THUMBNAIL_LIMIT:
        return None
    img = (
        f'<img class="semsearch-cell" src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}" '
        'alt="thumbnail" style="max-width: 128px; max-height: 128px">'
    )
    image_id = _row_value(row, "image_id") if ours else None
    if isinstance(image_id, int):
        return Markup(f'<a href="{escape(Urls(datasette, database).image(image_id))}">{img}</a>')
    return Markup(img)


def _row_value(row: Any, key: str) -> Any:
    try:
        return row[key]
    except (KeyError, IndexError, TypeError):
        return None


# -- links ---------------------------------------------------------------------------------


async def menu_links(datasette: Any, actor: Any) -> list[dict[str, str]]:
    """One "Image search" menu item per semsearch database the actor may view."""
    return [
        {"href": Urls(datasette, name).search(), "label": f"Image search: {name}"}
        for name in await semsearch_databases(datasette, actor)
    ]


async def database_actions(datasette: Any, actor: Any, database: str) -> list[dict[str, str]]:
    """The database page's "Semantic image search" action."""
    db = datasette.databases.get(database)
    if db is None or not await _is_semsearch(db) or not (await _visibility(datasette, actor, database))[0]:
        return []
    urls = Urls(datasette, database)
    return [
        {"href": urls.search(), "label": "Semantic image search",
         "description": "Find images by words, by example or by upload."},
        {"href": urls.words(), "label": "Nearest words"},
    ]


ROUTES = [
    (r"^/(?P<database>[^/]+)/-/semsearch$", search_page),
    (r"^/(?P<database>[^/]+)/-/semsearch/words$", words_page),
    (r"^/(?P<database>[^/]+)/-/semsearch/upload$", upload_page),
    (r"^/(?P<database>[^/]+)/-/semsearch/image/(?P<id>[0-9]{1,20})$", image_page),
    (r"^/(?P<database>[^/]+)/-/semsearch/thumb/(?P<id>[0-9]{1,20})\.jpg$", thumb_route),
    (r"^/(?P<database>[^/]+)/-/semsearch/display/(?P<id>[0-9]{1,20})$", display_route),
    # Anything else under /-/semsearch/ (a non-integer id...) is a clean 404 raised by a
    # view: Datasette 0.65's handler for unmatched URLs crashes when `rich` is installed.
    (r"^/(?P<database>[^/]+)/-/semsearch/.*$", not_found),
]
