"""Photo metadata: EXIF written by Pillow (GPS IFD included) read into images columns at
ingest, old databases migrated and filled without re-embedding, bad fields ignored."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from semsearch_sqlite.media.exif import PhotoMetadata, parse_exif_date, read_metadata
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.storage.store import PHOTO_METADATA_COLUMNS, Store

from .helpers import photo


def test_full_exif_is_read(tmp_path: Path) -> None:
    meta = read_metadata(photo(tmp_path / "a.jpg"))
    assert meta == PhotoMetadata("2019-07-04T12:30:05+02:00", "Canon EOS 5D", "EF 50mm f/1.8", -33.865, 151.21)


def test_make_is_not_repeated_and_datetime_is_the_fallback(tmp_path: Path) -> None:
    meta = read_metadata(photo(tmp_path / "b.jpg", make="NIKON CORPORATION", model="D750", original=None, lens=None))
    assert meta.camera == "NIKON CORPORATION D750"
    assert meta.taken_at == "2020-01-02T03:04:05"
    assert meta.lens is None


@pytest.mark.parametrize(
    "gps",
    [
        {1: "N", 2: (95.0, 0.0, 0.0), 3: "E", 4: (10.0, 0.0, 0.0)},  # latitude beyond the pole
        {1: "N", 2: (10.0, 0.0, 0.0), 3: "W", 4: (190.0, 0.0, 0.0)},  # longitude beyond 180
        {1: "N", 2: (10.0, 75.0, 0.0), 3: "E", 4: (10.0, 0.0, 0.0)},  # 75 minutes
        {1: "N", 2: (0.0, 0.0, 0.0), 3: "E", 4: (0.0, 0.0, 0.0)},  # no fix: 0, 0
        {1: "X", 2: (10.0, 0.0, 0.0), 3: "E", 4: (10.0, 0.0, 0.0)},  # no hemisphere
        {2: (10.0, 0.0, 0.0), 4: (10.0, 0.0, 0.0)},  # refs missing
    ],
)
def test_absurd_gps_is_ignored_and_the_other_fields_kept(tmp_path: Path, gps: dict[int, Any]) -> None:
    meta = read_metadata(photo(tmp_path / "g.jpg", gps=gps))
    assert (meta.latitude, meta.longitude) == (None, None)
    assert meta.camera == "Canon EOS 5D" and meta.taken_at == "2019-07-04T12:30:05+02:00"


@pytest.mark.parametrize(
    "value",
    ["0000:00:00 00:00:00", "2019:02:30 10:00:00", "    ", "1700:01:01 00:00:00", "9999:01:01 00:00:00", "yesterday"],
)
def test_bogus_dates_are_ignored(value: str) -> None:
    assert parse_exif_date(value) is None


def test_bogus_original_date_falls_back_and_a_bad_offset_is_dropped(tmp_path: Path) -> None:
    meta = read_metadata(photo(tmp_path / "d.jpg", original="0000:00:00 00:00:00"))
    assert meta.taken_at == "2020-01-02T03:04:05"
    assert read_metadata(photo(tmp_path / "e.jpg", offset="+99:00")).taken_at == "2019-07-04T12:30:05"


def test_no_exif_and_not_an_image_give_empty_metadata(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe1 not really exif")
    assert read_metadata(plain) == PhotoMetadata() == read_metadata(junk)


def _metadata(db: Path) -> dict[str, tuple[Any, ...]]:
    with Store.open(db) as s:
        cols = ", ".join(PHOTO_METADATA_COLUMNS)
        return {r[0]: tuple(r[1:]) for r in s.conn.execute(f"select path, {cols} from images")}


@pytest.mark.slow
def test_ingest_fills_columns_and_old_databases_get_them_without_re_embedding(
    tmp_path: Path, tiny_backbone: str
) -> None:
    images = tmp_path / "images"
    photo(images / "beach" / "sydney.jpg")
    photo(images / "beach" / "nowhere.jpg", (200, 180, 90), gps={}, make=None, model="X100V", lens=None)
    Image.new("RGB", (64, 48), (20, 200, 20)).save(images / "beach" / "plain.png")
    db = tmp_path / "p.db"
    ingest(images, db, IngestOptions(backbone=tiny_backbone, workers=1))
    want = {
        "beach/sydney.jpg": ("2019-07-04T12:30:05+02:00", "Canon EOS 5D", "EF 50mm f/1.8", -33.865, 151.21),
        "beach/nowhere.jpg": ("2019-07-04T12:30:05+02:00", "X100V", None, None, None),
        "beach/plain.png": (None, None, None, None, None),
    }
    assert _metadata(db) == want

    # a database from before the metadata columns: undo m002, as the old version left it
    conn = sqlite3.connect(db)
    conn.execute("drop index images_unread")  # m005's, on metadata_read_at
    conn.execute("drop index images_taken_at")
    conn.execute("drop index images_camera")
    for column in (*PHOTO_METADATA_COLUMNS, "metadata_read_at"):
        conn.execute(f"alter table images drop column {column}")
    conn.execute("delete from _sqlite_migrations where name = 'm002_photo_metadata'")
    # and m005, whose indexes came after
    conn.execute("drop index images_file")
    conn.execute("delete from _sqlite_migrations where name = 'm005_file_index'")
    conn.commit()
    conn.close()
    with Store.open(db, create=True) as s:  # the upgrade: columns there, empty
        assert set(_metadata(db).values()) == {(None,) * 5}
    stats = ingest(images, db, IngestOptions(workers=1))
    assert stats.embedded == 0 and stats.unchanged == 3
    assert _metadata(db) == want
    with Store.open(db) as s:
        assert s.images_without_metadata() == []


@pytest.mark.slow
@pytest.mark.asyncio
async def test_image_page_shows_when_what_and_where(tmp_path: Path, tiny_backbone: str) -> None:
    from datasette.app import Datasette

    images = tmp_path / "images"
    photo(images / "beach" / "sydney.jpg")
    db = tmp_path / "photos.db"
    ingest(images, db, IngestOptions(backbone=tiny_backbone, workers=1))
    ds = Datasette([str(db)])
    await ds.invoke_startup()
    r = await ds.client.get("/photos/-/semsearch/image/1", follow_redirects=True)
    assert r.status_code == 200, r.text
    assert '<dd class="semsearch-taken-at">2019-07-04T12:30:05+02:00</dd>' in r.text
    assert '<dd class="semsearch-camera">Canon EOS 5D, EF 50mm f/1.8</dd>' in r.text
    assert "-33.86500, 151.21000</a>" in r.text
