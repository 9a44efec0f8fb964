"""The search quality report page (``/<db>/-/semsearch/report``): the latest row of
``evaluations``, written by the real ``evaluate`` on a copy of the real ingest output
(``plugin_photos``), drawn as a method table, an SVG bar chart and the worst labels.

Runs on Datasette 0.65 and 1.0a, like tests/test_plugin.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from datasette.app import Datasette
from markupsafe import escape

from datasette_plugin import chart, report
from semsearch_sqlite.pipeline.evaluate import evaluate
from semsearch_sqlite.storage.store import Store

from .helpers import PRIVATE_CONFIGS, get, make_ds, root_cookies

REPORT = "/photos/-/semsearch/report"


@pytest.fixture(scope="module")
def evaluated(plugin_photos: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A copy of the plugin's photo database with one real evaluation stored."""
    path = tmp_path_factory.mktemp("report") / "photos.db"
    shutil.copy(plugin_photos["db"], path)
    with Store.open(path) as store:
        figures = evaluate(store, zero_shot=0.4, seed=3)
    return {"db": str(path), "figures": figures}


@pytest.fixture
def fresh_copy(evaluated: dict[str, Any], tmp_path: Path) -> str:
    """The evaluated database, copied for a test that adds evaluations of its own."""
    path = tmp_path / "photos.db"
    shutil.copy(evaluated["db"], path)
    return str(path)


def add_evaluation(db: str, figures: Any, provenance: Any = None, settings: Any = None) -> None:
    """Store ``figures`` as the newest evaluation (strings are stored as they are)."""
    as_text = [v if isinstance(v, str) else json.dumps(v) for v in (settings or {}, provenance or {}, figures)]
    with sqlite3.connect(db) as conn:
        conn.execute(
            "insert into evaluations(created_at, settings, provenance, figures) "
            "values ('2025-01-02T03:04:05+00:00', ?, ?, ?)",
            as_text,
        )


def image_ids(db: str, label: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("select id from images where label = ? order by id", [label])]


def part(html: str, start: str, end: str = "<h2") -> str:
    return html.split(start, 1)[1].split(end, 1)[0]


# -- the page ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_report_shows_each_methods_figures(evaluated: dict[str, Any]) -> None:
    r = await get(make_ds(evaluated["db"]), REPORT)
    assert r.status_code == 200
    figures = evaluated["figures"]
    methods = figures["zero_shot"]["methods"]
    assert set(methods) == {"auto", "conse", "chance"}
    table = part(r.text, 'class="semsearch-table semsearch-cards semsearch-methods"', "</table>")
    for name, m in methods.items():
        row = re.search(rf'<tr class="semsearch-method-{name}">(.*?)</tr>', table, re.S).group(1)
        cells = [
            re.sub(r"<[^>]+>", "", c)
            for c in re.findall(r'<td class="semsearch-num" data-label="[^"]*">(.*?)</td>', row, re.S)
        ]
        expected = [
            m["seen_p_at_10"],
            m["zero_shot_p_at_10"],
            m["seen_ap"],
            m["zero_shot_ap"],
            m["tag_at_5_seen"],
            m["tag_at_5_zero_shot"],
            m["fit_seconds"],
        ]
        assert cells == [report.fig(v) for v in expected], name
    for label in figures["zero_shot"]["held_out"]:
        held = part(r.text, "by method</h3>", "</table>")
        assert f'?q={quote_plus(label)}">{escape(label)}</a></td>' in held
    for jargon in ("P@10", "AP<", "fit s", "sha256"):  # plain words, each figure explained
        assert jargon not in r.text.split("<h2")[0] + table, jargon
    # the headline figures: means over the labels
    text_p = sum(v["p_at_10"] for v in figures["text"].values()) / len(figures["text"])
    visual_p = sum(figures["visual_p_at_10"].values()) / len(figures["visual_p_at_10"])
    assert f"<dt>Search by a label's name: right in the top 10</dt><dd>{report.fig(text_p)}</dd>" in r.text
    assert f"<dt>Similar-looking images: right in the top 10</dt><dd>{report.fig(visual_p)}</dd>" in r.text
    assert r.text.count('<dd class="semsearch-explain">') == 5
    assert "over 15 labelled images, 5 labels" in r.text
    assert "<code>semsearch-sqlite evaluate photos.db</code>" in r.text


@pytest.mark.asyncio
async def test_chart_has_one_bar_per_label_and_series(evaluated: dict[str, Any]) -> None:
    r = await get(make_ds(evaluated["db"]), REPORT)
    svg = re.search(r'<svg xmlns="http://www.w3.org/2000/svg" class="semsearch-chart".*?</svg>', r.text, re.S).group(0)
    figures = evaluated["figures"]
    for key, values in (
        ("text", {c: v["p_at_10"] for c, v in figures["text"].items()}),
        ("visual", figures["visual_p_at_10"]),
    ):
        bars = re.findall(
            rf'<rect class="semsearch-bar semsearch-bar-{key}" x="\d+" y="\d+" width="([\d.]+)" height="\d+" '
            r'fill="#\w+"><title>(.*?): ',
            svg,
        )
        assert len(bars) == len(values) == 5
        drawn = {title: float(width) for width, title in bars}
        assert drawn == {str(escape(c)): pytest.approx(chart.PLOT_WIDTH * v, abs=0.06) for c, v in values.items()}
    # every label has 3 images, so P@10 can be at most 0.3 (text) and 0.2 (visual): ticked
    assert svg.count('<line class="semsearch-limit"') == 10
    assert "P@10 per label, worst first" in svg


@pytest.mark.asyncio
async def test_the_worst_labels_show_their_images_and_what_search_returns(
    evaluated: dict[str, Any], fresh_copy: str
) -> None:
    figures = json.loads(json.dumps(evaluated["figures"]))
    figures["text"]["car"] = {"p_at_10": 0.1, "ap": 0.05}  # make "car" the worst by far
    add_evaluation(fresh_copy, figures)
    r = await get(make_ds(fresh_copy), REPORT)
    assert r.status_code == 200
    assert '(evaluation 2, the latest of <a href="/photos/evaluations">2</a>)' in r.text
    assert 'Measured on <time datetime="2025-01-02T03:04:05+00:00">2 January 2025, 03:04 UTC</time>' in r.text
    sections = r.text.split('<section class="semsearch-worst">')[1:]
    assert 1 <= len(sections) <= report.WORST_SHOWN
    worst = sections[0]
    assert '<a href="/photos/-/semsearch?q=car">car</a>' in worst
    assert "ranking 0.05 &middot; right in the top 10: 0.10" in worst
    mine = part(worst, "<h4>Its images</h4>", "<h4>")
    ids = image_ids(fresh_copy, "car")
    assert re.findall(r'<a href="/photos/-/semsearch/image/(\d+)"', mine) == [str(i) for i in ids]
    assert re.findall(r'<img src="/photos/-/semsearch/thumb/(\d+)\.jpg"', mine) == [str(i) for i in ids]
    # the wrong images among the first 3 results (car has 3 images), marked, with their place
    with sqlite3.connect(fresh_copy) as conn:
        from semsearch_sqlite.queries.search import similar_images
        from semsearch_sqlite.sqlite.extensions import load_sqlite_vec

        load_sqlite_vec(conn)
        ranking = similar_images(conn, "car", 15).hits
    wrong = [h for h in ranking[:3] if h.label != "car"]
    assert f"Of the first 3 results for <q>car</q>, {3 - len(wrong)} are car" in worst
    if wrong:
        found = part(worst, "Wrong images among the first 3</h4>", "<h4>")
        cards = re.findall(r'<li class="semsearch-card semsearch-miss">.*?#(\d+)</span>', found, re.S)
        assert cards == [str(h.rank) for h in wrong]
    # the chart is in the same order: worst first
    labels = re.findall(r'class="semsearch-chart-label"><title>(.*?)</title>', r.text)
    assert labels[0] == "car" and len(labels) == 5
    for image_id in ids:
        assert (await get(make_ds(fresh_copy), f"/photos/-/semsearch/thumb/{image_id}.jpg")).status_code == 200


@pytest.mark.asyncio
async def test_labels_and_stored_strings_are_escaped(
    evaluated: dict[str, Any], fresh_copy: str, plugin_photos: dict[str, Any]
) -> None:
    evil_label = plugin_photos["evil_label"]  # a real label of the database
    r = await get(make_ds(evaluated["db"]), REPORT)
    assert evil_label in evaluated["figures"]["visual_p_at_10"]
    assert "<script>alert" not in r.text
    assert f"<title>{escape(evil_label)}</title>" in r.text
    # strings an edited evaluations row could hold: labels not in the database, methods,
    # provenance; held-out labels
    evil = "<script>alert(2)</script>"
    figures = json.loads(json.dumps(evaluated["figures"]))
    figures["visual_p_at_10"][evil] = 0.5
    figures["text"][evil] = {"p_at_10": 0.0, "ap": 0.0}
    figures["zero_shot"]["held_out"] = [evil]
    figures["zero_shot"]["methods"][evil] = dict(figures["zero_shot"]["methods"]["auto"])
    add_evaluation(fresh_copy, figures, provenance={"backbone": evil, evil: "x"})
    r = await get(make_ds(fresh_copy), REPORT)
    assert r.status_code == 200
    assert "<script>alert" not in r.text
    assert r.text.count(str(escape(evil))) >= 5
    assert r.text.count('<rect class="semsearch-bar semsearch-bar-text"') == 6
    # a label with no images can't be shown with examples, but is still reported
    worst = r.text.split('<section class="semsearch-worst">')[1]
    assert str(escape(evil)) in worst and "0 images" in worst


@pytest.mark.asyncio
async def test_without_an_evaluation_the_page_says_how_to_make_one(plugin_photos: dict[str, Any]) -> None:
    with sqlite3.connect(plugin_photos["db"]) as conn:
        assert conn.execute("select count(*) from evaluations").fetchone()[0] == 0
    r = await get(make_ds(plugin_photos["db"]), REPORT)
    assert r.status_code == 200
    assert "No evaluation has been run on this database yet." in r.text
    assert "<code>semsearch-sqlite evaluate photos.db</code>" in r.text
    assert "semsearch-chart" not in r.text and "semsearch-methods" not in r.text


@pytest.mark.asyncio
async def test_a_database_without_the_evaluations_table(fresh_copy: str) -> None:
    with sqlite3.connect(fresh_copy) as conn:
        conn.execute("drop table evaluations")
    r = await get(make_ds(fresh_copy), REPORT)
    assert r.status_code == 200 and "No evaluation has been run" in r.text


@pytest.mark.asyncio
@pytest.mark.parametrize("figures", ["not json", "[1, 2]", json.dumps({"images": 3})])
async def test_an_unreadable_evaluation_is_reported(fresh_copy: str, figures: str) -> None:
    add_evaluation(fresh_copy, figures)
    r = await get(make_ds(fresh_copy), REPORT)
    assert r.status_code == 200
    assert "The latest evaluation can't be shown: evaluation 2 has no readable figures" in r.text


@pytest.mark.asyncio
async def test_figures_missing_from_older_evaluations_show_as_dashes(
    evaluated: dict[str, Any], fresh_copy: str
) -> None:
    dropped = ("text", "semantic_p_at_10", "tag_at_5", "zero_shot")
    figures = {k: v for k, v in evaluated["figures"].items() if k not in dropped}
    figures["visual_p_at_10"]["car"] = float("nan")
    add_evaluation(fresh_copy, figures)
    r = await get(make_ds(fresh_copy), REPORT)
    assert r.status_code == 200
    assert "<dt>Search by a label's name: right in the top 10</dt><dd>\u2013</dd>" in r.text
    assert "semsearch-methods" not in r.text
    assert r.text.count('<rect class="semsearch-bar semsearch-bar-visual"') == 4
    assert r.text.count('<rect class="semsearch-bar semsearch-bar-text"') == 0
    assert "no figure" in r.text


# -- links and permissions -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_report_is_linked_from_the_tabs_and_the_database_page(evaluated: dict[str, Any]) -> None:
    ds = make_ds(evaluated["db"])
    search = (await get(ds, "/photos/-/semsearch")).text
    assert f'<a href="{REPORT}">Quality report</a>' in search
    assert f'<a href="{REPORT}" aria-current="page">Quality report</a>' in (await get(ds, REPORT)).text
    page = (await get(ds, "/photos")).text
    assert f'href="{REPORT}"' in page and "Search quality report" in page


@pytest.mark.asyncio
async def test_base_url_is_respected(evaluated: dict[str, Any]) -> None:
    ds = make_ds(evaluated["db"], settings={"base_url": "/prefix/"})
    r = await get(ds, REPORT)
    assert r.status_code == 200
    assert 'href="/prefix/photos/-/semsearch?q=' in r.text
    assert 'href="/photos/' not in r.text and 'src="/photos/' not in r.text


@pytest.mark.asyncio
@pytest.mark.parametrize("config", PRIVATE_CONFIGS)
async def test_report_honours_permissions(evaluated: dict[str, Any], config: dict[str, Any]) -> None:
    ds = make_ds(evaluated["db"], config=config)
    r = await get(ds, REPORT)
    assert r.status_code == 403
    assert "semsearch-chart" not in r.text and "Methods compared" not in r.text
    page = await get(ds, "/photos")
    assert REPORT not in page.text
    if config.get("databases", {}).get("photos", {}).get("allow") is False:
        return
    r = await get(ds, REPORT, cookies=root_cookies(ds))
    assert r.status_code == 200 and "semsearch-chart" in r.text


@pytest.mark.asyncio
async def test_databases_that_are_not_ours_have_no_report(evaluated: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table evaluations (id integer primary key, figures text)")
    ds = Datasette([evaluated["db"], str(other)])
    assert (await get(ds, "/other/-/semsearch/report")).status_code == 404
    assert (await get(ds, "/nosuchdb/-/semsearch/report")).status_code == 404


# -- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, digits, expected",
    [
        (0.4, 3, "0.400"),
        (1, 2, "1.00"),
        (None, 3, "\u2013"),
        (float("nan"), 3, "\u2013"),
        ("0.5", 3, "\u2013"),
        (True, 3, "\u2013"),
    ],
)
def test_fig(value: Any, digits: int, expected: str) -> None:
    assert report.fig(value, digits) == expected


def test_bar_chart_scales_clamps_and_escapes() -> None:
    long = "a label far longer than the chart's label column <b>"
    svg = str(
        chart.bar_chart(
            ["low", "high", long, "none"],
            [
                chart.Series(
                    "Text P!", "text", "#123456", {"low": 0.25, "high": 1.7, long: 0.5, "none": math.nan}, {"low": 0.5}
                )
            ],
            title="<t>",
        )
    )
    widths = re.findall(r'<rect class="semsearch-bar semsearch-bar-text-p" x="\d+" y="\d+" width="([\d.]+)"', svg)
    assert [float(w) for w in widths] == [chart.PLOT_WIDTH * 0.25, chart.PLOT_WIDTH * 1.0, chart.PLOT_WIDTH * 0.5]
    assert svg.count("no figure") == 1
    assert svg.count('<line class="semsearch-limit"') == 1
    assert "<title>&lt;t&gt;</title>" in svg and "<b>" not in svg
    cut = long[: chart.LABEL_CHARS - 1] + "\u2026"
    assert f"<title>{escape(long)}</title>{escape(cut)}</text>" in svg
    assert chart.bar_chart([], [], title="empty").startswith("<svg")
