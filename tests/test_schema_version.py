"""A schema version this package doesn't know (newer, or changed by another program) is
refused by every CLI command and skipped by the plugin, without touching the file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from semsearch_sqlite.cli import cli
from semsearch_sqlite.storage.store import schema_version

from .helpers import sha

pytestmark = pytest.mark.slow


# the schema versions this package knows, as its errors name them
KNOWN = "1" if schema_version() == 1 else f"1 to {schema_version()}"


def set_schema_version(db: Path, raw_json: str) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("update semsearch_meta set value = ? where key = 'schema_version'", [raw_json])


@pytest.mark.parametrize("raw, shown", [('"99"', "'99'"), ("2.5", "2.5"), ("0", "0"), ("true", "True")])
def test_cli_refuses_an_unknown_schema_version_untouched(
    plugin_photos: dict[str, Any], photos_copy: Path, raw: str, shown: str
) -> None:
    set_schema_version(photos_copy, raw)
    before = sha(photos_copy)
    expected = (
        f"Error: {photos_copy}: schema version {shown} is not one this semsearch-sqlite knows (it knows {KNOWN}); "
        "the file was changed by another program: restore it from a copy (nothing was changed in it)\n"
    )
    for args in (
        ["search", str(photos_copy), "cat"],
        ["train", str(photos_copy)],
        ["ingest", plugin_photos["images"], str(photos_copy), "--backbone", plugin_photos["backbone"], "-q"],
        ["vocab", str(photos_copy), "-q"],
        ["evaluate", str(photos_copy)],
    ):
        result = CliRunner().invoke(cli, args)
        assert (result.exit_code, result.output) == (1, expected), args
        assert sha(photos_copy) == before, args


def test_cli_refuses_a_newer_schema_version(photos_copy: Path) -> None:
    set_schema_version(photos_copy, "99")
    before = sha(photos_copy)
    result = CliRunner().invoke(cli, ["train", str(photos_copy)])
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: {photos_copy}: schema version 99 is newer than this semsearch-sqlite; "
        "upgrade with: pip install -U semsearch-sqlite"
    )
    assert sha(photos_copy) == before


@pytest.mark.asyncio
async def test_plugin_skips_a_store_from_a_newer_version(
    photos_copy: Path, caplog: pytest.LogCaptureFixture, datasette: Any
) -> None:
    set_schema_version(photos_copy, "99")
    message = (
        "photos: schema version 99 is newer than this semsearch-sqlite; upgrade with: pip install -U semsearch-sqlite"
    )
    ds = datasette([str(photos_copy)])
    with caplog.at_level("WARNING"):
        await ds.invoke_startup()
        page = await ds.client.get("/photos/-/semsearch", params={"q": "cat"})
        assert page.status_code == 404
        assert f"Skipped: {message}" in page.text
        for path in ("/photos/-/semsearch/image/1", "/photos/-/semsearch/display/1", "/photos/-/semsearch/report"):
            assert (await ds.client.get(path)).status_code == 404, path
        for sql in ("select * from similar_images('cat')", "select semsearch_text_vector('cat')"):
            response = await ds.client.get("/photos.json", params={"sql": sql})
            assert response.status_code == 400
            assert response.json()["error"].startswith(message)
        home = await ds.client.get("/")
        assert "/photos/-/semsearch" not in home.text
    skipped = [r.getMessage() for r in caplog.records if "skipping database photos" in r.getMessage()]
    assert skipped == [f"semsearch: skipping database photos: {message} (this is 0.1.0, schema {schema_version()})"]
