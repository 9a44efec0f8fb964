"""Search-page latency while clients send invalid SQL: does an error Datasette answers
cost what a normal request costs?

    python benchmarks/error_flood.py DB [--clients 4] [--seconds 10]

Serves DB with ``datasette`` (a real server, this Python, the plugin as installed or on
PYTHONPATH), times the search page alone, then again while ``--clients`` threads send
``/DB.json?sql=pragma foo`` for ``--seconds``. Writes ``results/error_flood.json`` and
prints medians. Goal: the flooded median within a few times the quiet one (each error
used to print a ``rich`` traceback with locals on the event loop, ~0.3-0.6 s each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(db: str, port: int, *extra: str) -> subprocess.Popen:
    """``datasette DB`` on ``port``, its output to a log file; returns once it answers."""
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"datasette-{port}.log", "wb")  # noqa: SIM115 - the server's
    proc = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", db, "--port", str(port), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/versions.json", timeout=2).read()
            return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if proc.poll() is not None:
                raise SystemExit(f"datasette exited; see {log.name}") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("datasette did not start")


def fetch(url: str) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, (time.perf_counter() - start) * 1000


def time_page(url: str, seconds: float) -> list[float]:
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        status, ms = fetch(url)
        assert status == 200, (url, status)
        times.append(ms)
    return times


def flood(url: str, stop: threading.Event, counts: list[int]) -> None:
    while not stop.is_set():
        status, _ = fetch(url)
        counts.append(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before/after)")
    args = parser.parse_args()
    name = Path(args.db).stem
    port = free_port()
    proc = serve(args.db, port)
    base = f"http://127.0.0.1:{port}"
    page = f"{base}/{name}/-/semsearch?q=elephant"
    try:
        fetch(page)  # warm caches
        quiet = time_page(page, min(args.seconds, 5))
        stop, statuses = threading.Event(), []
        threads = [
            threading.Thread(target=flood, args=(f"{base}/{name}.json?sql=pragma+foo", stop, statuses))
            for _ in range(args.clients)
        ]
        for t in threads:
            t.start()
        flooded = time_page(page, args.seconds)
        stop.set()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(10)
    out = {
        "label": args.label,
        "clients": args.clients,
        "seconds": args.seconds,
        "search_quiet_median_ms": statistics.median(quiet),
        "search_flooded_median_ms": statistics.median(flooded),
        "search_flooded_max_ms": max(flooded),
        "search_requests_flooded": len(flooded),
        "errors_answered": len(statuses),
        "error_statuses": sorted(set(statuses)),
    }
    out["slowdown"] = out["search_flooded_median_ms"] / out["search_quiet_median_ms"]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "error_flood.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
