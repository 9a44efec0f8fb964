"""The plugin stays in its own rooms: documented hooks only, no wrapping of Datasette's or
other plugins' handlers, no core template overridden; errors Datasette answers are logged
without a (slow) rich traceback.

Runs on Datasette 0.65 and 1.0a; the database is the real ingest pipeline's output
(``plugin_photos`` in conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasette
import pytest
from datasette import Response, hookimpl
from datasette.app import Datasette
from datasette.plugins import pm

import datasette_plugin
from datasette_plugin import views

IS_1_0 = hasattr(Datasette, "allowed")


def make_ds(db: str, config: dict[str, Any] | None = None) -> Datasette:
    kwargs: dict[str, Any] = {}
    if config is not None:
        kwargs["config" if IS_1_0 else "metadata"] = config
    return Datasette([db], **kwargs)


async def get(ds: Datasette, path: str, **kwargs: Any) -> Any:
    await ds.invoke_startup()
    return await ds.client.get(path, follow_redirects=True, **kwargs)


@pytest.fixture
def db(plugin_photos: dict[str, Any]) -> str:
    return plugin_photos["db"]


def test_the_plugin_wraps_no_hook() -> None:
    plugin = pm.get_plugin(pm.get_name(datasette_plugin)) if pm.is_registered(datasette_plugin) else None
    assert plugin is datasette_plugin, "the plugin is registered through its entry point"
    impls = [
        impl
        for caller in pm.get_hookcallers(datasette_plugin)
        for impl in caller.get_hookimpls()
        if impl.plugin is datasette_plugin
    ]
    assert impls, "the plugin implements hooks"
    wrappers = [
        impl.function.__name__
        for impl in impls
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False)
    ]
    assert wrappers == []
    assert "handle_exception" not in {impl.function.__name__ for impl in impls}


def test_no_core_template_is_overridden() -> None:
    core = {p.name for p in (Path(datasette.__file__).parent / "templates").rglob("*.html")}
    ours = {p.name for p in (Path(datasette_plugin.__file__).parent / "templates").rglob("*.html")}
    assert ours and not (ours & core), sorted(ours & core)


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/photos.json?sql=pragma+foo", "/photos?sql=pragma+foo"])
async def test_invalid_sql_is_a_400_logged_without_a_traceback(
    db: str, path: str, capfd: pytest.CaptureFixture[str]
) -> None:
    ds = make_ds(db)
    r = await get(ds, path)
    assert r.status_code == 400
    if ".json" in path:
        assert r.json()["ok"] is False and r.json()["error"]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "locals" not in out + err, (out + err)[:500]


@pytest.mark.asyncio
async def test_a_server_error_is_still_logged_plainly(db: str, capfd: pytest.CaptureFixture[str]) -> None:
    class Broken:
        __name__ = "broken_route"

        @hookimpl
        def register_routes(self) -> list[Any]:
            async def boom() -> Response:
                raise RuntimeError("kaboom")

            return [(r"^/-/broken$", boom)]

    pm.register(Broken(), name="broken_route")
    try:
        ds = make_ds(db)
        r = await get(ds, "/-/broken")
    finally:
        pm.unregister(name="broken_route")
    assert r.status_code == 500
    _, err = capfd.readouterr()
    # Python's plain traceback (Datasette's traceback.print_exc), not rich's boxes and locals
    assert "Traceback (most recent call last)" in err and "RuntimeError: kaboom" in err
    assert "locals" not in err and "╭" not in err


@pytest.mark.asyncio
async def test_the_database_page_link_is_a_top_database_slot(db: str) -> None:
    ds = make_ds(db)
    await ds.invoke_startup()
    html = await views.database_top(ds, None, "photos")
    assert html is not None and '<a href="/photos/-/semsearch"><strong>Image search</strong></a>' in html
    private = make_ds(db, {"databases": {"photos": {"tables": {"images": {"allow": {"id": "root"}}}}}})
    await private.invoke_startup()
    assert await views.database_top(private, None, "photos") is None
    assert await views.database_top(private, {"id": "root"}, "photos") is not None
    page = (await get(ds, "/photos")).text
    assert ("semsearch-database-link" in page) is IS_1_0  # 0.65 has no top_database slot
    assert 'href="/photos/-/semsearch"' in page  # the database actions menu, on both
