"""Filters where the data is (issue #26): the search page offers date fields only when
some photos are dated, a place filter and a map of results only when some are located;
datasette-cluster-map (installed as Datasette users have it) draws the located results;
the empty page opens on the library with examples from the collection's own kinds.

Real Datasette (``datasette.client``) over the real ingest pipeline's output; positions
are written into a private copy as ingest writes EXIF GPS (the drawn PNGs have none).
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from semsearch_sqlite.queries import hints

CARD = re.compile(r'<li class="semsearch-card"[^>]*>\s*<a href="[^"]*/image/(\d+)"')
# two areas: four photos in Sydney, three in Vienna
SYDNEY, VIENNA = (-33.86, 151.21), (48.2, 16.37)


@pytest.fixture
def located_db(photos_copy: Path) -> Path:
    with closing(sqlite3.connect(photos_copy)) as conn, conn:
        ids = [r[0] for r in conn.execute("select id from images order by id")]
        for n, i in enumerate(ids[:7]):
            lat, lon = SYDNEY if n < 4 else VIENNA
            conn.execute("update images set latitude = ?, longitude = ? where id = ?", [lat + n / 1000, lon, i])
    return photos_copy


async def page(ds: Any, path: str) -> Any:
    await ds.invoke_startup()
    return await ds.client.get(path)


@pytest.mark.asyncio
async def test_date_fields_only_when_some_photos_are_dated(
    plugin_photos: dict[str, Any], dated_photos_db: Path, datasette: Any
) -> None:
    undated = await page(datasette([plugin_photos["db"]]), "/photos/-/semsearch")
    assert 'name="taken_from"' not in undated.text and 'name="near"' not in undated.text
    dated = await page(datasette([str(dated_photos_db)]), "/f/-/semsearch")
    assert 'name="taken_from"' in dated.text


@pytest.mark.asyncio
async def test_a_place_filter_and_a_map_when_some_photos_are_located(located_db: Path, datasette: Any) -> None:
    with closing(sqlite3.connect(located_db)) as conn:
        places = hints.places(conn)
        located = {r[0] for r in conn.execute("select id from images where latitude is not null")}
    assert [p.photos for p in places] == [4, 3] and places[0].name.endswith("S 151.21°E")
    ds = datasette([str(located_db)])
    r = await page(ds, "/photos/-/semsearch?q=cat&all=1")
    assert 'name="near"' in r.text and f'value="{places[0].near}"' in r.text and "(4 photos)" in r.text
    r = await page(ds, "/photos/-/semsearch?q=cat&all=1&near=any")
    assert set(map(int, CARD.findall(r.text))) == located
    r = await page(ds, f"/photos/-/semsearch?q=cat&all=1&near={places[1].near}")
    assert len(CARD.findall(r.text)) == 3
    # the map: the located results as SQL rows, which datasette-cluster-map draws
    link = re.search(r'<a href="([^"]+)" class="semsearch-map">located ones on a map</a>', r.text)
    assert link, "no map link while datasette-cluster-map is installed"
    sql_page = await page(ds, link.group(1).replace("&amp;", "&"))
    assert sql_page.status_code == 200 and "datasette-cluster-map" in sql_page.text
    json_url = link.group(1).replace("&amp;", "&").replace("/photos?", "/photos.json?") + "&_shape=array"
    rows = (await page(ds, json_url)).json()
    assert rows and {r["image_id"] for r in rows} <= located and all(r["latitude"] is not None for r in rows)


@pytest.mark.asyncio
async def test_the_images_table_keeps_its_cluster_map(located_db: Path, datasette: Any) -> None:
    r = await page(datasette([str(located_db)]), "/photos/images")
    assert r.status_code == 200 and "datasette-cluster-map" in r.text and "latitude" in r.text


@pytest.mark.asyncio
async def test_no_map_link_where_no_photo_is_located(plugin_photos: dict[str, Any], datasette: Any) -> None:
    r = await page(datasette([plugin_photos["db"]]), "/photos/-/semsearch?q=cat")
    assert "semsearch-map" not in r.text


@pytest.mark.asyncio
async def test_the_empty_page_shows_each_label_with_a_photo(plugin_photos: dict[str, Any], datasette: Any) -> None:
    r = await page(datasette([plugin_photos["db"]]), "/photos/-/semsearch")
    library = r.text.split('class="semsearch-library', 1)[1].split("</ul>", 1)[0]
    with closing(sqlite3.connect(plugin_photos["db"])) as conn:
        labels = conn.execute("select count(distinct label) from images").fetchone()[0]
    assert library.count('class="semsearch-shelf"') == labels == library.count("/thumb/")
