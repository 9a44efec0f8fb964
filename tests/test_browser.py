"""The pages in a real headless Chromium (driven over the DevTools protocol, see
tests/chromium.py), served by ``datasette`` in a subprocess: thumbnails really decode,
paging continues with no overlap, a 390 px phone gets columns and no sideways scrolling,
the empty search page offers labels and examples, an upload (chosen or dropped) shows
its image and keeps the form's settings. Leaves screenshots in ``test-artifacts/``."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .chromium import Browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
START_TIMEOUT = 60
BROWSER_TIMEOUT = 90
K = 8
PHONE = 390

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run the browser test",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(plugin_photos: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``datasette photos.db`` (a copy, with one evaluation stored for the report) on a
    free localhost port; yields its base URL."""
    from semsearch_sqlite.pipeline.evaluate import evaluate
    from semsearch_sqlite.storage.store import Store

    db = tmp_path_factory.mktemp("browser") / "photos.db"
    shutil.copy(plugin_photos["db"], db)
    with Store.open(db) as store:
        evaluate(store, zero_shot=0.4, seed=3)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "datasette", str(db), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(base + "/-/versions.json", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode("utf-8", "replace")[-2000:] if proc.stderr else ""
                pytest.fail(f"datasette did not start on port {port}: {err}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(CHROMIUM, timeout=BROWSER_TIMEOUT) as b:
        yield b


def _shot(b: Browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    b.settle(lazy=True)
    b.screenshot(ARTIFACTS / f"{name}.png")


CARD_IDS = "Array.from(document.querySelectorAll('.semsearch-card > a')).map(a => a.getAttribute('href'))"
# the page is no wider than the window (nothing to scroll sideways to)
NO_SIDEWAYS = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
# how many columns the first result grid has: distinct left edges of its cards
COLUMNS = (
    "new Set(Array.from(document.querySelector('.semsearch-grid').children)"
    ".map(li => Math.round(li.getBoundingClientRect().left))).size"
)


def test_search_page_renders_its_images_in_chromium(server: str, browser: Browser) -> None:
    url = f"{server}/photos/-/semsearch?q=cat&k={K}&all=1"
    browser.open(url, width=1200)
    browser.wait_for("document.querySelector('.semsearch-grid').dataset.complete === 'true'")
    # the page's own script marks the grid with how many images decoded
    attrs = browser.eval("Object.assign({}, document.querySelector('.semsearch-grid').dataset)")
    assert attrs == {"images": str(K), "loaded": str(K), "complete": "true"}
    # the "<script>" file name is shown as text, never parsed as an element
    assert "<script>alert(1)<script>.png" in browser.eval("document.body.innerText")
    assert not browser.eval("Array.from(document.scripts).some(s => s.text.includes('alert'))")
    _shot(browser, "search-1200")
    with Image.open(ARTIFACTS / "search-1200.png") as img:
        assert img.width == 1200
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 100  # thumbnails and text, not a blank page


def test_next_continues_where_page_one_stopped(server: str, browser: Browser) -> None:
    browser.open(f"{server}/photos/-/semsearch?q=dog&k=6&all=1")
    first = browser.eval(CARD_IDS)
    assert len(first) == 6 and "1\u20136" in browser.eval("document.querySelector('.semsearch-showing').innerText")
    browser.eval("document.querySelector('a[rel=next]').click()")
    browser.wait_for("location.search.includes('page=2') && document.readyState === 'complete'")
    second = browser.eval(CARD_IDS)
    assert len(second) == 6 and not set(first) & set(second)
    assert "7\u201312" in browser.eval("document.querySelector('.semsearch-showing').innerText")
    browser.eval("document.querySelector('a[rel=prev]').click()")
    browser.wait_for("!location.search.includes('page=2') && document.readyState === 'complete'")
    assert browser.eval(CARD_IDS) == first


@pytest.mark.parametrize(
    "path",
    [
        "/photos/-/semsearch?q=dog",
        "/photos/-/semsearch",
        "/photos/-/semsearch/image/1",
        "/photos/-/semsearch/words?q=cat",
        "/photos/-/semsearch/upload",
        "/photos/-/semsearch/report",
        "/photos",
    ],
)
def test_a_phone_gets_columns_and_no_sideways_scrolling(server: str, browser: Browser, path: str) -> None:
    browser.open(server + path, width=PHONE)
    assert browser.eval(NO_SIDEWAYS), browser.eval("document.documentElement.scrollWidth")
    tabs = browser.eval(
        "Array.from(document.querySelectorAll('.semsearch-tabs a')).map(a => a.getBoundingClientRect().top)"
    )
    assert len(set(tabs)) <= 1  # the tabs fit on one line
    if browser.eval("!!document.querySelector('.semsearch-grid')"):
        assert browser.eval(COLUMNS) >= 2
    if "words" in path:  # a narrow table stays a table, its column names showing
        heads = browser.eval(
            "Array.from(document.querySelectorAll('.semsearch-words th'))"
            ".map(th => th.getBoundingClientRect().height > 0 ? th.innerText : null)"
        )
        assert heads == ["rank", "word", "distance", "images"]
    if "report" in path:  # a wide one becomes cards, each value labelled with its column's name
        labels = browser.eval(
            "Array.from(document.querySelectorAll('.semsearch-labels-table tr:first-child td'))"
            ".map(td => getComputedStyle(td, '::before').content)"
        )
        assert labels[:2] == ['"label"', '"images"']
    if path == "/photos/-/semsearch?q=dog":
        _shot(browser, "search-390")


# WCAG contrast of an element's text against the first opaque background behind it
CONTRAST = """(selector) => {
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const lum = c => { const v = rgb(c).slice(0, 3).map(x => { x /= 255;
    return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const el = document.querySelector(selector);
  let bg = el, colour = 'rgb(255, 255, 255)';
  while (bg) { const c = getComputedStyle(bg).backgroundColor; const a = rgb(c);
    if (a.length < 4 || a[3] > 0) { colour = c; break; } bg = bg.parentElement; }
  const [hi, lo] = [lum(getComputedStyle(el).color), lum(colour)].sort((a, b) => b - a);
  return (hi + 0.05) / (lo + 0.05);
}"""


@pytest.mark.parametrize(
    "selector",
    [".semsearch-name", ".semsearch-score", ".semsearch-help", ".semsearch-showing", ".semsearch-legend summary"],
)
def test_small_text_has_enough_contrast(server: str, browser: Browser, selector: str) -> None:
    browser.open(f"{server}/photos/-/semsearch?q=dog&all=1")
    assert browser.eval(f"({CONTRAST})({selector!r})") >= 4.5


def test_the_empty_search_page_offers_labels_and_examples(server: str, browser: Browser) -> None:
    browser.open(f"{server}/photos/-/semsearch")
    labels = browser.eval("Array.from(document.querySelectorAll('.semsearch-labels li')).map(li => li.innerText)")
    assert "cat 3" in labels and len(labels) == 5
    browser.eval("document.querySelector('.semsearch-examples a').click()")
    browser.wait_for("location.search.includes('q=') && document.readyState === 'complete'")
    assert len(browser.eval(CARD_IDS)) > 0


def test_upload_shows_progress_the_query_image_and_keeps_the_settings(
    server: str, browser: Browser, plugin_photos: dict[str, Any], tmp_path: Path
) -> None:
    image = min(Path(plugin_photos["images"], "car").iterdir())
    browser.open(f"{server}/photos/-/semsearch/upload")
    assert browser.eval("document.querySelector('label[for=semsearch-image]').innerText").startswith("Image file")
    browser.set_files("#semsearch-image", [str(image)])
    browser.eval("document.querySelector('#semsearch-image').dispatchEvent(new Event('change'))")
    assert browser.wait_for("document.querySelector('.semsearch-chosen').naturalWidth") > 0  # a preview at once
    # while the server embeds the image, the form says so (read in the same task as the
    # submit, before the answer can replace the page)
    busy = browser.eval(
        "(() => { const form = document.querySelector('form.semsearch-upload');"
        "document.querySelector('input[name=k]').value = '5';"
        "document.querySelector('select[name=space]').value = 'semantic';"
        "form.requestSubmit();"
        "return [form.classList.contains('semsearch-busy'),"
        "getComputedStyle(form.querySelector('.semsearch-progress')).display,"
        "form.querySelector('input[type=submit]').disabled]; })()"
    )
    assert busy == [True, "flex", True]
    browser.wait_for(
        "!!document.querySelector('.semsearch-query-image') && document.readyState === 'complete'",
        timeout=BROWSER_TIMEOUT,
    )
    browser.settle()
    assert len(browser.eval(CARD_IDS)) == 5
    assert browser.eval("document.querySelector('.semsearch-query-image img').naturalWidth") > 0
    assert browser.eval("document.querySelector('input[name=k]').value") == "5"
    assert browser.eval("document.querySelector('select[name=space]').value") == "semantic"
    _shot(browser, "upload-1280")


def test_a_dropped_image_is_searched(server: str, browser: Browser, plugin_photos: dict[str, Any]) -> None:
    data = min(Path(plugin_photos["images"], "dog").iterdir()).read_bytes()
    browser.open(f"{server}/photos/-/semsearch/upload")
    encoded = base64.b64encode(data).decode("ascii")
    browser.eval(
        f"(() => {{ const bytes = Uint8Array.from(atob('{encoded}'), c => c.charCodeAt(0));"
        "const t = new DataTransfer(); t.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));"
        "document.querySelector('.semsearch-drop').dispatchEvent(new DragEvent('drop', {dataTransfer: t, bubbles: true,"
        " cancelable: true})); })()"
    )
    browser.wait_for(
        "!!document.querySelector('.semsearch-query-image') && document.readyState === 'complete'",
        timeout=BROWSER_TIMEOUT,
    )
    assert "dropped.png" in browser.eval("document.querySelector('.semsearch-query-image').innerText")
    assert len(browser.eval(CARD_IDS)) > 0
