"""Pages for working through a library: ``/<db>/-/semsearch/duplicates`` (every group of
near-duplicates, paged, with the suggested keeper of each) and ``/<db>/-/semsearch/export.csv``
/ ``.json`` (every result of a search or image page's list, as a download).

The queries are the library's (:mod:`semsearch_sqlite.queries.duplicates`, the same
search functions as the pages); rows for the downloads come from
:mod:`semsearch_sqlite.queries.export`, as for ``--csv`` in the CLI.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from datasette import Response

from semsearch_sqlite.errors import QueryError, SemsearchError, UnknownWordsError
from semsearch_sqlite.queries import search
from semsearch_sqlite.queries.duplicates import DuplicateGroup, check_threshold, duplicate_review, human_size
from semsearch_sqlite.queries.export import MIME_TYPES, export_text, images_root
from semsearch_sqlite.queries.search import MAX_K
from semsearch_sqlite.storage import rows

from . import refine
from .compat import resolve
from .render import Paging, Urls, card, page_number, render, request_k, web_message

GROUPS_PER_PAGE = 10
# what a download can hold: the search page's results, an image page's sections, the duplicates
EXPORT_LISTS = ("search", "visual", "semantic", "focused", "duplicates")
KEEPER_RULE = (
    "the copy with the most pixels (an original rather than a downsized copy), "
    "then the largest file (the least recompressed), then the earliest date"
)


def _everything(conn: sqlite3.Connection, space: str, **kwargs: Any) -> int:
    """How many results a whole list has (the pages' pager total), at least 1."""
    try:
        total = search.ranked_count(conn, space, **kwargs)
    except SemsearchError:  # no vectors: the query itself says so
        total = 1
    return max(1, min(total, MAX_K))


def export_results(conn: sqlite3.Connection, of: str, args: Any) -> search.Results:
    """Every result of one page's list (``of``, see :data:`EXPORT_LISTS`), as that page
    asks for it (the same query function and request arguments)."""
    from semsearch_sqlite.queries.duplicates import duplicate_images

    if of == "search":
        q = (args.get("q") or "").strip()
        if not q:
            raise QueryError("give q, the words searched for, e.g. export.csv?q=cat")
        refinement = refine.Refinement.from_args(args)
        filters = refinement.filters()
        k = _everything(conn, "semantic", filters=filters, left_out=len(refinement.unlike))
        return search.similar_images(
            conn, q, k, allow_unknown=True, filters=filters, like=refinement.like, unlike=refinement.unlike
        )
    if of == "duplicates":
        return duplicate_images(conn, args.get("threshold") or None)
    image_id = search.resolve_image(conn, (args.get("image") or "").strip() or None)
    if of == "focused":
        focus = (args.get("focus") or "").strip()
        k = _everything(conn, "visual", exclude_self=True)
        return search.focused_search(conn, image_id, focus, k)
    return search.similar_to_image(conn, image_id, _everything(conn, of, exclude_self=True), of)


async def export_route(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/export.csv?q=cat`` (or ``.json``; ``of=visual&image=12`` for an
    image page's list): every result, with ``abs_path`` when the ingested folder is known."""
    db, _ = await resolve(datasette, request)
    fmt = request.url_vars["format"]
    of = request.args.get("of") or "search"
    if of not in EXPORT_LISTS:
        return Response.text(f"of must be one of {', '.join(EXPORT_LISTS)}, not {of!r}", status=400)

    def read(conn: sqlite3.Connection) -> tuple[int, str]:
        try:
            results = export_results(conn, of, request.args)
        except UnknownWordsError as e:
            return 400, f"no known words in the query: {', '.join(e.words)}"
        except SemsearchError as e:
            return 400, web_message(e)
        records = results.as_records(images_root(conn), conn)
        return 200, export_text(records, fmt, unknown=results.unknown, note=results.note)

    status, body = await db.execute_fn(read)
    if status != 200:
        return Response.text(body, status=status)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{db.name}-{of}.{fmt}")
    return Response(
        body,
        status=200,
        content_type=MIME_TYPES[fmt],
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def group_context(conn: sqlite3.Connection, group: DuplicateGroup) -> dict[str, Any]:
    """What the duplicates page shows of one group: a card per copy, keeper first."""
    found = rows.image_rows(conn, [h.image_id for h in group.hits])
    cards = []
    for h in group.hits:
        row = found.get(h.image_id) or rows.ImageRow(h.image_id, h.path, h.label)
        c = card(row, rank=h.rank, distance=None if h.keeper else h.distance)
        c.update(
            keeper=h.keeper,
            why=h.why,
            size=human_size(h.size),
            date=(h.date or "")[:10],
            resolution=f"{h.width}\u00d7{h.height}" if h.width and h.height else "",
        )
        cards.append(c)
    return {"number": group.number, "why": group.keeper.why, "cards": cards}


async def duplicates_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/duplicates[?page=2][&threshold=0.05][&k=groups per page]``: the
    library's groups of near-duplicates, biggest first, a page of groups at a time."""
    db, _ = await resolve(datasette, request)
    page = page_number(request.args.get("page"))
    per_page = request_k(datasette, db.name, request.args.get("k"), default=GROUPS_PER_PAGE)
    raw = (request.args.get("threshold") or "").strip() or None

    def read(conn: sqlite3.Connection) -> dict[str, Any]:
        try:
            threshold = check_threshold(raw)
            groups = duplicate_review(conn, threshold)
        except SemsearchError as e:
            return {"error": web_message(e), "threshold": raw}
        paging = Paging.of(page, per_page, len(groups))
        return {
            "groups": [group_context(conn, g) for g in paging.slice(groups)],
            "paging": paging,
            "threshold": threshold,
            "group_count": len(groups),
            "image_count": sum(len(g.hits) for g in groups),
        }

    data = await db.execute_fn(read)
    urls = Urls(datasette, db.name)
    threshold_param = raw if raw and "error" not in data else None
    k_param = per_page if request.args.get("k") else None  # kept in links only when asked for
    return await render(
        datasette,
        request,
        "semsearch_duplicates.html",
        db,
        {
            **data,
            "page": "duplicates",
            "keeper_rule": KEEPER_RULE,
            "threshold_param": threshold_param,
            "page_url": lambda n: urls.duplicates(n, threshold_param, k_param),
        },
        400 if data.get("error") else 200,
    )
