"""What every page of the plugin shares: its URLs, request parameters, paging, the
thumbnail grid's cards, unknown-word suggestions, and rendering a template with the
common context."""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasette import Response
from datasette.utils.asgi import BadRequest

from semsearch_sqlite.errors import QueryError, SemsearchError, UnknownWordsError
from semsearch_sqlite.queries import hints, limits, search
from semsearch_sqlite.queries.search import MAX_K
from semsearch_sqlite.storage import rows

from .config import Settings, settings

PLUGIN = "semsearch-sqlite"  # the distribution name: Datasette serves static files under it
DEFAULT_K = Settings.per_page
MAX_PAGE_K = Settings.max_k
EAGER_IMAGES = 24  # the first thumbnails of a grid load at once, the rest lazily


def page_k(raw: Any, default: int = DEFAULT_K, maximum: int = MAX_PAGE_K) -> int:
    """``k`` from a query string or form by the one rule every face follows
    (:func:`~semsearch_sqlite.queries.limits.result_count`): empty gives ``default``, more
    than ``maximum`` gives ``maximum``, and 0, -3 or "abc" is a 400 that says so.

    The pages pass the database's configured ``per_page`` and ``max_k`` (see :mod:`.config`).
    """
    try:
        return limits.result_count(raw, default, maximum)
    except QueryError as e:
        raise BadRequest(f"{e}: k is how many results to show, from 1 to {maximum}") from None


def request_k(datasette: Any, database: str, raw: Any, default: int | None = None) -> int:
    """:func:`page_k` with ``database``'s settings: ``default`` (else ``per_page``), at most ``max_k``."""
    found = settings(datasette, database)
    return page_k(raw, found.per_page if default is None else default, found.max_k)


# the request arguments a download keeps from the page it is on (not page or k: it has every result)
EXPORT_ARGS = ("q", "label", "taken_from", "taken_to", "near", "like", "unlike", "focus", "threshold")


class Urls:
    """The plugin's URLs for one database (``base_url``-safe)."""

    def __init__(self, datasette: Any, database: str):
        self.datasette = datasette
        self.database = database
        self.base = datasette.urls.database(database) + "/-/semsearch"

    def search(self, q: str | None = None, k: int | None = None, page: int | None = None) -> str:
        return self.base + _query({"q": q, "k": k, "page": page if page != 1 else None})

    def words(self, q: str | None = None) -> str:
        return self.base + "/words" + _query({"q": q})

    def upload(self) -> str:
        return self.base + "/upload"

    def report(self) -> str:
        return self.base + "/report"

    def image(self, image_id: int, focus: str | None = None, **pages: Any) -> str:
        """An image page; ``pages`` are its sections' page numbers (``visual_page=2``)."""
        kept = {name: n for name, n in pages.items() if not (name.endswith("_page") and n == 1)}
        return f"{self.base}/image/{int(image_id)}" + _query({"focus": focus, **kept})

    def duplicates(self, page: int | None = None, threshold: Any = None, k: int | None = None) -> str:
        return self.base + "/duplicates" + _query({"threshold": threshold, "k": k, "page": page if page != 1 else None})

    def export(self, fmt: str, args: Any = None, **params: Any) -> str:
        """A download (``fmt``: csv or json) of every result of the list that ``args`` (a
        page's request arguments) and ``params`` (``of="visual"``, ``image=12``) describe."""
        kept = {name: args.get(name) for name in EXPORT_ARGS} if args is not None else {}
        return f"{self.base}/export.{fmt}" + _query({**kept, **params})

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


def page_number(raw: Any) -> int:
    """``page`` from a query string: a whole number from 1 (anything else: 1)."""
    try:
        return max(1, int(str(raw).strip()))
    except (TypeError, ValueError):
        return 1


@dataclass(frozen=True)
class Paging:
    """One page of a ranking: results ``first``..``last`` of ``total``."""

    page: int
    per_page: int
    total: int

    @classmethod
    def of(cls, page: int, per_page: int, total: int) -> Paging:
        """``page`` clamped to the pages that exist (the last one past the end)."""
        total = max(0, min(total, MAX_K))
        pages = max(1, -(-total // per_page))
        return cls(max(1, min(page, pages)), per_page, total)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def k(self) -> int:
        """How many results to ask the library for: this page and every one before it."""
        return min(self.page * self.per_page, MAX_K)

    @property
    def first(self) -> int:
        return min((self.page - 1) * self.per_page + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.page * self.per_page, self.total)

    @property
    def previous(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None

    def slice(self, hits: list[Any]) -> list[Any]:
        return hits[(self.page - 1) * self.per_page : self.page * self.per_page]


def card(
    row: rows.ImageRow, *, rank: int, distance: float | None = None, match: Any = None, score: float | None = None
) -> dict[str, Any]:
    """What a thumbnail grid shows of one image; ``match`` is a hit's strong/weak cue and
    ``score`` its confidence (0..1), shown instead of the distance, if any."""
    return {
        "image_id": row.id,
        "path": row.path,
        "name": row.name,
        "label": row.label,
        "distance": distance,
        "rank": rank,
        "width": row.thumb_width,
        "height": row.thumb_height,
        "match": match,
        "score": None if score is None else round(100 * score),
        "alt": alt_text(row.label, row.name),
    }


def alt_text(label: str | None, name: str) -> str:
    """What a screen reader says for a thumbnail: its label and file name."""
    return f"{label}, {name}" if label else name


def cards(conn: sqlite3.Connection, hits: list[Any]) -> list[dict[str, Any]]:
    """Image hits plus what a thumbnail grid shows (file name, thumbnail size)."""
    found = rows.image_rows(conn, [h.image_id for h in hits])
    out = []
    for h in hits:
        row = found.get(h.image_id) or rows.ImageRow(h.image_id, h.path, h.label)
        out.append(
            card(
                rows.ImageRow(h.image_id, h.path, h.label, row.thumb_width, row.thumb_height),
                rank=h.rank,
                distance=h.distance,
                match=getattr(h, "match", None),
                score=getattr(h, "score", None),
            )
        )
    return out


# advice in a library message that only a command line can act on: an option, the
# command itself, a re-run; and SQL to type (the pages link to the SQL page themselves)
_COMMAND_ADVICE = re.compile(r"--[a-z]|semsearch-sqlite\b|\bre-?run\b|\bingest\b|\btrain\b")
_SQL_ADVICE = re.compile(r"\bselect\b.+\bfrom\b", re.IGNORECASE)
MAINTAINER = "whoever maintains this database can update it with the semsearch-sqlite command"


def web_message(error: Any) -> str:
    """A library error as a page says it: the fault, without the command-line advice
    (options, commands, SQL to type) the same error carries in the CLI; where that advice
    was the fix, who can apply it."""
    text = re.sub(r"^--[a-z-]+ ", "", str(error))
    head, *advice = text.split("; ")
    kept = [a for a in advice if not (_COMMAND_ADVICE.search(a) or _SQL_ADVICE.search(a))]
    dropped_command = any(_COMMAND_ADVICE.search(a) for a in advice)
    out = "; ".join([head, *kept])
    return out + (f" ({MAINTAINER})" if dropped_command else "")


def section(
    fn: Callable[[], Any], conn: sqlite3.Connection | None = None, q: str | None = None, suggest: bool = True
) -> dict[str, Any]:
    """Run one query of a page; a SemsearchError becomes the section's error message.

    With ``conn``, a query of unknown words gets ``unknown_words`` and ``suggestions``
    (the known words spelt like them, unless ``suggest`` is false: the actor may not view
    the word tables) instead of the library's command-line advice.
    """
    try:
        res = fn()
    except UnknownWordsError as e:
        if conn is None:
            return {"error": web_message(e)}
        near = suggestions(conn, e.words, q) if suggest else []
        return {"error": "unknown", "unknown_words": e.words, "suggestions": near}
    except SemsearchError as e:
        return {"error": web_message(e)}
    return {"results": res}


def suggestions(conn: sqlite3.Connection, words: list[str], q: str | None) -> list[dict[str, Any]]:
    """For each unknown word: the known words spelt like it, each with the query it makes."""
    out = []
    for word in words:
        try:
            near = hints.suggest_words(conn, word)
        except SemsearchError:
            near = []
        out.append({"word": word, "near": [{"word": w, "q": replace_word(q or word, word, w)} for w in near]})
    return out


def replace_word(q: str, word: str, new: str) -> str:
    """``q`` with the whole word ``word`` (any case) replaced by ``new``."""
    pattern = r"(?<![\w])" + re.escape(word) + r"(?![\w])"
    replaced = re.sub(pattern, lambda _: new, q, flags=re.IGNORECASE)
    return replaced if replaced != q else new


def image_results(
    conn: sqlite3.Connection,
    fn: Callable[[], search.Results],
    paging: Paging | None = None,
    q: str | None = None,
    suggest: bool = True,
) -> dict[str, Any]:
    """:func:`section` for a query returning images: their ``cards``, unknown words, note.

    With ``paging``, ``fn`` was asked for ``paging.k`` results and this page's slice is
    kept (so page 2 continues exactly where page 1 stopped). ``suggest``: as for
    :func:`section`.
    """
    out = section(fn, conn, q, suggest)
    if "results" in out:
        res = out["results"]
        hits = paging.slice(res.hits) if paging is not None else res.hits
        out = {
            "cards": cards(conn, hits),
            "unknown": res.unknown,
            "note": res.note,
            "paging": paging,
            "suggestions": suggestions(conn, res.unknown, q) if res.unknown and suggest else [],
            "strong": getattr(res, "strong", None),
        }
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
