"""Search-page throughput of a real Datasette server under concurrent clients.

    python benchmarks/load.py DB [--clients 1 8 32] [--seconds 10] [--port N]

Starts ``datasette DB`` on 127.0.0.1 (only there), then for each client count sends search
requests (rotating a few words, keep-alive connections) for ``--seconds`` and prints
requests per second, median and 95th-percentile latency and the error count, as a
markdown table; ``--json FILE`` also writes them. Every loop is bounded in time and
count, and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from error_flood import free_port, serve  # noqa: E402  (the sibling benchmark: one way to serve)

WORDS = ("animal", "bird", "boat", "food", "flower", "chair", "insect", "sea", "cat", "computer")
MAX_REQUESTS = 100_000  # per client count: a bound besides the time


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
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    name = Path(args.db).stem
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    server = serve(args.db, port)  # error_flood's: a real server, once it answers
    try:
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
