"""Datasette plugin of semsearch-sqlite: SQL functions, search pages and stored images.

``datasette photos.db`` then gives ``select * from similar_images('cat sofa')`` in SQL,
and ``/photos/-/semsearch`` (search), ``.../image/<id>``, ``.../words`` and ``.../upload``.
Hook implementations only; the work is in :mod:`datasette_plugin.views`.
"""

from __future__ import annotations

from datasette import hookimpl

from . import views


@hookimpl
def prepare_connection(conn, database, datasette):
    views.prepare(conn, database, datasette)


@hookimpl
def startup(datasette):
    async def inner():
        await views.startup(datasette)

    return inner


@hookimpl
def register_routes():
    return views.ROUTES


@hookimpl
def render_cell(value, column, table, row, database, datasette):
    return views.render_thumbnail(value, column, table, row, database, datasette)


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
def get_metadata(datasette, database):
    # Datasette 0.65 only: hide vec0 shadow tables (on 1.0a, startup marks them in its config)
    return views.hidden_tables_metadata(datasette, database)


@hookimpl
def skip_csrf(scope):
    # Datasette 0.65 only: the upload view checks the multipart form's token itself
    return views.skip_csrf(scope)
