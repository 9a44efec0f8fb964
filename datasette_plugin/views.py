"""The search, image and words pages, and the plugin's menu and database-action links.

Every query is a call into :mod:`semsearch_sqlite.queries.search`; a page only checks
permissions (:func:`~datasette_plugin.compat.resolve`), reads request parameters and
renders a template. The upload page is in :mod:`.upload`, the report in :mod:`.report`,
image bytes in :mod:`.media`.
"""

from __future__ import annotations

import sqlite3
import weakref
from dataclasses import dataclass
from typing import Any

from datasette import Forbidden, NotFound, Response
from markupsafe import escape

from semsearch_sqlite.errors import SemsearchError
from semsearch_sqlite.queries import hints, search
from semsearch_sqlite.queries.duplicates import duplicates_of
from semsearch_sqlite.queries.sqlfuncs import EXAMPLE_SQL
from semsearch_sqlite.storage import rows

from . import media, refine
from .compat import (
    WORD_TABLES,
    can_execute_sql,
    can_view,
    may_view_table,
    may_view_tables,
    resolve,
    semsearch_databases,
    visibility,
)
from .config import settings
from .render import Paging, Urls, image_results, page_number, render, request_k, section

TAGS_SHOWN = 10
FOCUS_LINKS = 5
# the image page's paged sections: name -> (query-string parameter, space)
IMAGE_SECTIONS = {
    "visual": ("visual_page", "visual"),
    "semantic": ("semantic_page", "semantic"),
    "focused": ("focus_page", "visual"),
}


def _total(
    conn: sqlite3.Connection, space: str, exclude_self: bool = False, filters: Any = (), left_out: int = 0
) -> int:
    try:
        return search.ranked_count(conn, space, exclude_self=exclude_self, filters=filters, left_out=left_out)
    except SemsearchError:  # no vectors yet: the query itself reports it
        return 0


# a text search's located hits: the columns datasette-cluster-map looks for
LOCATED_SQL = (
    "select rank, image_id, path, label, match, taken_at, latitude, longitude "
    "from similar_images(:q, :k) where latitude >= -90"
)
CLUSTER_MAP = "datasette-cluster-map"


# plugins are fixed for a server's life; listing them costs ~7 ms, so once per server
_installed: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def has_plugin(datasette: Any, name: str) -> bool:
    """Whether the Datasette plugin ``name`` (its distribution name) is installed."""
    names = _installed.get(datasette)
    if names is None:
        try:
            names = frozenset(str(p.get("name")) for p in datasette._plugins())
        except Exception:  # noqa: BLE001 - a private method: without it, say nothing of a map
            names = frozenset()
        _installed[datasette] = names
    return name in names


# the strong view ranks this many hits (at most the database's max_k) and shows the strong ones
STRONG_WINDOW = 200


@dataclass(frozen=True)
class _SearchAsk:
    """What a search page asks for, as read from its URL."""

    q: str
    k: int
    page: int
    show_all: bool
    window: int  # the most hits one search may rank
    refinement: refine.Refinement
    urls: Urls
    suggest: bool  # may "Did you mean" read the word tables


def _search_data(conn: sqlite3.Connection, ask: _SearchAsk) -> dict[str, Any]:
    """The search page's data, read on a database thread: the filter form, the results
    section (strong matches, or every image with ``all=1``) or where to start."""
    refinement = ask.refinement
    out: dict[str, Any] = {"form": refine.form_context(conn), "section": {}}
    if not ask.q:
        out["start"] = hints.starting_points(conn)
        return out
    problem = refinement.problem(conn)  # like=abc as like=-1: one clear 400
    if problem:
        out["section"] = {"error": problem}
        return out
    filters = refinement.filters()
    total = _total(conn, "semantic", filters=filters, left_out=len(refinement.unlike))
    if filters and not total:  # say why, rather than "No results" twice
        out["section"] = {"cards": [], "strong": 0, "filtered_out": refinement.describe(out["form"])}
        return out
    paging = Paging.of(ask.page, ask.k, total) if ask.show_all else None
    found = image_results(
        conn,
        lambda: search.similar_images(
            conn,
            ask.q,
            paging.k if paging else min(STRONG_WINDOW, ask.window, max(total, 1)),
            allow_unknown=True,
            filters=filters,
            like=refinement.like,
            unlike=refinement.unlike,
        ),
        paging,
        q=ask.q,
        suggest=ask.suggest,
    )
    if not ask.show_all and "cards" in found:
        strong_only(found, ask.page, ask.k, total)
    elif not found.get("strong"):
        found["note"] = None  # the summary says "no close match" (a warning, not an info box)
    refine.add_feedback_links(ask.urls, ask.q, ask.k, refinement, found.get("cards") or [])
    if found.get("error") == "unknown":  # somewhere to go from here
        out["start"] = hints.starting_points(conn)
    out["section"] = found
    return out


def _sql_links(ask: _SearchAsk, may_sql: bool, located: Any) -> tuple[str | None, str | None]:
    """The search as SQL, and its located results as SQL rows with latitude/longitude
    (which datasette-cluster-map draws), for whoever may run SQL."""
    refinement, urls = ask.refinement, ask.urls
    if not may_sql:
        return None, None
    if refinement.like or refinement.unlike:
        sql_url = urls.sql(
            EXAMPLE_SQL["similar_images_feedback"],
            q=ask.q,
            k=ask.k,
            like=",".join(map(str, refinement.like)),
            unlike=",".join(map(str, refinement.unlike)),
        )
        return sql_url, None
    sql_url = urls.sql(EXAMPLE_SQL["similar_images"], q=ask.q, k=ask.k)
    map_url = urls.sql(LOCATED_SQL, q=ask.q, k=min(STRONG_WINDOW, ask.window)) if located else None
    return sql_url, map_url


async def search_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch?q=cat+sofa&page=2``: text -> images, a page at a time: the
    strong matches (``N strong matches``), or with ``all=1`` every image, nearest first."""
    db, _ = await resolve(datasette, request)
    q = (request.args.get("q") or "").strip()
    k = request_k(datasette, db.name, request.args.get("k"))
    page = page_number(request.args.get("page"))
    show_all = request.args.get("all") == "1"
    window = settings(datasette, db.name).max_k  # the most hits one search may rank
    refinement = refine.Refinement.from_args(request.args)
    urls = Urls(datasette, db.name)
    suggest = await may_view_tables(datasette, request, db.name, WORD_TABLES)  # "Did you mean"

    ask = _SearchAsk(q, k, page, show_all, window, refinement, urls, suggest)
    data = await db.execute_fn(lambda conn: _search_data(conn, ask))
    may_sql = bool(q) and await can_execute_sql(datasette, request.actor, db.name)
    sql_url, map_url = _sql_links(ask, may_sql, data["form"]["located"])
    found = data["section"]
    status = 400 if found.get("error") else 200
    k_param = k if request.args.get("k") else None  # kept in links only when asked for
    all_param = "&all=1" if show_all else ""
    return await render(
        datasette,
        request,
        "semsearch_search.html",
        db,
        {
            "q": q,
            "k": k,
            "k_param": k_param,
            "section": found,
            "start": data.get("start"),
            "form": data["form"],
            "refinement": refinement,
            "show_all": show_all,
            "all_url": refine.search_url(urls, q, k_param, refinement) + "&all=1",
            "strong_url": refine.search_url(urls, q, k_param, refinement),
            "reset_url": refine.search_url(urls, q, k, refine.Refinement()) if refinement.active() else None,
            "sql_url": sql_url,
            "map_url": map_url,
            "has_map": has_plugin(datasette, CLUSTER_MAP),
            "page": "search",
            "page_url": lambda n: refine.search_url(urls, q, k_param, refinement, page=n) + all_param,
        },
        status,
    )


def strong_only(found: dict[str, Any], page: int, per_page: int, total: int) -> None:
    """Keep a text search's strong matches (which come first), paged; ``more`` says how
    many weaker ones the ``all=1`` view adds. With none, the page says "no close match"
    itself (a warning, not the library's note)."""
    strong, ranked = found.get("strong") or 0, len(found["cards"])
    paging = Paging.of(page, per_page, strong)
    found["cards"] = paging.slice(found["cards"][:strong])
    found["paging"] = paging if strong else None
    found["more"] = max(0, total - strong)
    # every ranked hit strong, and images left unranked: there may be more ("200+")
    found["capped"] = strong == ranked < total
    if not strong:
        found["note"] = None


async def image_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/image/<id>[?focus=word][&visual_page=2]``: one image, its
    tags, its neighbours in both spaces (and by focus), each list paged."""
    db, _ = await resolve(datasette, request)
    image_id = media.image_id(request.url_vars["id"])
    focus = (request.args.get("focus") or "").strip() or None
    k = request_k(datasette, db.name, request.args.get("k"))
    pages = {name: page_number(request.args.get(param)) for name, (param, _) in IMAGE_SECTIONS.items()}
    # rows of other tables are left out when the actor may not view those tables
    show_display = await may_view_table(datasette, request, db.name, "image_files")
    show_tags = await may_view_tables(datasette, request, db.name, ("tags", *WORD_TABLES))

    def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
        detail = rows.image_detail(conn, image_id)
        if detail is None:
            return None
        if not show_display:
            detail.update(has_display=False, display_width=None, display_height=None)
        out: dict[str, Any] = {"image": detail, "metadata": rows.photo_metadata(conn, image_id)}
        out["duplicates"] = image_results(conn, lambda: duplicates_of(conn, image_id))
        out["tags"] = section(lambda: search.image_tags(conn, image_id, TAGS_SHOWN).hits) if show_tags else {}
        paging = {
            name: Paging.of(pages[name], k, _total(conn, space, exclude_self=True))
            for name, (_, space) in IMAGE_SECTIONS.items()
        }
        out["visual"] = image_results(
            conn, lambda: search.similar_to_image(conn, image_id, paging["visual"].k, "visual"), paging["visual"]
        )
        out["semantic"] = image_results(
            conn,
            lambda: search.similar_to_image(conn, image_id, paging["semantic"].k, "semantic"),
            paging["semantic"],
        )
        if focus:
            out["focused"] = image_results(
                conn,
                lambda: search.focused_search(conn, image_id, focus, paging["focused"].k),
                paging["focused"],
                q=focus,
            )
        return out

    data = await db.execute_fn(read)
    if data is None:
        raise NotFound("Image not found")
    urls = Urls(datasette, db.name)
    sql_urls = {}
    if await can_execute_sql(datasette, request.actor, db.name):
        sql_urls = {
            "tags": urls.sql(EXAMPLE_SQL["image_tags"], id=image_id) if show_tags else None,
            "visual": urls.sql(EXAMPLE_SQL["similar_to_image_visual"], id=image_id, k=k),
            "semantic": urls.sql(EXAMPLE_SQL["similar_to_image_semantic"], id=image_id, k=k),
        }
        if focus:
            sql_urls["focused"] = urls.sql(EXAMPLE_SQL["similar_images_focused"], id=image_id, focus=focus, k=k)
    tags = data["tags"].get("results") or []
    k_param = k if request.args.get("k") else None

    def page_url(name: str) -> Any:
        # a section's pages; the other sections go back to their first page
        return lambda n: urls.image(image_id, focus, k=k_param, **{IMAGE_SECTIONS[name][0]: n}) + f"#{name}"

    return await render(
        datasette,
        request,
        "semsearch_image.html",
        db,
        {
            **data,
            "focus": focus,
            "k": k,
            "focus_words": [t.word for t in tags[:FOCUS_LINKS]],
            "sql_urls": sql_urls,
            "page": "image",
            "page_url": page_url,
        },
    )


async def words_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/words?q=cat``: the nearest vocabulary words."""
    db, _ = await resolve(datasette, request)
    if not await may_view_tables(datasette, request, db.name, WORD_TABLES):
        raise Forbidden("You do not have permission to view the words tables of this database")
    q = (request.args.get("q") or "").strip()
    k = request_k(datasette, db.name, request.args.get("k"))
    found: dict[str, Any] = {}
    if q:
        found = await db.execute_fn(
            lambda conn: section(lambda: search.similar_words(conn, q, k, allow_unknown=True), conn, q)
        )
    sql_url = None
    if q and await can_execute_sql(datasette, request.actor, db.name):
        sql_url = Urls(datasette, db.name).sql(EXAMPLE_SQL["similar_words"], q=q, k=k)
    status = 400 if found.get("error") else 200
    return await render(
        datasette,
        request,
        "semsearch_words.html",
        db,
        {"q": q, "k": k, "section": found, "sql_url": sql_url, "page": "words"},
        status,
    )


async def not_found(datasette: Any, request: Any) -> Response:
    """Every other URL under ``/<db>/-/semsearch/``."""
    raise NotFound("No such semsearch page; image ids are whole numbers")


# -- links ---------------------------------------------------------------------------------


async def menu_links(datasette: Any, actor: Any) -> list[dict[str, str]]:
    """One "Image search" menu item per semsearch database the actor may view."""
    return [
        {"href": Urls(datasette, name).search(), "label": f"Image search: {name}"}
        for name in await semsearch_databases(datasette, actor)
    ]


async def database_actions(datasette: Any, actor: Any, database: str) -> list[dict[str, str]]:
    """The database page's "Semantic image search" actions."""
    if not await can_view(datasette, actor, database):
        return []
    urls = Urls(datasette, database)
    words = [(await visibility(datasette, actor, database, table))[0] for table in WORD_TABLES]
    return [
        {
            "href": urls.search(),
            "label": "Semantic image search",
            "description": "Find images by words, by example or by upload.",
        },
        *([{"href": urls.words(), "label": "Nearest words"}] if all(words) else []),
        {
            "href": urls.report(),
            "label": "Search quality report",
            "description": "How well search finds each label, from semsearch-sqlite evaluate.",
        },
    ]


async def database_top(datasette: Any, actor: Any, database: str) -> str | None:
    """``top_database`` (Datasette 1.0a): a visible "Image search" link atop the
    database page, where the actor may see the pages."""
    if not await can_view(datasette, actor, database):
        return None
    urls = Urls(datasette, database)
    return (
        '<p class="semsearch-database-link" style="font-size: 1.1em; margin: 0.6em 0 1em 0">'
        f'<a href="{escape(urls.search())}"><strong>Image search</strong></a>'
        " &mdash; find this database's images by words, by example or by upload"
        f' &middot; <a href="{escape(urls.report())}">search quality report</a></p>'
    )
