"""A walk through the demo collection (examples/images, ingested once with
efficientnet-lite0) in a real headless Chromium against ``datasette`` in a subprocess,
with datasette-cluster-map installed as Datasette users have it: the empty page opens
on the library, a word that is no label finds its kind, page 2 continues, an image page,
the duplicates page, a date and a place filter, the map of located results, the CSV
download; at 1280 and 390 px. Screenshots go to ``/tmp/ux26/`` to be looked at."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .chromium import Browser

CHROMIUM = "/usr/bin/chromium"
DEMO = Path(__file__).resolve().parents[1] / "examples" / "images"
SHOTS = Path(os.environ.get("SEMSEARCH_SHOTS", "/tmp/ux26"))
WIDTHS = (1280, 390)
NO_SIDEWAYS = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
CARDS = "document.querySelectorAll('.semsearch-card').length"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} not found: apt-get install -y chromium to run the browser tests",
    ),
]


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo collection as ``make demo`` ingests it."""
    from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest

    db = tmp_path_factory.mktemp("demo") / "demo.db"
    ingest(DEMO, db, IngestOptions(backbone="efficientnet-lite0"))
    return db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(demo_db: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "datasette", str(demo_db), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/-/versions.json", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(
                        "datasette did not start: " + (proc.stderr.read().decode()[-2000:] if proc.stderr else "")
                    )
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(CHROMIUM, timeout=90) as b:
        yield b


def _visit(b: Browser, url: str, name: str, width: int) -> None:
    """Open ``url`` at ``width``, check nothing scrolls sideways and save a screenshot."""
    b.open(url, width=width)
    b.settle(lazy=True)
    assert b.eval(NO_SIDEWAYS), f"{name} at {width} px scrolls sideways"
    SHOTS.mkdir(parents=True, exist_ok=True)
    b.screenshot(SHOTS / f"{name}-{width}.png")


def _broken_images(b: Browser) -> int:
    return b.eval("Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).length")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_empty_page_opens_on_the_library(server: str, browser: Browser, width: int) -> None:
    _visit(browser, f"{server}/demo/-/semsearch", "empty", width)
    shelves = browser.eval("document.querySelectorAll('.semsearch-shelf img').length")
    assert shelves == len([d for d in DEMO.iterdir() if d.is_dir()]) and _broken_images(browser) == 0
    examples = browser.eval("Array.from(document.querySelectorAll('.semsearch-examples a')).map(a => a.innerText)")
    labels = {d.name.replace("_", " ") for d in DEMO.iterdir()}
    assert examples and not set(examples) & labels  # kinds, not labels or syntax demos
    assert not any(":" in e or "-" in e for e in examples)
    # each example finds photos: follow the first
    browser.eval("document.querySelector('.semsearch-examples a').click()")
    browser.wait_for("location.search.includes('q=') && document.readyState === 'complete'")
    assert browser.eval(CARDS) > 0


@pytest.mark.parametrize("width", WIDTHS)
def test_a_word_that_is_no_label_finds_its_kind_and_page_two_continues(
    server: str, browser: Browser, width: int
) -> None:
    _visit(browser, f"{server}/demo/-/semsearch?q=aircraft", "search-aircraft", width)
    labels = browser.eval(
        "Array.from(document.querySelectorAll('.semsearch-card .semsearch-label')).map(e => e.innerText)"
    )
    assert labels and set(labels[:4]) <= {"airplanes", "helicopter"}
    _visit(browser, f"{server}/demo/-/semsearch?q=aircraft&all=1&k=12", "search-aircraft-all", width)
    first = browser.eval("Array.from(document.querySelectorAll('.semsearch-card > a')).map(a => a.href)")
    browser.eval("document.querySelector('a[rel=next]').click()")
    browser.wait_for("location.search.includes('page=2') && document.readyState === 'complete'")
    browser.settle(lazy=True)
    browser.screenshot(SHOTS / f"search-aircraft-page2-{width}.png")
    second = browser.eval("Array.from(document.querySelectorAll('.semsearch-card > a')).map(a => a.href)")
    assert len(second) == 12 and not set(first) & set(second)
    assert "13\u201324" in browser.eval("document.querySelector('.semsearch-showing').innerText")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_misspelt_word_gets_a_suggestion_in_a_warning_not_a_success_box(
    server: str, browser: Browser, width: int
) -> None:
    _visit(browser, f"{server}/demo/-/semsearch?q=elephnt", "misspelt", width)
    assert "elephant" in browser.eval("document.querySelector('.semsearch-suggest').innerText")
    _visit(browser, f"{server}/demo/-/semsearch?q=sofa", "no-close-match", width)
    box = browser.eval("document.querySelector('.semsearch-no-match').className")
    assert "message-warning" in box and not browser.eval("!!document.querySelector('.message-info')")


@pytest.mark.parametrize("width", WIDTHS)
def test_image_and_duplicates_pages(server: str, browser: Browser, width: int) -> None:
    _visit(browser, f"{server}/demo/-/semsearch/image/1", "image", width)
    assert browser.eval(CARDS) > 0 and _broken_images(browser) == 0
    _visit(browser, f"{server}/demo/-/semsearch/duplicates", "duplicates", width)
    assert _broken_images(browser) == 0


@pytest.mark.parametrize("width", WIDTHS)
def test_date_and_place_filters_where_photos_have_them(server: str, browser: Browser, width: int) -> None:
    _visit(browser, f"{server}/demo/-/semsearch?q=boat&taken_from=2023&all=1", "date-filter", width)
    showing = browser.eval("document.querySelector('.semsearch-showing').innerText")
    assert 0 < int(showing.rsplit(" of ", 1)[1]) < 100  # the dated photos only (of 247)
    places = browser.eval("Array.from(document.querySelectorAll('select[name=near] option')).map(o => o.value)")
    assert "any" in places and len(places) > 3
    _visit(browser, f"{server}/demo/-/semsearch?q=boat&near={places[2]}&all=1", "place-filter", width)
    assert 0 < browser.eval(CARDS) < 24  # one area's photos


def test_the_map_of_located_results_draws_with_datasette_cluster_map(server: str, browser: Browser) -> None:
    browser.open(f"{server}/demo/-/semsearch?q=boat", width=1280)
    href = browser.eval("document.querySelector('a.semsearch-map').href")
    assert "on a map" in browser.eval("document.querySelector('a.semsearch-map').innerText")
    browser.open(href, width=1280)
    # datasette-cluster-map draws a Leaflet map with a marker or cluster per located row
    browser.wait_for("document.querySelectorAll('.leaflet-marker-icon').length > 0", timeout=60)
    browser.settle()
    browser.screenshot(SHOTS / "map-1280.png")


def test_the_csv_download_holds_every_result_with_paths(server: str, browser: Browser) -> None:
    browser.open(f"{server}/demo/-/semsearch?q=aircraft", width=1280)
    href = browser.eval("document.querySelector('a.semsearch-export').href")
    with urllib.request.urlopen(href, timeout=30) as r:
        assert r.status == 200 and "csv" in r.headers.get("content-type", "")
        found = list(csv.DictReader(io.StringIO(r.read().decode("utf-8"))))
    assert len(found) > 24 and {"path", "abs_path", "label"} <= set(found[0])
    assert Path(found[0]["abs_path"]).is_file()
