"""ingest end to end with a real (tiny) Keras backbone, real image files and real GloVe."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import ImageError, StoreError
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.queries.search import image_tags, similar_images, similar_to_image
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL

from .helpers import COLOURS, draw, make_folder, rows

pytestmark = pytest.mark.slow


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "images")


def options(tiny_backbone: str, **kw: object) -> IngestOptions:
    return IngestOptions(backbone=tiny_backbone, batch_size=4, **kw)  # type: ignore[arg-type]


def test_ingest_stores_everything_and_answers_queries(folder: Path, tmp_path: Path, tiny_backbone: str) -> None:
    db = tmp_path / "p.db"
    stats = ingest(folder, db, options(tiny_backbone))
    assert (stats.added, stats.failed, stats.embedded) == (12, 0, 12)
    with Store.open(db) as s:
        c = s.conn
        assert c.execute("select count(*) from images where thumbnail is not null").fetchone() == (12,)
        assert c.execute("select count(distinct label) from images").fetchone() == (3,)
        assert c.execute(f"select count(*) from {VEC_VISUAL}").fetchone() == (12,)
        assert c.execute(f"select count(*) from {VEC_SEMANTIC}").fetchone() == (12,)
        assert c.execute("select count(*) from image_classes").fetchone() == (12,)
        assert c.execute("select path from images order by id limit 1").fetchone() == ("car/car_0.png",)
        thumb = c.execute("select thumbnail from images limit 1").fetchone()[0]
        assert Image.open(__import__("io").BytesIO(thumb)).format == "JPEG"
        meta = s.meta()
        assert meta["backbone"] == str(Path(tiny_backbone).resolve())
        assert meta["backbone_weights_sha256"]
        assert "glove.6B.50d" in meta["words_source"]
        hits = similar_images(c, "cat", 4).hits
        assert len(hits) == 4
        assert sum(h.label == "cat" for h in hits) >= 3
        near = similar_to_image(c, hits[0].image_id, 3).hits
        assert hits[0].image_id not in [h.image_id for h in near]
        assert len(image_tags(c, "cat/cat_0.png", 5).hits) == 5


def test_rerun_skips_unchanged_then_handles_changes(folder: Path, tmp_path: Path, tiny_backbone: str) -> None:
    db = tmp_path / "p.db"
    ingest(folder, db, options(tiny_backbone))
    before = rows(db)
    started = time.perf_counter()
    stats = ingest(folder, db, IngestOptions())  # the DB remembers its backbone
    assert (stats.added, stats.updated, stats.embedded, stats.unchanged) == (0, 0, 0, 12)
    assert time.perf_counter() - started < 30
    after = rows(db)
    assert after["images"] == before["images"]
    assert np.array_equal(after["visual"][1], before["visual"][1])

    # touched but same bytes: no re-embedding
    os.utime(folder / "cat" / "cat_0.png", (1, 1))
    # changed bytes: re-embedded in place
    draw(folder / "dog" / "dog_1.png", (250, 250, 0), 99)
    # moved: recognised by hash
    (folder / "pets").mkdir()
    shutil.move(folder / "cat" / "cat_2.png", folder / "pets" / "cat_2.png")
    # deleted: pruned
    (folder / "car" / "car_3.png").unlink()
    # new
    draw(folder / "car" / "car_9.png", COLOURS["car"], 7)
    stats = ingest(folder, db, IngestOptions())
    assert (stats.added, stats.updated, stats.moved, stats.removed, stats.embedded) == (1, 1, 1, 1, 2)
    with Store.open(db) as s:
        moved = s.conn.execute("select label from images where path = 'pets/cat_2.png'").fetchone()
        assert moved == ("pets",)
        assert s.conn.execute("select count(*) from images").fetchone() == (12,)
        assert s.conn.execute(f"select count(*) from {VEC_SEMANTIC}").fetchone() == (12,)
        orphans = s.conn.execute(f"select count(*) from {VEC_VISUAL} where image_id not in (select id from images)")
        assert orphans.fetchone() == (0,)


def test_bad_files_are_reported_and_skipped(folder: Path, tmp_path: Path, tiny_backbone: str) -> None:
    (folder / "cat" / "empty.jpg").write_bytes(b"")
    (folder / "cat" / "notes.jpg").write_text("not an image")
    good = (folder / "dog" / "dog_0.png").read_bytes()
    (folder / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    (folder / "cat" / ".hidden.png").write_bytes(good)
    stats = ingest(folder, tmp_path / "p.db", options(tiny_backbone))
    assert stats.added == 12
    reasons = {Path(p).name: r for p, r in stats.problems}
    assert reasons == {
        "empty.jpg": "empty file (0 bytes)",
        "notes.jpg": "not an image (cannot identify format)",
        "cut.png": "truncated or corrupt image data",
    }
    with pytest.raises(ImageError, match=r"empty.jpg: empty file \(0 bytes\) \(--strict"):
        ingest(folder, tmp_path / "q.db", options(tiny_backbone, strict=True))


def test_other_backbone_is_refused_without_rebuild(folder: Path, tmp_path: Path, tiny_backbone: str) -> None:
    db = tmp_path / "p.db"
    ingest(folder, db, options(tiny_backbone))
    with pytest.raises(StoreError, match=r"embedded with backbone .* not 'efficientnet-lite0'.*--rebuild"):
        ingest(folder, db, IngestOptions(backbone="efficientnet-lite0"))


def test_cli_ingest_summary_and_json_search(folder: Path, tmp_path: Path, tiny_backbone: str) -> None:
    db = tmp_path / "p.db"
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(folder), str(db), "--backbone", tiny_backbone, "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "12 added, 0 updated, 0 moved, 0 unchanged, 0 removed, 0 failed" in result.stderr
    assert "embedding" in result.stderr  # the progress bar
    result = runner.invoke(cli, ["ingest", str(folder), str(db), "-q"])
    assert result.exit_code == 0 and result.stderr == ""
    result = runner.invoke(cli, ["search", str(db), "dog", "--json", "-k", "3"])
    assert result.exit_code == 0
    hits = json.loads(result.stdout)["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    result = runner.invoke(cli, ["ingest", str(tmp_path / "missing"), str(db)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'missing'}: not a folder of images; give the folder that holds them\n"


def test_second_writer_is_refused(folder: Path, tmp_path: Path, tiny_backbone: str) -> None:
    import fcntl

    db = tmp_path / "p.db"
    ingest(folder, db, options(tiny_backbone))
    with open(db, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(StoreError, match="another semsearch-sqlite process is writing"):
            ingest(folder, db, IngestOptions())
    # readers are unaffected by the lock
    assert sqlite3.connect(db).execute("select count(*) from images").fetchone() == (12,)
