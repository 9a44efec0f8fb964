"""One behaviour for every face (issue #26): a misspelt word gets the same suggestions
on the page, in the CLI and in Python; ``k`` follows one rule everywhere (from 1; more
than the most gives the most; 0 or "abc" refused with one message); pages speak web
(no command-line advice), the CLI speaks CLI; ``info`` reads in human units.

On the real ingest pipeline's output (``plugin_photos``, ``dated_photos_db`` in conftest).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import semsearch_sqlite
from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import QueryError, UnknownWordsError
from semsearch_sqlite.queries import hints, limits
from semsearch_sqlite.queries.filters import allowed_ids


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_misspelt_word_gets_the_pages_suggestions_in_the_cli(plugin_photos: dict[str, Any]) -> None:
    with semsearch_sqlite.open(plugin_photos["db"]) as photos:
        near = hints.suggest_words(photos.conn, "doggg")
    assert near[0] == "dog"
    r = run("search", plugin_photos["db"], "doggg")
    assert r.exit_code == 1  # as before for a query of unknown words, now with the suggestion
    assert "no known words in query: 'doggg'; did you mean dog" in r.output
    r = run("search", plugin_photos["db"], "doggg cat", "--all")  # one word known: searched, one warned of
    assert r.exit_code == 0 and "Warning: unknown words ignored: doggg (did you mean dog" in r.output
    r = run("words", plugin_photos["db"], "doggg")
    assert r.exit_code == 1 and "did you mean dog" in r.output


def test_a_misspelt_word_gets_suggestions_in_python(plugin_photos: dict[str, Any]) -> None:
    with semsearch_sqlite.open(plugin_photos["db"]) as photos:
        with pytest.raises(UnknownWordsError) as e:
            photos.search("doggg")
        assert e.value.suggestions["doggg"][0] == "dog" and "did you mean dog" in str(e.value)
        found = photos.search("doggg cat", allow_unknown=True)
        assert found.unknown == ["doggg"] and found.suggestions["doggg"][0] == "dog" and found.hits
        assert found.as_dict()["suggestions"] == found.suggestions
        assert photos.search("cat").suggestions == {}


@pytest.mark.parametrize("raw, expected", [("5", 5), (5.0, 5), ("", 10), (None, 10), ("99999", 4096)])
def test_one_k_rule(raw: Any, expected: int) -> None:
    assert limits.result_count(raw) == expected
    assert limits.result_count(raw, default=24, maximum=100) == min(expected if raw not in ("", None) else 24, 100)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "k, message",
    [
        ("0", "k must be at least 1, not 0"),
        ("-3", "k must be at least 1, not -3"),
        ("abc", "k must be a whole number, not 'abc'"),
    ],
)
async def test_k_is_refused_alike_by_the_cli_python_and_the_page(
    plugin_photos: dict[str, Any], datasette: Any, k: str, message: str
) -> None:
    r = run("search", plugin_photos["db"], "cat", "-k", k)
    assert r.exit_code == 2 and message in r.output
    with semsearch_sqlite.open(plugin_photos["db"]) as photos, pytest.raises(QueryError, match=re.escape(message)):
        photos.search("cat", k=int(k) if k.lstrip("-").isdigit() else k)
    ds = datasette([plugin_photos["db"]])
    page = await ds.client.get(f"/photos/-/semsearch?q=cat&k={k}")
    assert page.status_code == 400 and message.replace("'", "&#39;") in page.text
    assert "-k" not in page.text.split("<h1>", 1)[1].split("</p>", 1)[0]  # web words, not the CLI's option


def test_more_than_the_most_gives_the_most_in_the_cli(plugin_photos: dict[str, Any]) -> None:
    r = run("search", plugin_photos["db"], "cat", "-k", "100000", "--json")
    assert r.exit_code == 0 and r.output.count('"image_id"') == 15  # every image


def test_pages_speak_web_the_cli_speaks_cli(plugin_photos: dict[str, Any]) -> None:
    from datasette_plugin.render import web_message

    with semsearch_sqlite.open(plugin_photos["db"]) as photos:
        with pytest.raises(QueryError) as e:
            allowed_ids(photos.conn, "1; drop table images")
    assert str(e.value).startswith("--where ")  # the CLI names its option
    assert not web_message(e.value).startswith("--") and "--" not in web_message(e.value)
    for cli_error in (
        "this database has no semantic vectors yet; run semsearch-sqlite ingest",
        "the stored classifier weights don't match the visual vectors; re-run ingest --rebuild",
    ):
        said = web_message(cli_error)
        assert "semsearch-sqlite ingest" not in said and "--" not in said and "whoever maintains" in said
    assert web_message("no image with id 5; list them with: select id, path from images") == "no image with id 5"


def test_info_reads_in_human_units_with_dated_and_located_counts(
    plugin_photos: dict[str, Any], dated_photos_db: Path, tmp_path: Path
) -> None:
    r = run("info", plugin_photos["db"])
    assert r.exit_code == 0 and "file_bytes" not in r.output
    assert re.search(r"^file size: [\d.]+ (KB|MB)$", r.output, re.MULTILINE), r.output
    assert "  dated: 0 of 15 photos" in r.output and "  located: 0 of 15 photos" in r.output
    assert re.search(r"^  thumbnail size: [\d.]+ KB$", r.output, re.MULTILINE)
    r = run("info", str(dated_photos_db))
    n = sqlite3.connect(dated_photos_db).execute("select count(*) from images").fetchone()[0]
    assert f"  dated: {n} of {n} photos" in r.output
    r = run("info", plugin_photos["db"], "--json")  # for programs: bytes
    assert '"file_bytes": ' in r.output and '"dated": 0' in r.output
