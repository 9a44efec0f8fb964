"""Datasette plugin of semsearch-sqlite: SQL functions, search pages and stored images.

``datasette photos.db`` then gives ``select * from similar_images('cat sofa')`` in SQL,
and ``/photos/-/semsearch`` (search), ``.../image/<id>``, ``.../words``, ``.../upload``,
``.../report``, ``.../duplicates`` and ``.../export.csv`` (:mod:`.review`). Hook
implementations and the URL table only; the work is in :mod:`.views` (pages),
:mod:`.upload`, :mod:`.report`, :mod:`.media` (image bytes, cells), :mod:`.databases`
(connections, hidden tables) and :mod:`.compat` (permissions on Datasette 0.65 and 1.0a).

Hooks used: only Datasette's documented plugin hooks, each answering for the plugin's
own pages, SQL functions, cells and links; no core template is overridden and no other
handler is wrapped. The one server-wide setting is :func:`.compat.plain_error_log`.
"""

from __future__ import annotations

import re

from datasette import hookimpl

from . import compat, databases, media, report, review, upload, views

DATABASE = r"^/(?P<database>[^/]+)/-/semsearch"
UPLOAD_ROUTE = DATABASE + r"/upload$"
ROUTES = [
    (DATABASE + r"$", views.search_page),
    (DATABASE + r"/words$", views.words_page),
    (UPLOAD_ROUTE, upload.upload_page),
    (DATABASE + r"/report$", report.report_page),
    (DATABASE + r"/duplicates$", review.duplicates_page),
    (DATABASE + r"/export\.(?P<format>csv|json)$", review.export_route),
    (DATABASE + r"/image/(?P<id>[0-9]{1,20})$", views.image_page),
    (DATABASE + r"/thumb/(?P<id>[0-9]{1,20})\.jpg$", media.thumb_route),
    (DATABASE + r"/display/(?P<id>[0-9]{1,20})$", media.display_route),
    # Anything else under /-/semsearch/ (a non-integer id...) is a clean 404 raised by a view.
    (DATABASE + r"/.*$", views.not_found),
]


@hookimpl
def prepare_connection(conn, database, datasette):
    databases.prepare(conn, database, datasette)


@hookimpl
def startup(datasette):
    compat.plain_error_log()  # the one server-wide setting: see its docstring

    async def inner():
        await databases.startup(datasette)

    return inner


@hookimpl
def register_routes():
    return ROUTES


@hookimpl
def render_cell(value, column, table, row, database, datasette):
    return media.render_cell(value, column, table, row, database, datasette)


@hookimpl
def menu_links(datasette, actor):
    async def inner():
        return await views.menu_links(datasette, actor)

    return inner


@hookimpl
def database_actions(datasette, actor, database):
    async def inner():
        return await views.database_actions(datasette, actor, database)

    return inner


@hookimpl
def top_database(datasette, request, database):
    # Datasette 1.0a: a visible "Image search" link atop the database page (0.65 has no
    # such hook: there the link is in the database actions and the navigation menu)
    async def inner():
        return await views.database_top(datasette, request.actor if request else None, database)

    return inner


@hookimpl
def get_metadata(datasette, database):
    # Datasette 0.65 only: hide vec0 shadow tables (on 1.0a, startup marks them in its config)
    return databases.hidden_tables_metadata(datasette, database)


@hookimpl
def skip_csrf(datasette, scope):
    # Datasette 0.65 only: the upload view checks the multipart form's token itself
    return upload.skip_csrf(datasette, scope, re.compile(UPLOAD_ROUTE))
