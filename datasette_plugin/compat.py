"""Datasette 0.65 / 1.0a differences (permission checks), and the plugin's one setting of
Datasette's error log (:func:`plain_error_log`).

Permissions: 1.0a has ``datasette.allowed`` with resource objects; 0.65 has
``permission_allowed`` and ``check_visibility(permissions=[...])``. Every page of the
plugin calls :func:`resolve`, so all of them check the same thing: may the actor view
the ``images`` table of the database in the URL; a page that shows rows of another
table checks that one too (:func:`may_view_table`) and leaves out what is denied.
"""

from __future__ import annotations

from typing import Any

from datasette import Forbidden, NotFound
from datasette.utils import tilde_decode

from .databases import is_semsearch, skipped_because

# what word lists (nearest words, "Did you mean", tags) are read from
WORD_TABLES = ("words", "vec_words", "word_lookup")
# what a new image's tags are read from besides: its neighbours' classes
CLASS_TABLES = ("image_classes",)


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


async def may_view_tables(datasette: Any, request: Any, database: str, tables: tuple[str, ...]) -> bool:
    """Whether the request's actor may view every one of ``tables`` (a page shows what it
    read from them only then)."""
    for table in tables:
        if not await may_view_table(datasette, request, database, table):
            return False
    return True


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
    return (
        db is not None
        and await is_semsearch(db)
        and not await skipped_because(db)
        and (await visibility(datasette, actor, database))[0]
    )


async def resolve(datasette: Any, request: Any) -> tuple[Any, bool]:
    """The database of the URL, after the permission check: (db, private)."""
    route = tilde_decode(request.url_vars["database"])
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise NotFound("Database not found") from None
    visible, private = await visibility(datasette, request.actor, db.name)
    if not visible:
        raise Forbidden("You do not have permission to view this database")
    if not await is_semsearch(db):
        raise NotFound("This database holds no semsearch-sqlite store")
    problem = await skipped_because(db)
    if problem:
        raise NotFound(f"Skipped: {problem}")
    return db, private


# -- Datasette's error log -----------------------------------------------------------------


def plain_error_log() -> None:
    """Have Datasette's default error handler log errors as it does without ``rich``.

    That handler pretty-prints every error it answers, 400s and 404s included, with
    ``rich`` and ``show_locals`` when ``rich`` can be imported (Keras installs it): ~0.5 s
    of rendering on the event loop and ~100 log lines per ``/db.json?sql=pragma foo``, so
    a few clients sending bad SQL stall every page. For a URL no route matches it calls
    ``print_exception`` outside an ``except`` block, which raises instead of answering 404.

    This is the one place the plugin touches server-wide error handling: Datasette's
    handler reads ``rich`` from its module's optional import (``rich = None`` when not
    installed), and that is set to None, the install Datasette supports without rich. Its
    pages are unchanged; a 500 is still logged by ``traceback.print_exc()``; other
    plugins' ``handle_exception`` hooks are untouched.
    """
    from datasette import handle_exception

    if getattr(handle_exception, "rich", None) is not None:
        handle_exception.rich = None
