"""Duplicates to review: the keeper choice, the library-wide Datasette page (groups,
keeper, paging, escaping), ``duplicate_images()``'s thumbnail and keeper columns, and the
CLI table (summary first, keeper first).

The database holds real Caltech-101 photos and copies made from them (resized, recompressed,
re-encoded under another name), embedded by the real ingest with the bundled
EfficientNet-Lite0.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from datasette.app import Datasette
from PIL import Image

from semsearch_sqlite.cli import cli
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.queries.duplicates import choose_keeper, human_size
from semsearch_sqlite.queries.sqlfuncs import register_functions
from semsearch_sqlite.storage.store import Store

pytestmark = pytest.mark.slow
PHOTOS = Path("/work/shared/data/caltech101-dev")
THRESHOLD = "0.15"
EVIL_LABEL = "<script>alert(1)<script> crab"
EVIL_FILE = "<img src=x onerror=alert(1)>.jpg"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two groups of copies (elephant: original, 3/4-size copy, quality-30 copy; crab:
    a re-encoded full-size copy under an HTML file name and label, and a 3/4-size copy)
    among photos that have none."""
    if not PHOTOS.is_dir():
        pytest.skip(f"{PHOTOS} is not here")
    root = tmp_path_factory.mktemp("dup_page")
    images = root / "images"
    for label in ("elephant", "cup"):
        (images / label).mkdir(parents=True)
        for name in ("image_0001.jpg", "image_0002.jpg"):
            shutil.copy(PHOTOS / label / name, images / label / name)
    elephant = Image.open(images / "elephant" / "image_0001.jpg")
    elephant.resize((elephant.width * 3 // 4, elephant.height * 3 // 4)).save(images / "elephant" / "small.jpg")
    elephant.save(images / "elephant" / "q30.jpg", quality=30)
    crab = Image.open(PHOTOS / "crab" / "image_0001.jpg")
    (images / EVIL_LABEL).mkdir()
    crab.save(images / EVIL_LABEL / EVIL_FILE, quality=95)
    crab.resize((crab.width * 3 // 4, crab.height * 3 // 4)).save(images / EVIL_LABEL / "crab_small.jpg")
    db = root / "dups.db"
    stats = ingest(images, db, IngestOptions(backbone="efficientnet-lite0", vocab_size=20000, workers=1))
    assert stats.added == 8, stats.problems
    return {"db": str(db), "images": images, "elephant": elephant.size, "crab": crab.size}


def ids_by_path(db: str) -> dict[str, int]:
    with Store.open(db) as s:
        return {p: i for i, p in s.conn.execute("select id, path from images")}


async def get(db: str, path: str) -> Any:
    ds = Datasette([db])
    await ds.invoke_startup()
    return await ds.client.get(path)


def group_sections(text: str) -> list[str]:
    return text.split('<section class="semsearch-section semsearch-dup-group"')[1:]


def card_titles(section: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<a href="[^"]+/image/\d+" title="([^"]*)"', section)]


@pytest.mark.asyncio
async def test_the_page_shows_each_group_keeper_first_with_its_facts(library: dict[str, Any]) -> None:
    r = await get(library["db"], f"/dups/-/semsearch/duplicates?threshold={THRESHOLD}")
    assert r.status_code == 200
    assert "2 groups of near-duplicates, 5 photos" in r.text
    assert "the most pixels" in r.text and "then the largest file" in r.text  # the rule, said on the page
    elephant, crab = group_sections(r.text)
    assert card_titles(elephant)[0] == "elephant/image_0001.jpg"
    assert set(card_titles(elephant)) == {"elephant/image_0001.jpg", "elephant/small.jpg", "elephant/q30.jpg"}
    assert card_titles(crab) == [f"{EVIL_LABEL}/{EVIL_FILE}", f"{EVIL_LABEL}/crab_small.jpg"]
    # the keeper is marked and says why; the others show their distance to it
    for section in (elephant, crab):
        first, *others = section.split('<li class="semsearch-card')[1:]
        assert first.startswith(' semsearch-keeper"') and "semsearch-keeper-mark" in first
        assert all("semsearch-keeper" not in c and "semsearch-distance" in c for c in others)
    keeper_says = '<span class="semsearch-keeper-mark">keeper</span> '
    assert keeper_says + "same pixels, largest file (least recompressed)" in elephant
    w, h = library["crab"]
    assert keeper_says + f"most pixels ({w}\u00d7{h})" in crab
    w, h = library["elephant"]
    size = (library["images"] / "elephant" / "image_0001.jpg").stat().st_size
    assert f"{w}\u00d7{h} &middot; {human_size(size)} &middot; " in elephant
    assert 'src="/dups/-/semsearch/thumb/' in elephant


@pytest.mark.asyncio
async def test_groups_are_paged(library: dict[str, Any]) -> None:
    first = await get(library["db"], f"/dups/-/semsearch/duplicates?threshold={THRESHOLD}&k=1")
    assert len(group_sections(first.text)) == 1 and 'id="group-1"' in first.text
    assert "Showing <b>1&ndash;1</b> of 2" in first.text
    next_url = f"/dups/-/semsearch/duplicates?threshold={THRESHOLD}&amp;k=1&amp;page=2"
    assert f'href="{next_url}" rel="next"' in first.text
    second = await get(library["db"], html.unescape(next_url))
    assert len(group_sections(second.text)) == 1 and 'id="group-2"' in second.text
    assert card_titles(second.text)[0] == f"{EVIL_LABEL}/{EVIL_FILE}"
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text


@pytest.mark.asyncio
async def test_labels_and_paths_are_escaped(library: dict[str, Any]) -> None:
    r = await get(library["db"], f"/dups/-/semsearch/duplicates?threshold={THRESHOLD}")
    assert "<script>alert(1)" not in r.text and "<img src=x" not in r.text
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in r.text and "&lt;script&gt;alert(1)&lt;script&gt; crab" in r.text


@pytest.mark.asyncio
async def test_linked_from_the_plugins_pages_and_bad_thresholds_say_why(library: dict[str, Any]) -> None:
    r = await get(library["db"], "/dups/-/semsearch")
    assert '<a href="/dups/-/semsearch/duplicates">Duplicates</a>' in r.text
    r = await get(library["db"], "/dups/-/semsearch/duplicates?threshold=2")
    assert r.status_code == 400 and "threshold must be between 0 and 1" in r.text
    r = await get(library["db"], "/dups/-/semsearch/duplicates?threshold=0.000001")
    assert r.status_code == 200 and "0 groups of near-duplicates" in r.text and "No near-duplicates" in r.text


def test_the_sql_function_has_keeper_and_thumbnail_columns(library: dict[str, Any]) -> None:
    paths = ids_by_path(library["db"])
    with Store.open(library["db"]) as s:
        register_functions(s.conn)
        found = s.conn.execute(
            f"select group_id, rank, image_id, path, label, distance, keeper, why, width, height, size, date, "
            f"thumbnail from duplicate_images({THRESHOLD})"
        ).fetchall()
        stored = dict(s.conn.execute("select id, thumbnail from images"))
    assert [r[2] for r in found if r[0] == 1][0] == paths["elephant/image_0001.jpg"]
    for group in (1, 2):
        rows = [r for r in found if r[0] == group]
        assert [r[1] for r in rows] == list(range(1, len(rows) + 1))
        assert [r[6] for r in rows] == [1] + [0] * (len(rows) - 1)  # the keeper first
        assert rows[0][5] == 0 and rows[0][7] and all(r[7] is None for r in rows[1:])
        assert [r[5] for r in rows[1:]] == sorted(r[5] for r in rows[1:])
    for r in found:
        assert r[12] == stored[r[2]] and r[12][:2] == b"\xff\xd8"  # the stored JPEG thumbnail
        assert r[8] > 0 and r[9] > 0 and r[10] > 0 and r[11][:2] == "20"


def test_cli_table_prints_the_summary_first_and_the_keeper_first(library: dict[str, Any]) -> None:
    r = CliRunner().invoke(cli, ["duplicates", library["db"], "--threshold", THRESHOLD], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("2 groups of near-duplicates, 5 photos")
    assert lines[1].split() == ["group", "image_id", "path", "label", "distance", "size", "resolution", "date"]
    assert "0.0000" not in r.stdout
    rows = [line for line in lines[3:] if line.strip()]
    assert len(rows) == 5
    assert "elephant/image_0001.jpg" in rows[0] and " keeper " in rows[0]
    w, h = library["elephant"]
    assert f"{w}x{h}" in rows[0]
    by_group: dict[str, list[str]] = {}
    for line in rows:
        by_group.setdefault(line.split()[0], []).append(line)
    for group in by_group.values():
        assert " keeper " in group[0] and all(" keeper " not in line for line in group[1:])
        distances = [float(re.search(r"\s(0\.\d{4})\s", line).group(1)) for line in group[1:]]
        assert distances == sorted(distances) and all(d > 0 for d in distances)


def facts(width: int, height: int, size: int, taken_at: str | None = None, mtime: float | None = None) -> dict:
    return {
        "path": "p",
        "label": None,
        "width": width,
        "height": height,
        "size": size,
        "taken_at": taken_at,
        "mtime": mtime,
    }


@pytest.mark.parametrize(
    "group, keeper, why",
    [
        ({1: facts(640, 480, 10), 2: facts(1280, 960, 5)}, 2, "most pixels (1280\u00d7960)"),
        ({1: facts(640, 480, 10), 2: facts(640, 480, 50)}, 2, "same pixels, largest file"),
        (
            {1: facts(640, 480, 10, "2021-05-01T10:00:00"), 2: facts(640, 480, 10, "2020-01-01T09:00:00")},
            2,
            "earliest date",
        ),
        # no EXIF date: the file's modification time (1 January 2001 before 2002)
        ({1: facts(640, 480, 10, mtime=1.01e9), 2: facts(640, 480, 10, mtime=0.98e9)}, 2, "earliest date"),
        # an EXIF date and a file's time compare as dates (a file saved in 1970 before a photo of 2020)
        ({1: facts(640, 480, 10, mtime=1.0), 2: facts(640, 480, 10, "2020-01-01T09:00:00")}, 1, "earliest date"),
        ({3: facts(640, 480, 10), 2: facts(640, 480, 10)}, 2, "lowest id"),
    ],
)
def test_choose_keeper(group: dict[int, dict], keeper: int, why: str) -> None:
    chosen, reason = choose_keeper(group)
    assert chosen == keeper and why in reason


@pytest.mark.asyncio
async def test_the_sql_page_draws_the_thumbnail_column(library: dict[str, Any]) -> None:
    keeper = ids_by_path(library["db"])["elephant/image_0001.jpg"]
    r = await get(library["db"], f"/dups?sql=select+image_id,+keeper,+thumbnail+from+duplicate_images({THRESHOLD})")
    assert r.status_code == 200
    cells = re.findall(r'<td class="col-thumbnail">(.*?)</td>', r.text, re.S)
    assert len(cells) == 5 and all("<img" in c for c in cells)
    assert f'href="/dups/-/semsearch/image/{keeper}"' in cells[0]
