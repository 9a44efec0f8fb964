"""Datasette 0.65 / 1.0a differences: permission checks, and a guard for Datasette's
default exception handler.

Permissions: 1.0a has ``datasette.allowed`` with resource objects; 0.65 has
``permission_allowed`` and ``check_visibility(permissions=[...])``. Every page of the
plugin calls :func:`resolve`, so all of them check the same thing: may the actor view
the ``images`` table of the database in the URL; a page that shows rows of another
table checks that one too (:func:`may_view_table`) and leaves out what is denied.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

from datasette import Forbidden, NotFound, Response
from datasette.utils import add_cors_headers, await_me_maybe, tilde_decode

from .databases import is_semsearch, skipped_because

# where Datasette's own (trylast) handle_exception implementation lives
DEFAULT_HANDLER_MODULE = "datasette.handle_exception"


async def visibility(datasette: Any, actor: Any, database: str, table: str = "images") -> tuple[bool, bool]:
    """(visible, private) of ``table`` (the ``images`` table unless told) of ``database``
    for ``actor``.

    Datasette 1.0a: ``allowed``/``check_visibility`` with resource objects, which cascade
    from instance to database to table. 0.65: the ``permissions=`` list that its own
    table page checks (table, then database, then instance).
    """
    if hasattr(datasette, "allowed"):
        from datasette.resources import TableResource

        return await datasette.check_visibility(
            actor, action="view-table", resource=TableResource(database=database, table=table)
        )
    return await datasette.check_visibility(
        actor,
        permissions=[("view-table", (database, table)), ("view-database", database), "view-instance"],
    )


async def may_view_table(datasette: Any, request: Any, database: str, table: str) -> bool:
    """Whether the request's actor may view ``table``: every page checks each table it
    shows rows of (``image_files`` for display copies, ``tags``, ``evaluations``), as
    Datasette's own table page would."""
    return (await visibility(datasette, request.actor, database, table))[0]


async def can_execute_sql(datasette: Any, actor: Any, database: str) -> bool:
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
        if name == "_internal" or not await is_semsearch(db) or await skipped_because(db):
            continue
        if (await visibility(datasette, actor, name))[0]:
            names.append(name)
    return names


async def can_view(datasette: Any, actor: Any, database: str) -> bool:
    """Whether ``database`` holds a store whose pages ``actor`` may see (for links)."""
    db = datasette.databases.get(database)
    return (db is not None and await is_semsearch(db) and not await skipped_because(db)
            and (await visibility(datasette, actor, database))[0])


async def resolve(datasette: Any, request: Any) -> tuple[Any, bool]:
    """The database of the URL, after the permission check: (db, private)."""
    route = tilde_decode(request.url_vars["database"])
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise NotFound("Database not found")
    visible, private = await visibility(datasette, request.actor, db.name)
    if not visible:
        raise Forbidden("You do not have permission to view this database")
    if not await is_semsearch(db):
        raise NotFound("This database holds no semsearch-sqlite store")
    problem = await skipped_because(db)
    if problem:
        raise NotFound(f"Skipped: {problem}")
    return db, private


# -- Datasette's default exception handler -------------------------------------------------


def quiet_not_found(results: list[Any], datasette: Any, request: Any, exception: BaseException) -> list[Any]:
    """``handle_exception`` results with, for a 404 anywhere on the server, Datasette's
    default handler swapped for :func:`not_found`: the same error page without its
    ``rich`` traceback (``show_locals``), which costs 0.4-0.9 s and ~100 log lines per
    mistyped URL. Other plugins' answers, and every other error, are left as they are."""
    if not isinstance(exception, NotFound):
        return results
    return [
        not_found(datasette, request, exception) if getattr(r, "__module__", None) == DEFAULT_HANDLER_MODULE else r
        for r in results
    ]


def not_found(datasette: Any, request: Any, exception: BaseException) -> Any:
    """Datasette's 404 page (JSON for ``.json`` URLs), as its default handler renders it."""

    async def inner() -> Response:
        message = exception.args[0] if exception.args else "Not found"
        info = {"ok": False, "error": message, "status": 404, "title": None}
        headers: dict[str, str] = {}
        if getattr(datasette, "cors", False):
            add_cors_headers(headers)
        if request is not None and request.path.split("?")[0].endswith(".json"):
            return Response.json(info, status=404, headers=headers)
        html = await datasette.render_template(["404.html", "error.html"], info, request=request)
        return Response.html(html, status=404, headers=headers)

    return inner


def guard_exception_handlers(results: list[Any], exception: BaseException) -> list[Any]:
    """``handle_exception`` results made safe to await outside an ``except`` block.

    Datasette (0.65.5 and 1.0a41 alike) answers a URL that no route matches by calling
    its exception handler with a ``NotFound("404")`` that was never raised. The default
    handler then calls ``rich.get_console().print_exception()`` (when ``rich`` is
    installed; Keras pulls it in), which needs an exception being handled, and raises
    ``ValueError`` instead of rendering the 404 page: a 500, or a dropped connection.
    ``pdb.post_mortem`` (``--pdb``) fails the same way.

    When no exception is being handled, Datasette's default handler (and only it) is run
    inside ``except`` for ``exception``, as it is for every other error; its response,
    and any other plugin's, are unchanged.
    """
    if sys.exc_info()[1] is not None:
        return results  # the normal case: Datasette is inside an except block
    return [
        partial(_handling, exception, r) if getattr(r, "__module__", None) == DEFAULT_HANDLER_MODULE else r
        for r in results
    ]


async def _handling(exception: BaseException, result: Any) -> Any:
    try:
        raise exception
    except BaseException:
        return await await_me_maybe(result)
