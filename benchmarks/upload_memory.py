"""Server memory under concurrent large uploads to the search-by-image page.

    python benchmarks/upload_memory.py DB [--uploads 32] [--megapixels 62]

Serves DB with ``datasette`` (a real server; the plugin as installed or on PYTHONPATH),
POSTs ``--uploads`` copies of one large PNG at once, and reads the server's RSS from
/proc (Linux): before, its peak (VmHWM) and a few seconds after. Writes
``results/upload_memory.json`` and prints it. Goal: the peak bounded by about one or two
decodes whatever the number of uploads, and memory given back after (it was 377 MB ->
2.9 GB, and stayed, for 32 uploads of 62 megapixels).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from error_flood import free_port, serve  # a sibling script, not a package


def big_png(megapixels: float, folder: Path) -> Path:
    """A smooth (so small on disk) RGB PNG of about ``megapixels``, made once."""
    width = int((megapixels * 1e6 * 3 / 2) ** 0.5)
    height = int(megapixels * 1e6 / width)
    path = folder / f"big-{width}x{height}.png"
    if not path.exists():
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        rgb = np.stack(
            [
                np.broadcast_to(x, (height, width)),
                np.broadcast_to(y, (height, width)),
                np.full((height, width), 90, np.float32),
            ],
            axis=-1,
        ).astype(np.uint8)
        Image.fromarray(rgb).save(path, compress_level=6)
    return path


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of ``pid`` in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def post(url: str, data: bytes, statuses: list[int]) -> None:
    import httpx

    try:
        r = httpx.post(url, files={"image": ("big.png", data, "image/png")}, data={"k": "5"}, timeout=900)
        statuses.append(r.status_code)
    except httpx.HTTPError as e:
        statuses.append(-1)
        print("upload failed:", e, file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--uploads", type=int, default=32)
    parser.add_argument("--megapixels", type=float, default=62)
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before/after)")
    args = parser.parse_args()
    png = big_png(args.megapixels, Path(args.db).resolve().parent)
    data = png.read_bytes()
    port = free_port()
    proc = serve(args.db, port)
    url = f"http://127.0.0.1:{port}/{Path(args.db).stem}/-/semsearch/upload"
    try:
        post(url, _small_png(png), [])  # loads the CNN
        time.sleep(1)
        before = rss(proc.pid)["VmRSS"]
        statuses: list[int] = []
        threads = [threading.Thread(target=post, args=(url, data, statuses)) for _ in range(args.uploads)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        time.sleep(3)
        after = rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    with Image.open(png) as im:
        size = im.size
    out = {
        "label": args.label,
        "uploads": args.uploads,
        "image": f"{size[0]}x{size[1]} PNG, {len(data) / 1e6:.1f} MB",
        "rss_before_mb": round(before),
        "rss_peak_mb": round(after["VmHWM"]),
        "rss_after_mb": round(after["VmRSS"]),
        "seconds": round(seconds, 1),
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "upload_memory.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def _small_png(png: Path) -> bytes:
    import io

    buf = io.BytesIO()
    with Image.open(png) as im:
        im.reduce(32).save(buf, "PNG")
    return buf.getvalue()


if __name__ == "__main__":
    main()
