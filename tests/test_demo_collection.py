"""The demo collection in examples/ (what ``make demo`` ingests): its shape and credits,
its made-up dates and places as EXIF and as ingest stores them, and
examples/build_demo.py, which selects the photos and writes that EXIF."""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from semsearch_sqlite.media.exif import read_metadata
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
IMAGES = EXAMPLES / "images"
CALTECH = [ROOT.parent / "shared" / "data" / "caltech101-dev", ROOT.parent / "shared" / "data" / "caltech101-dev2"]
# "| `images/ferry/image_0001.jpg` | 2023-03-13 10:56:56+11:00 | Sydney Harbour, Australia | -33.85972, 151.21127 |"
_ROW = re.compile(r"^\| `images/([^`]+)` \| (\S+ \S+) \| ([^|]+) \| ([^|]+) \|$", re.MULTILINE)


@functools.cache
def _build_demo() -> ModuleType:
    """examples/build_demo.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_demo", EXAMPLES / "build_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _added_exif() -> dict[str, tuple[str, float | None, float | None]]:
    """SOURCES.md's table of made-up EXIF: path -> (ISO date, latitude, longitude)."""
    out = {}
    for path, taken, _place, where in _ROW.findall((EXAMPLES / "SOURCES.md").read_text(encoding="utf-8")):
        lat, lon = (None, None) if where.strip() == "-" else map(float, where.split(","))
        out[path] = (taken.replace(" ", "T"), lat, lon)
    return out


def test_the_demo_is_a_few_hundred_small_labelled_photos_with_credits() -> None:
    folders = sorted(d.name for d in IMAGES.iterdir())
    files = sorted(IMAGES.rglob("*.*"))
    assert 10 <= len(folders) <= 20 and 150 <= len(files) <= 300
    assert all(f.parent.parent == IMAGES and f.suffix == ".jpg" for f in files)  # label/file.jpg only
    assert sum(f.stat().st_size for f in files) < 5_000_000
    sources = (EXAMPLES / "SOURCES.md").read_text(encoding="utf-8")
    assert "Fei-Fei" in sources and "CC BY 4.0" in sources and "made up" in sources
    assert all(f"| `{label}` |" in sources for label in folders)
    # the "new photo" of the README's similar/tags examples is not part of the collection
    assert (EXAMPLES / "new" / "chelsea.jpg").is_file() and "new/chelsea.jpg" in sources


def test_the_dated_and_located_photos_carry_what_sources_md_lists() -> None:
    added = _added_exif()
    assert 24 <= len(added) and 24 <= sum(lat is not None for _, lat, _ in added.values())
    for f in sorted(IMAGES.rglob("*.jpg")):
        meta = read_metadata(f)
        taken, lat, lon = added.get(f.relative_to(IMAGES).as_posix(), (None, None, None))
        assert meta.taken_at == taken, f
        assert meta.latitude == pytest.approx(lat, abs=1e-5) and meta.longitude == pytest.approx(lon, abs=1e-5), f


@pytest.mark.slow
def test_ingest_stores_the_demo_dates_and_places(tmp_path: Path, tiny_backbone: str) -> None:
    added = _added_exif()
    picked = ["ferry/image_0001.jpg", "ferry/image_0005.jpg", "llama/image_0002.jpg", "rooster/image_0005.jpg"]
    for path in picked:
        (tmp_path / "images" / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(IMAGES / path, tmp_path / "images" / path)
    ingest(tmp_path / "images", tmp_path / "demo.db", IngestOptions(backbone=tiny_backbone, workers=1))
    with sqlite3.connect(tmp_path / "demo.db") as conn:
        stored = {r[0]: r[1:] for r in conn.execute("select path, taken_at, latitude, longitude from images")}
    assert set(stored) == set(picked)
    assert stored["ferry/image_0005.jpg"] == (None, None, None)  # not one of the dated photos
    assert stored["rooster/image_0005.jpg"] == (added["rooster/image_0005.jpg"][0], None, None)  # dated, no place
    for path in ("ferry/image_0001.jpg", "llama/image_0002.jpg"):
        taken, lat, lon = stored[path]
        assert taken == added[path][0] and lat < 0
        assert (lat, lon) == (pytest.approx(added[path][1], abs=1e-5), pytest.approx(added[path][2], abs=1e-5))


def test_exif_is_spliced_in_without_touching_the_pixels(tmp_path: Path) -> None:
    demo = _build_demo()
    folder = tmp_path / "caltech" / "ferry"
    folder.mkdir(parents=True)
    for i in range(1, 6):  # two greyscale photos first: colour ones are preferred
        Image.new("L" if i <= 2 else "RGB", (60 + i, 40), 90 if i <= 2 else (20 * i, 90, 160)).save(
            folder / f"image_{i:04d}.jpg"
        )
    picked = demo.select([tmp_path / "caltech"], "ferry", 3)
    assert [p.name for p in picked] == ["image_0003.jpg", "image_0004.jpg", "image_0005.jpg"]

    tag = demo.made_up_exif("ferry", "image_0003.jpg")
    assert tag == demo.made_up_exif("ferry", "image_0003.jpg")  # seeded by the name
    out = tmp_path / "out.jpg"
    out.write_bytes(demo.with_exif(picked[0].read_bytes(), demo.exif_bytes(tag)))
    meta = read_metadata(out)
    assert meta.taken_at == f"{tag.taken.isoformat()}{tag.offset}" and tag.offset == "+11:00"
    assert (meta.latitude, meta.longitude) == (pytest.approx(tag.lat, abs=1e-6), pytest.approx(tag.lon, abs=1e-6))
    with Image.open(out) as a, Image.open(picked[0]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="not a JPEG"):
        demo.with_exif(b"\x89PNG\r\n", demo.exif_bytes(tag))


@pytest.mark.skipif(not all(d.is_dir() for d in CALTECH), reason="needs ../shared/data/caltech101-dev and -dev2")
def test_build_demo_rebuilds_the_committed_collection_byte_for_byte(tmp_path: Path) -> None:
    demo = _build_demo()
    assert demo.main(["--out", str(tmp_path / "images"), "--sources-md", str(tmp_path / "SOURCES.md")]) == 0
    built = sorted(p.relative_to(tmp_path / "images") for p in (tmp_path / "images").rglob("*.jpg"))
    assert built == sorted(p.relative_to(IMAGES) for p in IMAGES.rglob("*.jpg"))
    assert all((tmp_path / "images" / p).read_bytes() == (IMAGES / p).read_bytes() for p in built)
    assert (tmp_path / "SOURCES.md").read_text(encoding="utf-8") == (EXAMPLES / "SOURCES.md").read_text(
        encoding="utf-8"
    )
    assert demo.main(["--out", str(tmp_path / "images")]) == 1  # no silent overwrite without --replace
