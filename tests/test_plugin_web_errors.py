"""Errors on the plugin's pages speak web: one clear 400 for the same mistake whatever
its spelling (``like=abc`` as ``like=-1``), no command-line advice.

Runs on Datasette 0.65 and 1.0a; the database is the real ingest pipeline's output
(``plugin_photos`` in conftest.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from datasette.app import Datasette
from markupsafe import escape

CARD = 'class="semsearch-card"'


async def get(ds: Datasette, path: str) -> Any:
    await ds.invoke_startup()
    return await ds.client.get(path, follow_redirects=True)


@pytest.fixture
def ds(plugin_photos: dict[str, Any]) -> Datasette:
    return Datasette([plugin_photos["db"]])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "param, wrong",
    [
        ("like=abc", "abc"),
        ("like=-1", "-1"),
        ("like=999999", "999999"),
        ("unlike=abc", "abc"),
        ("like=1,x", "x"),
        ("like=99999999999999999999", "99999999999999999999"),
    ],
)
async def test_feedback_ids_that_name_no_image_are_one_clear_400(ds: Datasette, param: str, wrong: str) -> None:
    r = await get(ds, f"/photos/-/semsearch?q=cat&k=3&{param}")
    assert r.status_code == 400 and CARD not in r.text
    message = f"like and unlike take ids of images in this database, such as 12,15; {wrong!r} is not one."
    assert str(escape(message)) in r.text
    assert "select id, path from images" not in r.text  # SQL advice is for the SQL functions


@pytest.mark.asyncio
async def test_feedback_ids_of_stored_images_still_refine(ds: Datasette) -> None:
    r = await get(ds, "/photos/-/semsearch?q=cat&k=3&like=1&unlike=2")
    assert r.status_code == 200 and r.text.count(CARD) == 3
    assert not re.search(r"is not one\.", r.text)
