"""Export: ``--csv`` on every query command, ``Results.as_records`` / ``Collection.export``
in Python, and the search and image pages' CSV/JSON downloads (every result, not one
page), with absolute paths under the ingested folder.

The database is the real ingest pipeline's output (``plugin_photos`` in conftest.py).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from datasette.app import Datasette

import semsearch_sqlite
from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.queries.export import csv_text, export_text, records

IMAGE_HEADER = ["rank", "image_id", "path", "abs_path", "label", "distance"]


@pytest.fixture
def photos_db(plugin_photos: dict[str, Any]) -> str:
    return plugin_photos["db"]


def image_count(db: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from images").fetchone()[0]


def some_id(db: str, label: str = "cat") -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select min(id) from images where label = ?", [label]).fetchone()[0]


def read_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    found = list(reader)
    return list(reader.fieldnames or []), found


def assert_absolute_paths(found: list[dict[str, str]], images: str) -> None:
    assert found
    for row in found:
        assert row["abs_path"] == str(Path(images) / row["path"])
        assert Path(row["abs_path"]).is_file()


# -- the CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["search", "{db}", "cat"],
        ["similar", "{db}", "{id}"],
        ["focus", "{db}", "{id}", "cat"],
    ],
)
def test_image_commands_print_csv_with_absolute_paths(plugin_photos: dict[str, Any], command: list[str]) -> None:
    db = plugin_photos["db"]
    args = [a.format(db=db, id=some_id(db)) for a in command] + ["-k", "4", "--csv"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    header, found = read_csv(r.stdout)
    assert header[: len(IMAGE_HEADER)] == IMAGE_HEADER
    assert "taken_at" in header and "latitude" in header
    assert [int(row["rank"]) for row in found] == [1, 2, 3, 4]
    assert_absolute_paths(found, plugin_photos["images"])
    # the same hits, in the same order, as --json
    r = CliRunner().invoke(cli, [a for a in args if a != "--csv"] + ["--json"])
    assert [h["image_id"] for h in json.loads(r.stdout)["hits"]] == [int(row["image_id"]) for row in found]


@pytest.mark.parametrize("command", [["tags", "{db}", "{id}"], ["words", "{db}", "cat"]])
def test_word_commands_print_csv(photos_db: str, command: list[str]) -> None:
    args = [a.format(db=photos_db, id=some_id(photos_db)) for a in command] + ["-k", "3", "--csv"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    header, found = read_csv(r.stdout)
    assert header == ["rank", "word", "distance", "confidence"]
    assert len(found) == 3 and all(row["word"] for row in found)


def test_duplicates_prints_csv(plugin_photos: dict[str, Any]) -> None:
    # at threshold 1 every photo has a near-duplicate: one group holding them all
    r = CliRunner().invoke(cli, ["duplicates", plugin_photos["db"], "--threshold", "1", "--csv"])
    assert r.exit_code == 0, r.output
    header, found = read_csv(r.stdout)
    assert header[:5] == ["group", "rank", "image_id", "path", "abs_path"]
    assert {"keeper", "why", "width", "height", "size", "date"} <= set(header)
    assert len(found) == image_count(plugin_photos["db"])
    assert found[0]["keeper"] == "True" and found[0]["why"]
    assert_absolute_paths(found, plugin_photos["images"])


def test_csv_and_json_together_are_a_usage_error(photos_db: str) -> None:
    r = CliRunner().invoke(cli, ["search", photos_db, "cat", "--csv", "--json"])
    assert r.exit_code == 2 and "--csv and --json" in r.stderr


def test_csv_keeps_unknown_words_off_stdout(photos_db: str) -> None:
    r = CliRunner().invoke(cli, ["search", photos_db, "cat zzqxj", "-k", "2", "--csv"])
    assert r.exit_code == 0, r.output
    assert "zzqxj" in r.stderr and "zzqxj" not in r.stdout
    assert len(read_csv(r.stdout)[1]) == 2


# -- Python ----------------------------------------------------------------------------------


def test_collection_export_and_records(plugin_photos: dict[str, Any]) -> None:
    with semsearch_sqlite.open(plugin_photos["db"]) as photos:
        assert photos.images_root == str(Path(plugin_photos["images"]).resolve())
        results = photos.search("dog", k=5)
        header, found = read_csv(photos.export(results, "csv"))
        assert header[: len(IMAGE_HEADER)] == IMAGE_HEADER
        assert [int(row["image_id"]) for row in found] == [h.image_id for h in results.hits]
        data = json.loads(photos.export(results, "json"))
        assert [row["path"] for row in data["rows"]] == [h.path for h in results.hits]
        assert data["unknown"] == []
        with pytest.raises(QueryError, match="csv, json"):
            photos.export(results, "xml")
        # without a known folder there is no abs_path column
        plain = results.as_records()
        assert "abs_path" not in plain[0] and plain[0]["path"] == results.hits[0].path
        words = photos.words("cat", 2)
        assert [r["word"] for r in words.as_records()] == [h.word for h in words.hits]


def test_csv_writer_quotes_and_empty_results() -> None:
    text = csv_text([{"path": 'a,"b"\n.jpg', "label": None}])
    assert read_csv(text)[1] == [{"path": 'a,"b"\n.jpg', "label": ""}]
    assert export_text([], "csv", ["rank", "path"]) == "rank,path\n"
    assert records([], "/x") == []


# -- the pages' downloads ------------------------------------------------------------------


async def get(ds: Datasette, path: str) -> Any:
    await ds.invoke_startup()
    return await ds.client.get(path)


@pytest.mark.asyncio
async def test_search_page_download_holds_every_result(plugin_photos: dict[str, Any]) -> None:
    ds = Datasette([plugin_photos["db"]])
    page = await get(ds, "/photos/-/semsearch?q=cat&k=4")
    assert page.status_code == 200
    assert '/photos/-/semsearch/export.csv?q=cat"' in page.text  # not k: the download has all of them
    r = await get(ds, "/photos/-/semsearch/export.csv?q=cat")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in r.headers["content-disposition"]
    header, found = read_csv(r.text)
    assert header[: len(IMAGE_HEADER)] == IMAGE_HEADER
    assert len(found) == image_count(plugin_photos["db"]) > 4  # the page showed 4
    assert [int(row["rank"]) for row in found] == list(range(1, len(found) + 1))
    assert_absolute_paths(found, plugin_photos["images"])
    r = await get(ds, "/photos/-/semsearch/export.json?q=cat")
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert [row["image_id"] for row in r.json()["rows"]] == [int(row["image_id"]) for row in found]


@pytest.mark.asyncio
async def test_search_download_keeps_the_pages_filters(plugin_photos: dict[str, Any]) -> None:
    ds = Datasette([plugin_photos["db"]])
    page = await get(ds, "/photos/-/semsearch?" + urlencode({"q": "cat", "label": "dog", "page": 2}))
    assert "/photos/-/semsearch/export.csv?q=cat&amp;label=dog" in page.text
    r = await get(ds, "/photos/-/semsearch/export.csv?q=cat&label=dog")
    found = read_csv(r.text)[1]
    assert {row["label"] for row in found} == {"dog"} and len(found) == 3


@pytest.mark.asyncio
async def test_image_page_downloads_each_list(plugin_photos: dict[str, Any]) -> None:
    db = plugin_photos["db"]
    ds = Datasette([db])
    image_id = some_id(db)
    page = await get(ds, f"/photos/-/semsearch/image/{image_id}?k=3")
    for space in ("visual", "semantic"):
        url = f"/photos/-/semsearch/export.csv?of={space}&amp;image={image_id}"
        assert url in page.text
        r = await get(ds, url.replace("&amp;", "&"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        found = read_csv(r.text)[1]
        assert len(found) == image_count(db) - 1  # every other image, not the 3 shown
        assert str(image_id) not in {row["image_id"] for row in found}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "query, message",
    [
        ("q=zzqxj", "no known words"),
        ("of=nothing&q=cat", "of must be one of"),
        ("of=visual&image=999999", "no image with id 999999"),
        ("", "give q"),
    ],
)
async def test_bad_downloads_say_why(photos_db: str, query: str, message: str) -> None:
    r = await get(Datasette([photos_db]), "/photos/-/semsearch/export.csv?" + query)
    assert r.status_code == 400 and message in r.text


@pytest.mark.asyncio
async def test_downloads_of_a_private_database_are_refused(photos_db: str) -> None:
    is_1_0 = hasattr(Datasette, "allowed")
    config = {"databases": {"photos": {"allow": False}}}
    ds = Datasette([photos_db], **{"config" if is_1_0 else "metadata": config})
    r = await get(ds, "/photos/-/semsearch/export.csv?q=cat")
    assert r.status_code == 403 and "abs_path" not in r.text
