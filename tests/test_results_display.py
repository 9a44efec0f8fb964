"""Results that end (issue 24): a text search says how many strong matches it has and
shows them first, weaker ones on request, each hit with a score that falls down the list
(never a raw distance), on the search page, in the CLI and in Python."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from datasette.app import Datasette

import semsearch_sqlite
from semsearch_sqlite.cli import cli
from semsearch_sqlite.model.semantic import MATCH_META
from semsearch_sqlite.storage.store import Store

K = 8


def _with_threshold(src: str, dest: Path, strong_distance: float) -> str:
    """A copy of ``src`` without labels (so strength is the calibrated distance, not a
    label's relation to the query) whose strong-match distance is ``strong_distance``
    (0: nothing is strong; 2: every hit is)."""
    shutil.copy(src, dest)
    with Store.open(dest, create=True) as s, s.atomic():
        s.conn.execute("update images set label = null")
        s.update_meta({MATCH_META: strong_distance})
    return str(dest)


@pytest.fixture(scope="module")
def dbs(plugin_photos: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("display")
    unlabelled = _with_threshold(plugin_photos["db"], root / "unlabelled.db", 2.0)
    with semsearch_sqlite.open(unlabelled) as photos:
        hits = photos.search("cat", K, allow_unknown=True).hits
    distances = sorted(h.distance for h in hits)
    # between the 3rd and 4th nearest: 3 strong matches among K
    some = (distances[2] + distances[3]) / 2
    return {
        "none": _with_threshold(unlabelled, root / "none.db", 0.0),
        "all": unlabelled,
        "some": _with_threshold(unlabelled, root / "some.db", some),
    }


def test_python_results_carry_the_strong_count_and_scores(dbs: dict[str, str]) -> None:
    with semsearch_sqlite.open(dbs["some"]) as photos:
        res = photos.search("cat", K, allow_unknown=True)
    assert res.strong == 3
    assert all(h.match == "strong" for h in res.hits[:3]) and all(h.match == "weak" for h in res.hits[3:])
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert res.as_dict()["strong"] == 3


def test_cli_prints_the_strong_matches_and_the_rest_with_all(dbs: dict[str, str]) -> None:
    r = CliRunner().invoke(cli, ["search", dbs["some"], "cat", "-k", str(K)])
    assert r.exit_code == 0, r.output
    assert f"3 strong matches ({K - 3} weaker: add --all to list them)" in r.output
    rows = [line for line in r.output.splitlines() if re.search(r"\d+%\s*$", line)]
    assert len(rows) == 3 and all(" strong " in line for line in rows)
    assert "distance" not in r.output
    r = CliRunner().invoke(cli, ["search", dbs["some"], "cat", "-k", str(K), "--all"])
    assert r.exit_code == 0, r.output
    assert len([line for line in r.output.splitlines() if re.search(r"\d+%\s*$", line)]) == K
    r = CliRunner().invoke(cli, ["search", dbs["none"], "cat", "-k", str(K)])
    assert r.exit_code == 0 and "no close match" in r.output and "%" not in r.output and "image_id" not in r.output


def test_cli_json_has_every_hit_with_its_score_match_and_the_strong_count(dbs: dict[str, str]) -> None:
    r = CliRunner().invoke(cli, ["search", dbs["some"], "cat", "-k", str(K), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["strong"] == 3 and len(data["hits"]) == K
    assert [h["match"] for h in data["hits"]] == ["strong"] * 3 + ["weak"] * (K - 3)
    assert all(0 <= h["score"] <= 1 for h in data["hits"])


async def _page(db: str, query: str) -> str:
    ds = Datasette([db])
    await ds.invoke_startup()
    name = Path(db).stem
    r = await ds.client.get(f"/{name}/-/semsearch?{query}")
    assert r.status_code == 200, r.text
    return r.text


def _cards(html: str) -> list[str]:
    return re.findall(r'<li class="semsearch-card[^"]*" data-match="(\w+)"', html)


@pytest.mark.asyncio
async def test_search_page_shows_the_strong_matches_with_a_link_to_the_weaker(dbs: dict[str, str]) -> None:
    html = await _page(dbs["some"], "q=cat")
    assert "<b>3 strong matches</b>" in html
    assert _cards(html) == ["strong"] * 3
    assert "all=1" in html and "show weaker matches" in html
    assert "semsearch-distance" not in html and re.search(r"strong \d+%", html)
    assert "Showing <b>1&ndash;3</b> of 3" in html  # not "1-24 of every image"


@pytest.mark.asyncio
async def test_the_weaker_matches_follow_on_request(dbs: dict[str, str]) -> None:
    html = await _page(dbs["some"], "q=cat&all=1")
    cards = _cards(html)
    assert cards[:3] == ["strong"] * 3 and set(cards[3:]) == {"weak"} and len(cards) > 3
    scores = [int(s) for s in re.findall(r'class="semsearch-match semsearch-score"[^>]*>\w* (\d+)%', html)]
    assert len(scores) == len(cards) and scores == sorted(scores, reverse=True)
    assert "only the strong matches" in html


@pytest.mark.asyncio
async def test_no_strong_match_says_so_in_a_warning_not_a_success_box(dbs: dict[str, str]) -> None:
    html = await _page(dbs["none"], "q=cat")
    assert re.search(r'<div class="message-warning semsearch-no-match">\s*<p><b>No close match</b>', html)
    assert "message-info" not in html and _cards(html) == []
    assert "Show the nearest images anyway" in html


@pytest.mark.asyncio
async def test_every_hit_strong_is_paged_among_the_strong(dbs: dict[str, str]) -> None:
    html = await _page(dbs["all"], "q=cat&k=4")
    assert _cards(html) == ["strong"] * 4
    assert re.search(r"<b>\d+ strong matches</b>", html) and "show weaker matches" not in html
    assert "Next &rarr;" in html
