"""The search page in a real headless Chromium: served by ``datasette`` in a subprocess,
its result thumbnails must really decode (naturalWidth > 0). Leaves a screenshot in
``test-artifacts/search.png``."""

from __future__ import annotations

import os
import re
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

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
START_TIMEOUT = 60
BROWSER_TIMEOUT = 90
K = 8

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
def server(plugin_photos: dict[str, Any]) -> Iterator[str]:
    """``datasette photos.db`` on a free localhost port; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "datasette", plugin_photos["db"], "--host", "127.0.0.1", "--port", str(port)],
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


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT)


def test_search_page_renders_its_images_in_chromium(server: str, tmp_path: Path) -> None:
    url = f"{server}/photos/-/semsearch?q=cat&k={K}"
    # the page's own script marks the grid with how many images decoded
    dom = _chromium(tmp_path / "dom-profile", "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    grid = re.search(r'<ol class="semsearch-grid"([^>]*)>', dom.stdout)
    assert grid, dom.stdout[-2000:]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', grid.group(1)))
    assert attrs == {"images": str(K), "loaded": str(K), "complete": "true"}
    assert "<script>alert" not in dom.stdout  # the <script> file name and label stay text

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "search.png"
    shot.unlink(missing_ok=True)
    done = _chromium(tmp_path / "shot-profile", f"--screenshot={shot}", "--window-size=1200,900", url)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (1200, 900)
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 100  # thumbnails and text, not a blank page
