"""Search-page throughput of a real Datasette server under concurrent clients.

    python benchmarks/load.py DB [--clients 1 8 32] [--seconds 10] [--port 8123]

Starts ``datasette DB`` on 127.0.0.1 (only there), then for each client count sends search
requests (rotating a few words, keep-alive connections) for ``--seconds`` and prints
requests per second, median and 95th-percentile latency and the error count, as a
markdown table; ``--json FILE`` also writes them. Every loop is bounded in time and
count, and the server is stopped at the end.
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
from pathlib import Path

import httpx

WORDS = ("animal", "bird", "boat", "food", "flower", "chair", "insect", "sea", "cat", "computer")
MAX_REQUESTS = 100_000  # per client count: a bound besides the time


def wait_ready(url: str, seconds: float = 60.0) -> None:
    """Wait until the server answers (or fail after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not answer within {seconds:.0f} s")


def run_clients(base: str, db: str, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads searching for ``seconds``; throughput and latencies."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        mine: list[float] = []
        bad = 0
        with httpx.Client(base_url=base, timeout=30.0) as http:
            i = n
            while time.monotonic() < stop and len(mine) < MAX_REQUESTS // clients:
                started = time.perf_counter()
                try:
                    ok = http.get(f"/{db}/-/semsearch", params={"q": WORDS[i % len(WORDS)]}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - started)
                bad += not ok
                i += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / took, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else float("nan"),
        "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else float("nan"),
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    name = Path(args.db).stem
    base = f"http://127.0.0.1:{args.port}"
    datasette = os.path.join(os.path.dirname(sys.executable), "datasette")
    server = subprocess.Popen(
        [datasette, args.db, "--host", "127.0.0.1", "--port", str(args.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"{base}/{name}/-/semsearch?q=animal")
        rows = [run_clients(base, name, c, args.seconds) for c in args.clients]
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("| clients | requests | req/s | p50 ms | p95 ms | errors |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['requests']} | {r['req_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['errors']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"db": args.db, "seconds": args.seconds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
