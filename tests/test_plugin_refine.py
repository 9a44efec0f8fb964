"""The pages' refinements: label filter and more/less like this on the search page,
near-duplicates on the image page."""

from __future__ import annotations

import re
import sqlite3
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from datasette.app import Datasette

from semsearch_sqlite.queries.search import similar_images
from semsearch_sqlite.storage.store import connect

pytestmark = pytest.mark.asyncio


@pytest.fixture
def ds(plugin_photos: dict[str, Any]) -> Datasette:
    return Datasette([plugin_photos["db"]])


async def get(ds: Datasette, path: str) -> Any:
    await ds.invoke_startup()
    return await ds.client.get(path, follow_redirects=True)


def card_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<a href="/photos/-/semsearch/image/(\d+)" title=', html)]


def labels(db: str) -> dict[int, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select id, label from images"))


async def test_label_filter_on_the_search_page(ds: Datasette, plugin_photos: dict[str, Any]) -> None:
    r = await get(ds, "/photos/-/semsearch?q=cat&k=3&label=car&all=1")
    assert r.status_code == 200
    ids = card_ids(r.text)
    assert len(ids) == 3 and {labels(plugin_photos["db"])[i] for i in ids} == {"car"}
    assert '<option value="car" selected>car</option>' in r.text
    conn = connect(plugin_photos["db"], readonly=True)
    try:
        assert ids == [h.image_id for h in similar_images(conn, "cat", 3, where="label = 'car'").hits]
    finally:
        conn.close()


async def test_more_and_less_like_this_links_refine_the_query(ds: Datasette, plugin_photos: dict[str, Any]) -> None:
    r = await get(ds, "/photos/-/semsearch?q=cat&k=4&all=1")
    first = card_ids(r.text)[0]
    more = re.findall(r'<a href="([^"]+)" class="semsearch-more"', r.text)
    less = re.findall(r'<a href="([^"]+)" class="semsearch-less"', r.text)
    assert len(more) == len(less) == 4
    less_url = less[0].replace("&amp;", "&")
    assert parse_qs(urlparse(less_url).query)["unlike"] == [str(first)]
    r = await get(ds, less_url)
    assert r.status_code == 200 and first not in card_ids(r.text)
    assert "refined by 0 liked, 1 disliked" in r.text
    conn = connect(plugin_photos["db"], readonly=True)
    try:
        assert card_ids(r.text) == [h.image_id for h in similar_images(conn, "cat", 4, unlike=[first]).hits]
    finally:
        conn.close()


async def test_image_page_shows_near_duplicates(
    ds: Datasette, plugin_photos: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = connect(plugin_photos["db"], readonly=True)
    try:
        from semsearch_sqlite.queries.duplicates import duplicates_of

        image_id = conn.execute("select min(id) from images").fetchone()[0]
        want = [h.image_id for h in duplicates_of(conn, image_id, 1.0).hits]
    finally:
        conn.close()
    from semsearch_sqlite.queries import duplicates

    monkeypatch.setattr(duplicates, "DEFAULT_THRESHOLD", 1.0)  # every neighbour counts: the section shows them
    r = await get(ds, f"/photos/-/semsearch/image/{image_id}")
    assert r.status_code == 200
    part = r.text.split('id="duplicates"')[1].split("<h2")[0]
    assert card_ids(part) == want and want


async def test_date_filter_and_bad_values(ds: Datasette) -> None:
    # the drawn PNGs have no EXIF dates: a date filter leaves nothing, a malformed one is ignored
    r = await get(ds, "/photos/-/semsearch?q=cat&k=3&taken_from=2020")
    assert r.status_code == 200 and card_ids(r.text) == [] and "No images found." in r.text
    assert "no photo here has a date" in r.text  # why
    assert 'name="taken_from" value="2020"' in r.text and "clear filters and feedback" in r.text
    r = await get(ds, "/photos/-/semsearch?q=cat&k=3&taken_from=yesterday")  # like=x: a 400 (test_plugin_web_errors)
    assert r.status_code == 200 and len(card_ids(r.text)) == 3
    assert 'name="taken_from"' not in r.text  # no photo here is dated: no date fields to fill in
