"""Make docs/search.png, the README's screenshot of the search page.

    python docs/screenshot.py                   # ingests examples/images as `make demo` does
    python docs/screenshot.py --db photos.db --query bird

Serves the database with ``datasette`` on a free localhost port and photographs
``/<db>/-/semsearch?q=QUERY`` in headless Chromium (``apt-get install chromium``),
driven by the same DevTools client as the browser tests (tests/chromium.py).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chromium import Browser  # noqa: E402 - needs the repository root on sys.path

WIDTH, HEIGHT = 1100, 720
BACKBONE = "efficientnet-lite0"  # offline, as `make demo` uses


def demo_db(folder: Path) -> Path:
    """examples/images ingested into ``folder/photos.db``, as `make demo` does."""
    import semsearch_sqlite

    db = folder / "photos.db"
    semsearch_sqlite.ingest(ROOT / "examples" / "images", db, semsearch_sqlite.IngestOptions(backbone=BACKBONE))
    return db


def serve(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``datasette DB`` on a free port; returns the process and its base URL once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "datasette", str(db), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/-/versions.json", timeout=2).close()
            return proc, base
        except (urllib.error.URLError, OSError) as e:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"datasette did not start on port {port}: {e}") from e
            time.sleep(0.2)


def shoot(url: str, output: Path) -> None:
    """A viewport-sized PNG of ``url``."""
    with Browser() as b:
        b.open(url, width=WIDTH, height=HEIGHT)
        b.screenshot(output, full_page=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a database made by ingest (default: examples/images, as make demo)")
    parser.add_argument(
        "--query", default="bird", help="the search shown (default: bird, not a label: it finds roosters and flamingos)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "search.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="semsearch-screenshot-") as tmp:
        db = args.db or demo_db(Path(tmp))
        proc, base = serve(db)
        try:
            shoot(f"{base}/{db.stem}/-/semsearch?q={urllib.request.quote(args.query)}", args.output)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
