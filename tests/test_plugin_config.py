"""The plugin's settings (``plugins: semsearch-sqlite:`` in datasette.yaml on 1.0a, in
metadata on 0.65), per database, and serving an immutable file (``datasette -i``).

Runs on Datasette 0.65 and 1.0a (``make test-native``); the database is the real ingest
pipeline's output (``plugin_photos`` in conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from datasette.app import Datasette
from PIL import Image

from datasette_plugin import config, upload

IS_1_0 = hasattr(Datasette, "allowed")
PLUGIN = "semsearch-sqlite"
CARD = 'class="semsearch-card"'


def make_ds(
    db: str, settings: dict[str, Any] | None = None, per_db: dict[str, Any] | None = None, immutable: bool = False
) -> Datasette:
    """Datasette on ``db`` with plugin ``settings`` (top level) and ``per_db`` (database level):
    datasette.yaml's ``config`` on 1.0a, metadata on 0.65, as each reads ``plugin_config``."""
    block: dict[str, Any] = {}
    if settings is not None:
        block["plugins"] = {PLUGIN: settings}
    if per_db is not None:
        block["databases"] = {Path(db).stem: {"plugins": {PLUGIN: per_db}}}
    kwargs: dict[str, Any] = {("config" if IS_1_0 else "metadata"): block} if block else {}
    return Datasette([], immutables=[db], **kwargs) if immutable else Datasette([db], **kwargs)


async def get(ds: Datasette, path: str, **kwargs: Any) -> Any:
    await ds.invoke_startup()
    return await ds.client.get(path, follow_redirects=True, **kwargs)


def card_count(html: str) -> int:
    return html.count(CARD)


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buf, "PNG")
    return buf.getvalue()


async def post_upload(ds: Datasette, data: bytes, **fields: str) -> Any:
    """POST the upload form as a browser would (csrftoken first, as asgi-csrf requires)."""
    page = await get(ds, "/photos/-/semsearch/upload")
    token = re.search(r'name="csrftoken" value="([^"]*)"', page.text)
    form = {"csrftoken": token.group(1) if token else "", **fields}
    cookies = {"ds_csrftoken": page.cookies["ds_csrftoken"]} if "ds_csrftoken" in page.cookies else {}
    return await ds.client.post(
        "/photos/-/semsearch/upload", data=form, files={"image": ("query.png", data, "image/png")}, cookies=cookies
    )


@pytest.fixture
def db(plugin_photos: dict[str, Any]) -> str:
    return plugin_photos["db"]


def image_count(db: str) -> int:
    # immutable: the test itself must not leave a -wal/-shm beside a shipped file
    conn = sqlite3.connect(Path(db).resolve().as_uri() + "?immutable=1", uri=True)
    try:
        return conn.execute("select count(*) from images").fetchone()[0]
    finally:
        conn.close()


# -- settings ------------------------------------------------------------------------------


def test_settings_defaults_and_validation(caplog: pytest.LogCaptureFixture, db: str) -> None:
    assert config.settings(make_ds(db), "photos") == config.Settings()
    ds = make_ds(db, {"per_page": 0, "max_k": "lots", "uploads": "no", "thumbnail_px": 96, "colour": "red"})
    with caplog.at_level(logging.WARNING, logger="datasette_plugin.config"):
        found = config.settings(ds, "photos")
    # the one good value is used, each bad one falls back to its default with a warning naming it
    assert found == config.Settings(thumbnail_px=96)
    for name in ("per_page", "max_k", "uploads", "colour"):
        assert any(f"{PLUGIN}.{name}" in r.getMessage() for r in caplog.records), name
    # per_page never exceeds max_k
    assert config.settings(make_ds(db, {"per_page": 50, "max_k": 7}), "photos").per_page == 7


@pytest.mark.asyncio
async def test_per_page_is_the_default_k_and_max_k_its_ceiling(db: str) -> None:
    total = image_count(db)
    ds = make_ds(db, {"per_page": 3, "max_k": 5})
    r = await get(ds, "/photos/-/semsearch?q=cat&all=1")
    assert r.status_code == 200 and card_count(r.text) == 3
    assert "page=2" in r.text  # per_page results a page, the rest on the next ones
    r = await get(ds, "/photos/-/semsearch?q=cat&k=50&all=1")
    assert card_count(r.text) == 5 < total
    r = await get(ds, "/photos/-/semsearch/words?q=cat")
    assert r.text.count("<tr>") - 1 == 3  # the header row, then one row per word
    r = await get(ds, "/photos/-/semsearch/image/1?k=50")
    # visual and semantic neighbours, at most max_k each
    assert card_count(r.text.split('id="visual"', 1)[1]) == 2 * 5  # (near-duplicates come before)
    # unconfigured: the defaults, not capped at 5
    r = await get(make_ds(db), "/photos/-/semsearch?q=cat&k=50&all=1")
    assert card_count(r.text) == min(total, config.Settings().max_k)


@pytest.mark.asyncio
async def test_a_database_setting_wins_over_the_top_level(db: str) -> None:
    ds = make_ds(db, {"per_page": 4, "thumbnail_px": 64}, per_db={"per_page": 2})
    assert config.settings(ds, "photos") == config.Settings(per_page=2, thumbnail_px=64)
    r = await get(ds, "/photos/-/semsearch?q=car")
    assert card_count(r.text) == 2
    # the grid's thumbnail box follows thumbnail_px
    assert "--semsearch-thumb: 64px" in r.text


@pytest.mark.asyncio
async def test_uploads_off_for_a_database(db: str) -> None:
    ds = make_ds(db, per_db={"uploads": False})
    r = await get(ds, "/photos/-/semsearch/upload")
    assert r.status_code == 200
    assert upload.UPLOADS_OFF in r.text and 'type="file"' not in r.text
    r = await post_upload(ds, png_bytes())
    assert r.status_code == 403 and upload.UPLOADS_OFF in r.text and CARD not in r.text
    # the other pages are unaffected
    assert (await get(ds, "/photos/-/semsearch?q=cat")).status_code == 200


@pytest.mark.asyncio
async def test_max_upload_bytes(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make_ds(db, {"max_upload_bytes": 4096})
    r = await get(ds, "/photos/-/semsearch/upload")
    assert "At most 4 KB." in r.text
    monkeypatch.setattr(upload, "UPLOAD_SLACK", 0)  # the limit is the image's own size
    big = png_bytes((16, 16)) + b"\0" * 5000
    r = await post_upload(ds, big)
    assert r.status_code == 413 and "too large" in r.text
    assert upload.byte_size(20 * 1024 * 1024) == "20 MB" and upload.byte_size(1536) == "1.5 KB"


# -- an immutable, read-only file (datasette -i, as datasette publish serves it) -------------


@pytest.fixture
def shipped(db: str, tmp_path: Path) -> Path:
    """A copy of the database in a folder nobody may write to, the file read-only."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    path = folder / "photos.db"
    shutil.copyfile(db, path)
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield path
    folder.chmod(stat.S_IRWXU)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.asyncio
async def test_immutable_read_only_file_serves_every_page_and_function(shipped: Path) -> None:
    before = sha256(shipped)
    ds = make_ds(str(shipped), immutable=True)
    assert ds.databases["photos"].is_mutable is False
    for path in (
        "/photos/-/semsearch?q=cat",
        "/photos/-/semsearch/image/1?focus=cat",
        "/photos/-/semsearch/words?q=cat",
        "/photos/-/semsearch/upload",
        "/photos/-/semsearch/report",
        "/photos/images?_size=3",
        "/photos",
    ):
        r = await get(ds, path)
        assert r.status_code == 200, (path, r.text[:500])
    r = await get(ds, "/photos/-/semsearch?q=cat&all=1")
    assert card_count(r.text) == min(image_count(str(shipped)), config.Settings().per_page)
    r = await get(ds, "/photos/-/semsearch/thumb/1.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    for sql in (
        "select * from similar_images('cat', 3)",
        "select * from similar_to_image(1, 3, 'semantic')",
        "select * from similar_images_focused(1, 'cat', 3)",
        "select * from image_tags(1, 3)",
        "select * from similar_words('cat', 3)",
        "select image_id from vec_semantic where embedding match semsearch_text_vector('cat') and k = 3",
    ):
        r = await get(ds, "/photos.json?" + urlencode({"sql": sql, "_shape": "array"}))
        assert r.status_code == 200 and len(r.json()) == 3, (sql, r.text[:500])
    # nothing was written: no journal, no WAL, the bytes as shipped
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["photos.db"]
    assert sha256(shipped) == before


@pytest.mark.slow
@pytest.mark.asyncio
async def test_upload_searches_an_immutable_read_only_file(shipped: Path) -> None:
    before = sha256(shipped)
    ds = make_ds(str(shipped), immutable=True)
    r = await post_upload(ds, png_bytes(), k="3")
    assert r.status_code == 200 and card_count(r.text) == 3, r.text[-1500:]
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["photos.db"] and sha256(shipped) == before
