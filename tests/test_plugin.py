"""The Datasette plugin: SQL functions through the JSON API, the SQL page and CSV; the
search, image, words and upload pages; stored images; permissions; escaping.

Runs on Datasette 0.65 and 1.0a (see ``make_ds``); the database is the real ingest
pipeline's output (``plugin_photos`` in conftest.py).
"""

from __future__ import annotations

import base64
import io
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from datasette.app import Datasette
from datasette.utils.asgi import BadRequest
from markupsafe import escape
from PIL import Image

import datasette_plugin
from datasette_plugin import media, render, upload, views

from .helpers import IS_1_0, PRIVATE_CONFIGS, get, make_ds, root_cookies

EVIL = ["'; drop table images; --", '" onmouseover=alert(1) x="', "<script>alert(1)</script>"]
TABLE_FUNCTION_SQL = {
    "similar_images": "select * from similar_images('cat', 3)",
    "similar_to_image": "select * from similar_to_image(1, 3)",
    "similar_to_image semantic": "select * from similar_to_image(1, 3, 'semantic')",
    "similar_images_focused": "select * from similar_images_focused(1, 'cat', 3)",
    "image_tags": "select * from image_tags(1, 3)",
    "similar_words": "select * from similar_words('cat', 3)",
}


async def sql_rows(ds: Datasette, sql: str, **params: Any) -> list[dict[str, Any]]:
    from urllib.parse import urlencode

    r = await get(ds, "/photos.json?" + urlencode({"sql": sql, "_shape": "array", **params}))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def db(plugin_photos: dict[str, Any]) -> str:
    return plugin_photos["db"]


@pytest.fixture
def ds(db: str) -> Datasette:
    return make_ds(db)


def png_bytes(colour: tuple[int, int, int] = (214, 140, 60), size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def labels_by_id(db: str) -> dict[int, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select id, label from images"))


def first_id(db: str, label: str = "cat") -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select min(id) from images where label = ?", [label]).fetchone()[0]


# -- installation and SQL ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_plugin_is_installed(ds: Datasette) -> None:
    plugins = (await get(ds, "/-/plugins.json")).json()
    ours = [p for p in plugins if p["name"] == "semsearch-sqlite"]
    assert ours and ours[0]["static"] and ours[0]["templates"]
    assert {"prepare_connection", "register_routes", "render_cell", "menu_links", "database_actions"} <= set(
        ours[0]["hooks"]
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("name", TABLE_FUNCTION_SQL)
async def test_table_functions_in_the_json_api(ds: Datasette, name: str) -> None:
    rows = await sql_rows(ds, TABLE_FUNCTION_SQL[name])
    assert [r["rank"] for r in rows] == [1, 2, 3]
    distances = [r["distance"] for r in rows]
    if name == "similar_images":
        # text hits are ordered by their distance and their visual agreement with the
        # best hits (vectors/rerank.py): the distances (word space) are near, not sorted
        assert max(distances) - min(distances) < 0.5
    elif name == "image_tags":
        # the stored tags in rank order: the image's classes lead (their distances need
        # not grow: see model/semantic.py), its nearest words follow
        stored = await sql_rows(ds, "select word, distance from tags where image_id = 1 order by rank limit 3")
        assert [(r["word"], r["distance"]) for r in rows] == [(r["word"], round(r["distance"], 6)) for r in stored]
    else:
        assert distances == sorted(distances)
    if "words" in name or "tags" in name:
        assert set(rows[0]) == {"rank", "word", "distance", "confidence"}
    else:
        assert set(rows[0]) == {
            "rank",
            "image_id",
            "path",
            "label",
            "distance",
            "match",
            "thumbnail",
            "taken_at",
            "camera",
            "lens",
            "latitude",
            "longitude",
        }
        assert all(isinstance(r["image_id"], int) for r in rows)
        assert 1 not in [r["image_id"] for r in rows] or name == "similar_images"


@pytest.mark.asyncio
@pytest.mark.parametrize("word", ["cat", "dog", "car", "sofa"])
async def test_a_label_word_finds_images_with_that_label_first(ds: Datasette, word: str) -> None:
    # the word-space model is fitted on these labels, so their images answer their word
    rows = await sql_rows(ds, "select label from similar_images(:q, 1)", q=word)
    assert rows == [{"label": word}]


@pytest.mark.asyncio
async def test_images_tagged_finds_the_images_with_that_tag(ds: Datasette, db: str) -> None:
    tag = (await sql_rows(ds, "select word from image_tags(1, 1)"))[0]["word"]
    rows = await sql_rows(ds, "select image_id from images_tagged(:w, 100)", w=tag)
    assert 1 in [r["image_id"] for r in rows]


@pytest.mark.asyncio
async def test_named_parameters_joins_and_scalar_functions(ds: Datasette, db: str) -> None:
    rows = await sql_rows(
        ds,
        "select s.rank, i.label, i.width from similar_images(:q, :k) s "
        "join images i on i.id = s.image_id order by s.rank",
        q="cat",
        k="4",
    )
    assert [r["rank"] for r in rows] == [1, 2, 3, 4] and all(r["width"] > 0 for r in rows)
    # one table-function call per outer row
    rows = await sql_rows(
        ds, "select q.w, s.image_id from (select 'cat' w union all select 'car') q, similar_images(q.w, 2) s"
    )
    assert [r["w"] for r in rows] == ["cat", "cat", "car", "car"]
    with sqlite3.connect(db) as conn:
        dims = dict(conn.execute("select key, value from semsearch_meta where key in ('backbone_dim', 'words_dims')"))
    rows = await sql_rows(
        ds,
        "select length(semsearch_text_vector('cat')) t, length(semsearch_word_vector('cat')) w, "
        "length(semsearch_image_vector(1)) v, length(semsearch_image_vector(1, 'semantic')) s",
    )
    assert rows[0]["w"] == 4 * int(dims["words_dims"]) == rows[0]["t"] == rows[0]["s"]
    assert rows[0]["v"] == 4 * int(dims["backbone_dim"])


@pytest.mark.asyncio
async def test_sql_errors_are_reported_not_500(ds: Datasette) -> None:
    r = await get(ds, "/photos.json?sql=select+*+from+similar_images('zzzqqxx')&_shape=array")
    assert r.status_code == 400
    assert "no known words" in r.text
    r = await get(ds, "/photos.json?sql=select+*+from+similar_to_image(999999)&_shape=array")
    assert r.status_code == 400 and "no image with id 999999" in r.text


@pytest.mark.asyncio
async def test_sql_page_renders_thumbnails_and_csv_export(ds: Datasette) -> None:
    r = await get(ds, "/photos?sql=select+*+from+similar_images(:q,+2)&q=cat")
    assert r.status_code == 200
    cells = re.findall(r'<td class="col-thumbnail[^"]*">(.*?)</td>', r.text, re.S)
    assert len(cells) == 2
    assert all('<img class="semsearch-cell" src="data:image/jpeg;base64,' in c for c in cells)
    assert all('href="/photos/-/semsearch/image/' in c for c in cells)
    r = await get(ds, "/photos.csv?sql=select+rank,+image_id,+label,+distance+from+similar_images('car',+3)")
    assert r.status_code == 200
    lines = r.text.strip().splitlines()
    assert lines[0] == "rank,image_id,label,distance" and len(lines) == 4


@pytest.mark.asyncio
async def test_images_table_thumbnails_link_to_the_thumb_route(ds: Datasette) -> None:
    r = await get(ds, "/photos/images?_size=3")
    assert r.status_code == 200
    assert '<img class="semsearch-cell" src="/photos/-/semsearch/thumb/1.jpg"' in r.text


def test_render_cell_only_touches_image_thumbnails(ds: Datasette) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4)).save(jpeg, "JPEG")
    data = jpeg.getvalue()
    assert media.render_thumbnail(data, "other", None, {}, "photos", ds) is None
    assert media.render_thumbnail(b"not an image", "thumbnail", None, {}, "photos", ds) is None
    assert media.render_thumbnail("text", "thumbnail", None, {}, "photos", ds) is None
    huge = b"\xff\xd8\xff" + b"0" * media.CELL_THUMBNAIL_LIMIT
    assert media.render_thumbnail(huge, "thumbnail", None, {}, "x", ds) is None
    html = media.render_thumbnail(data, "thumbnail", None, {}, "elsewhere", ds)
    assert html.startswith('<img class="semsearch-cell" src="data:image/jpeg;base64,')


@pytest.mark.asyncio
async def test_vec0_shadow_tables_are_hidden(ds: Datasette) -> None:
    tables = {t["name"]: t["hidden"] for t in (await get(ds, "/photos.json")).json()["tables"]}
    shadow = [t for t in tables if re.match(r"vec_\w+_(chunks|rowids|info|vector_chunks\d+)$", t)]
    assert shadow and all(tables[t] for t in shadow)
    assert tables["images"] is False and tables["vec_visual"] is False and tables["tags"] is False


def test_prepare_connection_on_a_plain_connection_with_qmark_parameters(db: str) -> None:
    conn = sqlite3.connect(db)
    try:
        datasette_plugin.prepare_connection(conn, "photos", None)
        rows = conn.execute("select rank, label from similar_images(?, ?)", ["car", 3]).fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]
        assert conn.execute("select vec_version()").fetchone()[0].startswith("v")
    finally:
        conn.close()


def test_prepare_connection_never_raises() -> None:
    conn = sqlite3.connect(":memory:")
    conn.close()  # a closed connection: nothing can be registered
    datasette_plugin.prepare_connection(conn, "broken", None)
    fresh = sqlite3.connect(":memory:")
    datasette_plugin.prepare_connection(fresh, "empty", None)
    with pytest.raises(sqlite3.Error):  # registered, with a clear error on a non-semsearch DB
        fresh.execute("select * from similar_words('cat')").fetchall()
    fresh.close()


# -- pages ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_search_page_shows_a_grid_of_the_nearest_images(ds: Datasette, db: str) -> None:
    r = await get(ds, "/photos/-/semsearch?q=cat&k=5&all=1")
    assert r.status_code == 200
    ids = [int(i) for i in re.findall(r'<a href="/photos/-/semsearch/image/(\d+)" title=', r.text)]
    assert len(ids) == 5
    assert labels_by_id(db)[ids[0]] == "cat"
    assert re.findall(r'<img src="/photos/-/semsearch/thumb/(\d+)\.jpg"', r.text) == [str(i) for i in ids]
    assert re.search(r'class="semsearch-match semsearch-score"[^>]*>(strong|weak) \d+%<', r.text)
    # the same query in SQL, as :named parameters
    link = re.search(r'<a href="([^"]+)" class="semsearch-sql">', r.text).group(1).replace("&amp;", "&")
    assert "similar_images%28%3Aq%2C+%3Ak%29" in link and "q=cat" in link and "k=5" in link
    r = await get(ds, link)
    assert r.status_code == 200 and r.text.count('class="semsearch-cell"') == 5


@pytest.mark.asyncio
async def test_search_page_notices_unknown_words_and_errors(ds: Datasette) -> None:
    r = await get(ds, "/photos/-/semsearch?q=cat+zzzqqxx")
    assert r.status_code == 200
    assert "Not in the vocabulary, so ignored: <q>zzzqqxx</q>" in r.text
    assert "semsearch-card" in r.text
    r = await get(ds, "/photos/-/semsearch?q=zzzqqxx")
    assert r.status_code == 400
    assert "<q>zzzqqxx</q> is not a word this database knows" in r.text
    assert "--vocab-file" not in r.text and "ingest" not in r.text  # no command-line advice on a web page
    assert 'class="semsearch-library semsearch-labels"' in r.text  # somewhere to go from here
    r = await get(ds, "/photos/-/semsearch")
    assert r.status_code == 200 and "semsearch-card" not in r.text and 'name="q"' in r.text


@pytest.mark.asyncio
async def test_an_unknown_word_suggests_the_known_words_spelt_like_it(ds: Datasette) -> None:
    r = await get(ds, "/photos/-/semsearch?q=sofaa")
    assert r.status_code == 400
    suggested = re.findall(r'<a href="/photos/-/semsearch\?q=(\w+)">\w+</a>', r.text.split("Did you mean", 1)[1])
    assert suggested[0] == "sofa"  # a label comes first
    # a partly unknown query keeps its known words in the suggested query
    r = await get(ds, "/photos/-/semsearch?q=2%3Adoog+car")  # ("dogg" is a GloVe word)
    assert r.status_code == 200 and "Not in the vocabulary, so ignored: <q>doog</q>" in r.text
    assert 'href="/photos/-/semsearch?q=2%3Adog+car"' in r.text


@pytest.mark.asyncio
async def test_the_empty_search_page_lists_labels_and_example_queries(
    ds: Datasette, db: str, plugin_photos: dict[str, Any]
) -> None:
    r = await get(ds, "/photos/-/semsearch")
    assert r.status_code == 200
    labels = r.text.split('class="semsearch-library semsearch-labels"', 1)[1].split("</ul>", 1)[0]
    with sqlite3.connect(db) as conn:
        counts = dict(conn.execute("select label, count(*) from images group by label"))
    for label, n in counts.items():  # each label with its count and a sample photo
        if " " not in label:
            assert re.search(
                f'<a href="/photos/-/semsearch\\?q={label}">\\s*<img src="[^"]+/thumb/\\d+.jpg"'
                f'[^>]*>\\s*<span class="semsearch-shelf-name">{label}</span> '
                f'<span class="semsearch-count">{n}</span>',
                labels,
            ), label
    # the "<script> dog" label: not a vocabulary word, so its link lists its photos by label
    assert "&amp;label=" in labels
    assert str(escape(plugin_photos["evil_label"])) in labels and "<script>" not in labels
    examples = re.findall(
        r'<li><a href="/photos/-/semsearch\?q=[^"]+">([^<]+)</a>',
        r.text.split("semsearch-examples", 1)[1].split("</ul>", 1)[0],
    )
    assert examples
    for example in examples:  # every example finds images
        found = await get(ds, "/photos/-/semsearch?" + urlencode({"q": example.replace("&amp;", "&")}))
        assert found.status_code == 200 and "semsearch-card" in found.text, example


@pytest.mark.asyncio
async def test_pages_continue_where_the_last_one_stopped(ds: Datasette, db: str) -> None:
    def ids(html: str) -> list[str]:
        return re.findall(r'<li class="semsearch-card[^"]*"[^>]*>\s*<a href="/photos/-/semsearch/image/(\d+)"', html)

    everything = ids((await get(ds, "/photos/-/semsearch?q=dog&k=15&all=1")).text)
    assert len(everything) == 15
    pages, url = [], "/photos/-/semsearch?q=dog&k=4&all=1"
    while url:
        r = await get(ds, url)
        assert r.status_code == 200
        pages.append(ids(r.text))
        n = len(pages)
        assert f"Showing <b>{4 * n - 3}&ndash;{min(4 * n, 15)}</b> of 15" in r.text
        nxt = re.search(r'<a href="([^"]+)" rel="next">', r.text)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
        if n > 1:
            assert 'rel="prev"' in r.text
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    assert sum(pages, []) == everything  # no overlap, nothing skipped, the same order
    # past the end: the last page
    r = await get(ds, "/photos/-/semsearch?q=dog&k=4&page=99&all=1")
    assert ids(r.text) == pages[-1] and 'rel="next"' not in r.text
    r = await get(ds, "/photos/-/semsearch?q=dog&k=4&page=nonsense&all=1")
    assert ids(r.text) == pages[0] and 'rel="prev"' not in r.text


@pytest.mark.asyncio
async def test_image_page_sections_page_on_their_own(ds: Datasette, db: str) -> None:
    image_id = first_id(db, "car")

    def section_ids(html: str, name: str) -> list[str]:
        part = html.split(f'<section class="semsearch-section" id="{name}">')[1].split("</section>")[0]
        return re.findall(r'<li class="semsearch-card[^"]*"[^>]*>\s*<a href="/photos/-/semsearch/image/(\d+)"', part)

    first = await get(ds, f"/photos/-/semsearch/image/{image_id}?k=5")
    nxt = re.search(r'<a href="([^"]*visual_page=2[^"]*)" rel="next">', first.text).group(1).replace("&amp;", "&")
    assert nxt.endswith("#visual") and "k=5" in nxt
    second = await get(ds, nxt)
    all_visual = section_ids((await get(ds, f"/photos/-/semsearch/image/{image_id}?k=10")).text, "visual")
    assert section_ids(first.text, "visual") + section_ids(second.text, "visual") == all_visual
    assert section_ids(second.text, "semantic") == section_ids(first.text, "semantic")  # still page 1
    assert "Showing <b>6&ndash;10</b> of 14" in second.text


@pytest.mark.asyncio
async def test_k_is_clamped(ds: Datasette) -> None:
    r = await get(ds, "/photos/-/semsearch?q=dog&k=100000&all=1")
    assert r.status_code == 200 and 'name="k" value="100"' in r.text
    assert r.text.count('class="semsearch-card"') == 15  # every image, no more
    r = await get(ds, "/photos/-/semsearch?q=dog&k=-5&all=1")  # refused, as the CLI's -k -5 is
    assert r.status_code == 400 and "k must be at least 1, not -5" in r.text


@pytest.mark.asyncio
async def test_image_page(ds: Datasette, db: str) -> None:
    image_id = first_id(db, "car")
    r = await get(ds, f"/photos/-/semsearch/image/{image_id}")
    assert r.status_code == 200
    html = r.text
    assert f'<img src="/photos/-/semsearch/display/{image_id}"' in html
    tags = re.findall(r'<li><a href="/photos/-/semsearch\?q=(\w+)" title="confidence \d+%', html)
    assert 3 <= len(tags) <= views.TAGS_SHOWN
    assert 'id="visual"' in html and 'id="semantic"' in html
    for section in ("visual", "semantic"):
        part = html.split(f'id="{section}"')[1]
        ids = re.findall(r'<a href="/photos/-/semsearch/image/(\d+)" title=', part.split("</section>")[0])
        assert len(ids) == 14 and str(image_id) not in ids  # every other image: fewer than a page
    focus = re.findall(r'href="/photos/-/semsearch/image/\d+\?focus=(\w+)#focused"', html)
    assert focus == tags[: views.FOCUS_LINKS]
    r = await get(ds, f"/photos/-/semsearch/image/{image_id}?focus={focus[0]}&k=4")
    assert r.status_code == 200
    part = r.text.split('id="focused"')[1].split("</section>")[0]
    # a tag word names one class, a group of classes, or nothing near (said so, no silent pick)
    assert any(note in part for note in ("focus class:", "focus: ", "no ImageNet class")), part[:500]
    assert len(re.findall(r'class="semsearch-card"', part)) == 4


@pytest.mark.asyncio
async def test_words_page(ds: Datasette) -> None:
    r = await get(ds, "/photos/-/semsearch/words?q=cat&k=5")
    assert r.status_code == 200
    words = re.findall(r'<td data-label="word"><a href="/photos/-/semsearch/words\?q=(\w+)">', r.text)
    assert len(words) == 5 and "cat" not in words and "dog" in words
    r = await get(ds, "/photos/-/semsearch/words?q=zzzqqxx")
    assert r.status_code == 400 and "<q>zzzqqxx</q> is not a word this database knows" in r.text


@pytest.mark.asyncio
async def test_thumbnails_and_display_images_are_served_from_the_database(ds: Datasette, db: str) -> None:
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("select id from images order by id")]
        display_mime = conn.execute("select display_mime from image_files where image_id = ?", [ids[0]]).fetchone()[0]
    for image_id in ids[:3]:
        r = await get(ds, f"/photos/-/semsearch/thumb/{image_id}.jpg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.headers["cache-control"].startswith("public, max-age=") and r.headers["etag"]
        img = Image.open(io.BytesIO(r.content))
        img.load()
        assert img.format == "JPEG" and max(img.size) <= 256
    r = await get(ds, f"/photos/-/semsearch/display/{ids[0]}")
    assert r.status_code == 200 and r.headers["content-type"] == display_mime
    Image.open(io.BytesIO(r.content)).load()
    again = await get(ds, f"/photos/-/semsearch/display/{ids[0]}", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path",
    [
        "/photos/-/semsearch/thumb/abc.jpg",
        "/photos/-/semsearch/thumb/1%20or%201=1.jpg",
        "/photos/-/semsearch/display/1;drop",
        "/photos/-/semsearch/image/-1",
        "/photos/-/semsearch/image/99999999999999999999",
        "/photos/-/semsearch/image/999999",
        "/photos/-/semsearch/thumb/999999.jpg",
        "/photos/-/semsearch/nope",
        "/nosuchdb/-/semsearch",
    ],
)
async def test_bad_ids_are_404(ds: Datasette, path: str) -> None:
    assert (await get(ds, path)).status_code == 404


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path, json_body",
    [
        ("/nonexistent-db", False),
        ("/photos/nonexistent-table", False),
        ("/photos/nonexistent-table.json", True),
        # no route matches these: Datasette's own handler crashed here when rich is installed
        ("/a/b/c/d/e", False),
        ("/photos/images/1/2/3", False),
        ("/photos/images/1/2/3.json", True),
    ],
)
async def test_unknown_urls_anywhere_are_404(ds: Datasette, path: str, json_body: bool) -> None:
    r = await get(ds, path)
    assert r.status_code == 404
    if json_body:
        assert r.json()["ok"] is False and r.json()["status"] == 404
    else:
        assert "<title>Error 404</title>" in r.text


@pytest.mark.asyncio
async def test_404s_leave_no_traceback_in_the_log(ds: Datasette, capsys: pytest.CaptureFixture[str]) -> None:
    for path in ("/photos/nonexistent-table", "/a/b/c/d/e", "/photos/-/semsearch/image/999999", "/photos/x.json"):
        r = await get(ds, path)
        assert r.status_code == 404
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "locals" not in out.out + out.err


def test_rich_is_installed_so_the_404_guard_is_exercised() -> None:
    # keras pulls rich in; without it Datasette's handler never crashed
    import rich

    assert rich.get_console() is not None


@pytest.mark.asyncio
async def test_other_plugins_exception_handlers_still_answer(ds: Datasette) -> None:
    from datasette import Response, hookimpl
    from datasette.plugins import pm

    class Custom:
        __name__ = "custom_404"

        @hookimpl
        def handle_exception(self, exception):
            return Response.text(f"custom: {exception}", status=418)

    pm.register(Custom(), name="custom_404")
    try:
        r = await get(ds, "/a/b/c/d/e")
        assert (r.status_code, r.text) == (418, "custom: 404")
    finally:
        pm.unregister(name="custom_404")


@pytest.mark.asyncio
async def test_menu_and_database_action_links(ds: Datasette) -> None:
    home = (await get(ds, "/")).text
    assert '<a href="/photos/-/semsearch">Image search: photos</a>' in home
    page = (await get(ds, "/photos")).text
    assert 'href="/photos/-/semsearch"' in page and "Semantic image search" in page
    if IS_1_0:  # a visible link too (the top_database hook), not only the gear menu's
        visible = page.split('<p class="semsearch-database-link"', 1)[1].split("</p>", 1)[0]
        assert '<a href="/photos/-/semsearch"><strong>Image search</strong></a>' in visible


@pytest.mark.asyncio
async def test_the_database_page_link_honours_permissions(db: str) -> None:
    ds = make_ds(db, {"databases": {"photos": {"tables": {"images": {"allow": {"id": "root"}}}}}})
    link = "semsearch-database-link" if IS_1_0 else "Semantic image search"  # 0.65: the actions menu
    page = (await get(ds, "/photos")).text
    assert link not in page
    page = (await get(ds, "/photos", cookies=root_cookies(ds))).text
    assert link in page


@pytest.mark.asyncio
async def test_thumbnails_say_what_they_show_and_ids_link_to_image_pages(ds: Datasette, db: str) -> None:
    with sqlite3.connect(db) as conn:
        rows = {i: (p, lab) for i, p, lab in conn.execute("select id, path, label from images")}
    r = await get(ds, "/photos/-/semsearch?q=dog&k=15&all=1")
    alts = re.findall(r'<a href="/photos/-/semsearch/image/(\d+)" title="[^"]*">\s*<img [^>]*alt="([^"]*)"', r.text)
    assert len(alts) == 15 and len({alt for _, alt in alts}) == 15  # no two alike
    for image_id, alt in alts:
        path, label = rows[int(image_id)]
        assert alt == str(escape(f"{label}, {path.rsplit('/', 1)[-1]}"))
    # the images table: a small thumbnail beside the path (its second column), linked
    r = await get(ds, "/photos/images?_size=3")
    cell = re.search(r'<td class="col-path[^"]*">(.*?)</td>', r.text, re.S).group(1)
    assert cell.startswith('<a href="/photos/-/semsearch/image/1" class="semsearch-path-cell"><img ')
    assert cell.endswith(f"{escape(rows[1][0])}</a>")
    thumb = re.search(r'<td class="col-thumbnail[^"]*">(.*?)</td>', r.text, re.S).group(1)
    assert f'alt="{escape(rows[1][1])}, {escape(rows[1][0].rsplit("/", 1)[-1])}"' in thumb
    # image_id cells, in tables and query results, link to the image page
    r = await get(ds, "/photos?sql=select+image_id,+label+from+similar_images(:q,+2)&q=cat")
    ids = re.findall(r'<td class="col-image_id[^"]*"><a href="/photos/-/semsearch/image/(\d+)">(\d+)</a></td>', r.text)
    assert len(ids) == 2 and all(a == b for a, b in ids)


@pytest.mark.asyncio
async def test_base_url_is_respected(db: str) -> None:
    ds = make_ds(db, settings={"base_url": "/prefix/"})
    r = await get(ds, "/photos/-/semsearch?q=cat&k=2")
    assert r.status_code == 200
    assert 'src="/prefix/photos/-/semsearch/thumb/' in r.text
    assert 'href="/prefix/-/static-plugins/semsearch-sqlite/semsearch.css"' in r.text
    assert 'href="/photos/-/semsearch' not in r.text


# -- uploads -------------------------------------------------------------------------------


async def post_upload(ds: Datasette, data: bytes, filename: str = "query.png", **fields: str) -> Any:
    """POST the upload form as a browser would (csrftoken first, as asgi-csrf requires)."""
    page = await get(ds, "/photos/-/semsearch/upload")
    token = re.search(r'name="csrftoken" value="([^"]*)"', page.text)
    form = {"csrftoken": token.group(1) if token else "", **fields}
    cookies = {"ds_csrftoken": page.cookies["ds_csrftoken"]} if "ds_csrftoken" in page.cookies else {}
    return await ds.client.post(
        "/photos/-/semsearch/upload", data=form, files={"image": (filename, data, "image/png")}, cookies=cookies
    )


@pytest.mark.slow
@pytest.mark.asyncio
async def test_upload_finds_images_like_the_uploaded_one(ds: Datasette, db: str, plugin_photos: dict[str, Any]) -> None:
    path = next(Path(plugin_photos["images"], "car").glob("*.png"))
    r = await post_upload(ds, path.read_bytes(), filename="<b>my car</b>.png", k="3")
    assert r.status_code == 200, r.text
    ids = [int(i) for i in re.findall(r'<a href="/photos/-/semsearch/image/(\d+)" title=', r.text)]
    assert len(ids) == 3
    assert labels_by_id(db)[ids[0]] == "car"  # the same picture is in the database
    assert "&lt;b&gt;my car&lt;/b&gt;.png" in r.text and "<b>my car" not in r.text
    # the query image is shown beside its results, a small JPEG made from the upload
    preview = re.search(r'<div class="semsearch-query-image">\s*<img src="data:image/jpeg;base64,([^"]+)"', r.text)
    with Image.open(io.BytesIO(base64.b64decode(preview.group(1)))) as shown:
        assert shown.format == "JPEG" and max(shown.size) <= 256
    assert len(re.findall(r'class="semsearch-tag"', r.text)) == upload.UPLOAD_TAGS
    r = await post_upload(ds, path.read_bytes(), k="2", space="semantic")
    assert r.status_code == 200 and r.text.count('class="semsearch-card"') == 2
    # the settings are kept for the next search
    assert 'name="k" value="2"' in r.text and '<option value="semantic" selected>' in r.text


@pytest.mark.asyncio
async def test_upload_rejects_non_images_and_oversized_files(
    ds: Datasette, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await post_upload(ds, b"just some text", filename="notes.txt")
    assert r.status_code == 400 and "not a JPEG, PNG" in r.text
    monkeypatch.setattr(upload, "UPLOAD_SLACK", 1000)
    small = make_ds(db, {"plugins": {"semsearch-sqlite": {"max_upload_bytes": 1024}}})
    r = await post_upload(small, png_bytes(size=(400, 400)) + b"\0" * 5000)
    assert r.status_code == 413 and "too large" in r.text
    r = await ds.client.post("/photos/-/semsearch/upload", data={"k": "3"}, cookies={})
    assert r.status_code in (400, 403)  # no multipart (1.0a) / no CSRF token (0.65)


@pytest.mark.asyncio
async def test_upload_is_off_without_a_backbone(ds: Datasette, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsearch_sqlite.queries import new_image

    monkeypatch.setattr(new_image, "backbone_available", lambda: (False, "tensorflow is not installed here"))
    r = await get(ds, "/photos/-/semsearch/upload")
    assert r.status_code == 200
    assert "Search by image is off on this server: tensorflow is not installed here" in r.text
    assert 'type="file"' not in r.text
    r = await post_upload(ds, png_bytes())
    assert r.status_code == 503 and "tensorflow is not installed here" in r.text


@pytest.mark.skipif(IS_1_0, reason="Datasette 1.0a checks Origin/Sec-Fetch-Site headers instead of a token")
@pytest.mark.asyncio
async def test_upload_needs_the_csrf_token_on_datasette_0_65(ds: Datasette) -> None:
    page = await get(ds, "/photos/-/semsearch/upload")
    cookies = {"ds_csrftoken": page.cookies["ds_csrftoken"]}
    for form in ({}, {"csrftoken": "forged"}):
        files = {"image": ("a.png", png_bytes(), "image/png")}
        r = await ds.client.post("/photos/-/semsearch/upload", data=form, files=files, cookies=cookies)
        assert r.status_code == 403 and "CSRF" in r.text


# -- security ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("evil", EVIL)
async def test_injection_strings_are_parameters(ds: Datasette, db: str, evil: str) -> None:
    from urllib.parse import quote

    q = quote(evil)
    for path in [
        f"/photos/-/semsearch?q={q}&k={q}",
        f"/photos/-/semsearch?q=cat+{q}",
        f"/photos/-/semsearch/words?q={q}&k={q}",
        f"/photos/-/semsearch/image/1?focus={q}&k={q}",
        f"/photos/-/semsearch/image/{q}",
        f"/photos/-/semsearch/thumb/{q}.jpg",
    ]:
        r = await get(ds, path)
        assert r.status_code in (200, 400, 404), (path, r.status_code)
        assert "<script>alert" not in r.text and 'x=""' not in r.text
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from images").fetchone()[0] == 15


@pytest.mark.asyncio
async def test_file_names_and_labels_are_escaped(ds: Datasette, db: str, plugin_photos: dict[str, Any]) -> None:
    evil_name, evil_label_text = plugin_photos["evil_file"], plugin_photos["evil_label"]
    with sqlite3.connect(db) as conn:
        evil_file = conn.execute("select id from images where path like ?", ["%/" + evil_name]).fetchone()[0]
        evil_label = conn.execute("select id from images where label = ?", [evil_label_text]).fetchone()[0]
    pages = [
        f"/photos/-/semsearch/image/{evil_file}",
        f"/photos/-/semsearch/image/{evil_label}",
        "/photos/-/semsearch?q=dog&k=100&all=1",
        "/photos/-/semsearch?" + urlencode({"q": evil_label_text}),
    ]
    for path in pages:
        r = await get(ds, path)
        assert r.status_code == 200, path
        assert "<script>alert" not in r.text, path
    text = (await get(ds, "/photos/-/semsearch?q=dog&k=100&all=1")).text
    assert str(escape(evil_name)) in text and "&lt;script&gt;alert(1)" in text
    assert str(escape(evil_label_text)) in text


@pytest.mark.asyncio
@pytest.mark.parametrize("config", PRIVATE_CONFIGS)
async def test_pages_honour_permissions(db: str, config: dict[str, Any]) -> None:
    ds = make_ds(db, config=config)
    paths = [
        "/photos/-/semsearch?q=cat",
        "/photos/-/semsearch/image/1",
        "/photos/-/semsearch/words?q=cat",
        "/photos/-/semsearch/upload",
        "/photos/-/semsearch/thumb/1.jpg",
        "/photos/-/semsearch/display/1",
    ]
    for path in paths:
        r = await get(ds, path)
        assert r.status_code == 403, path
        assert "semsearch-card" not in r.text
    assert "Image search: photos" not in (await get(ds, "/")).text
    if "allow" in config.get("databases", {}).get("photos", {}) and config["databases"]["photos"]["allow"] is False:
        return
    cookies = root_cookies(ds)
    r = await get(ds, "/photos/-/semsearch?q=cat", cookies=cookies)
    assert r.status_code == 200 and "semsearch-card" in r.text
    r = await get(ds, "/photos/-/semsearch/thumb/1.jpg", cookies=cookies)
    assert r.status_code == 200 and r.headers["cache-control"].startswith("private")


@pytest.mark.asyncio
async def test_databases_that_are_not_ours_are_left_alone(db: str, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table thumbnails (id integer primary key, thumbnail blob)")
        conn.execute("insert into thumbnails values (1, ?)", [png_bytes()])
    ds = Datasette([db, str(other)])
    assert (await get(ds, "/other/-/semsearch?q=cat")).status_code == 404
    assert "Image search: other" not in (await get(ds, "/")).text
    r = await get(ds, "/other/thumbnails")
    assert r.status_code == 200 and 'src="data:image/png;base64,' in r.text  # rendered, not linked
    assert "/other/-/semsearch" not in r.text
    rows = (await get(ds, "/other.json?sql=select+count(*)+n+from+thumbnails&_shape=array")).json()
    assert rows == [{"n": 1}]


def test_the_plugin_never_imports_tensorflow(db: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sqlite3, sys
        import datasette_plugin
        from datasette.app import Datasette

        conn = sqlite3.connect({db!r})
        datasette_plugin.prepare_connection(conn, "photos", None)
        assert len(conn.execute("select * from similar_images('cat', 3)").fetchall()) == 3

        async def pages():
            ds = Datasette([{db!r}])
            for path in ["/photos/-/semsearch?q=cat", "/photos/-/semsearch/image/1?focus=cat",
                         "/photos/-/semsearch/upload", "/photos?sql=select+*+from+similar_images('dog')"]:
                r = await ds.client.get(path, follow_redirects=True)
                assert r.status_code == 200, (path, r.status_code)

        asyncio.run(pages())
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "torch", "jax"))
        print("HEAVY", heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout


def test_parse_multipart() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="k"\r\n\r\n7\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\r\n--XyZ--\r\n"
    )
    fields, files = upload.parse_multipart(body, b"XyZ")
    assert fields == {"k": "7"}
    assert files == {"image": ("a.png", b"\x89PNG\r\n\x1a\n")}


@pytest.mark.parametrize("raw, expected", [("5", 5), ("", 24), (None, 24), ("99999", 100)])
def test_page_k(raw: Any, expected: int) -> None:
    assert render.page_k(raw) == expected
    for wrong in ("0", "-3", "1e9"):  # one rule with the CLI: refused, never silently changed
        with pytest.raises(BadRequest):
            render.page_k(wrong)


@pytest.mark.asyncio
async def test_startup_loads_the_vectors_before_the_first_query(ds: Datasette, db: str) -> None:
    from semsearch_sqlite.vectors import matrix

    matrix.clear_cache()
    await ds.invoke_startup()
    cached = matrix.cached_tables(str(Path(db).resolve()))
    assert cached == {"vec_words", "vec_visual", "vec_semantic"}


@pytest.mark.asyncio
async def test_cards_show_a_hits_match_cue_when_it_has_one(ds: Datasette, db: str) -> None:
    from dataclasses import dataclass

    from semsearch_sqlite.queries.search import ImageHit
    from semsearch_sqlite.storage.store import connect

    @dataclass
    class CuedHit(ImageHit):  # what a later version's hits may carry
        match: str = "weak"

    conn = connect(db, readonly=True)
    try:
        plain = render.cards(conn, [ImageHit(1, "p", "cat", 0.2, 1)])
        cued = render.cards(conn, [CuedHit(1, "p", "cat", 0.4, 1)])
    finally:
        conn.close()
    assert plain[0]["match"] is None and cued[0]["match"] == "weak"
    await ds.invoke_startup()
    # Datasette 1.0a hands out its environment per request; 0.65 has one attribute
    env = ds.get_jinja_environment(None) if hasattr(ds, "get_jinja_environment") else ds.jinja_env
    template = env.from_string('{% from "_semsearch_grid.html" import grid %}{{ grid(cards, semsearch, 1) }}')
    urls = render.Urls(ds, "photos")
    html = await template.render_async(cards=cued, semsearch=urls)
    assert 'class="semsearch-card" data-match="weak"' in html and '<span class="semsearch-match"' in html
    plain_html = await template.render_async(cards=plain, semsearch=urls)
    assert "semsearch-match" not in plain_html and "data-match" not in plain_html
