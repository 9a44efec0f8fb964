"""Pages honour permissions on every table they read: with the word tables (``words``,
``vec_words``, ``word_lookup``) or ``image_classes`` denied, no page lists words from
them: the words page, "Did you mean", an image's tags, an upload's tags.

Runs on Datasette 0.65 (``allow`` blocks in metadata) and 1.0a (in config); the database
is the real ingest pipeline's output (``plugin_photos`` in conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from datasette.app import Datasette

IS_1_0 = hasattr(Datasette, "allowed")
TAG = 'class="semsearch-tag"'
SUGGEST = "Did you mean"
WORD_TABLES = ("words", "vec_words", "word_lookup")  # what word lists are read from
CLASS_TABLES = ("image_classes",)  # and a new image's tags besides


def denying(db: str, *tables: str) -> Datasette:
    """Datasette on ``db`` with ``tables`` denied to everyone (and root allowed all)."""
    config = {"databases": {"photos": {"tables": {t: {"allow": {"id": "root"}} for t in tables}}}}
    return Datasette([db], **{("config" if IS_1_0 else "metadata"): config})


async def get(ds: Datasette, path: str, **kwargs: Any) -> Any:
    await ds.invoke_startup()
    return await ds.client.get(path, follow_redirects=True, **kwargs)


def root(ds: Datasette) -> dict[str, str]:
    return {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}


async def post_upload(ds: Datasette, data: bytes) -> Any:
    page = await get(ds, "/photos/-/semsearch/upload")
    token = re.search(r'name="csrftoken" value="([^"]*)"', page.text)
    cookies = {"ds_csrftoken": page.cookies["ds_csrftoken"]} if "ds_csrftoken" in page.cookies else {}
    return await ds.client.post(
        "/photos/-/semsearch/upload",
        data={"csrftoken": token.group(1) if token else ""},
        files={"image": ("query.png", data, "image/png")},
        cookies=cookies,
    )


@pytest.fixture
def db(plugin_photos: dict[str, Any]) -> str:
    return plugin_photos["db"]


@pytest.mark.asyncio
@pytest.mark.parametrize("table", WORD_TABLES)
async def test_the_words_page_lists_no_words_when_a_word_table_is_denied(db: str, table: str) -> None:
    ds = denying(db, table)
    r = await get(ds, "/photos/-/semsearch/words?q=dog")
    assert r.status_code == 403
    assert "semsearch-words" not in r.text and "/photos/-/semsearch?q=" not in r.text
    r = await get(ds, "/photos/-/semsearch/words?q=dog", cookies=root(ds))  # who may view them still does
    assert r.status_code == 200 and "semsearch-words" in r.text
    # the database page offers the words page only to who may view it
    assert 'href="/photos/-/semsearch/words"' not in (await get(ds, "/photos")).text
    assert 'href="/photos/-/semsearch/words"' in (await get(ds, "/photos", cookies=root(ds))).text


@pytest.mark.asyncio
@pytest.mark.parametrize("table", WORD_TABLES)
async def test_did_you_mean_suggests_nothing_when_a_word_table_is_denied(db: str, table: str) -> None:
    ds = denying(db, table)
    for path in ("/photos/-/semsearch?q=sofaa", "/photos/-/semsearch?q=2%3Adoog+car"):
        r = await get(ds, path)
        assert r.status_code in (200, 400) and SUGGEST not in r.text, path
        assert "?q=2%3Adog+car" not in r.text  # the suggested query (labels are listed: they are images')
        assert SUGGEST in (await get(ds, path, cookies=root(ds))).text


@pytest.mark.asyncio
async def test_an_images_tags_are_left_out_when_a_word_table_is_denied(db: str) -> None:
    ds = denying(db, *WORD_TABLES)

    def tags(html: str) -> list[str]:
        listed = html.split("<dt>Tags</dt>", 1)[1].split("</dd>", 1)[0]
        return re.findall(r'<li><a href="/photos/-/semsearch\?q=[^"]*"', listed)

    r = await get(ds, "/photos/-/semsearch/image/1")
    assert r.status_code == 200 and tags(r.text) == []
    assert tags((await get(ds, "/photos/-/semsearch/image/1", cookies=root(ds))).text)


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("table", WORD_TABLES + CLASS_TABLES)
async def test_an_uploads_tags_are_left_out_when_their_tables_are_denied(
    db: str, plugin_photos: dict[str, Any], table: str
) -> None:
    data = next(Path(plugin_photos["images"], "car").glob("*.png")).read_bytes()
    r = await post_upload(denying(db, table), data)
    assert r.status_code == 200 and 'class="semsearch-card"' in r.text  # the images are still found
    assert TAG not in r.text and "Tags:" not in r.text
    assert TAG in (await post_upload(denying(db), data)).text
