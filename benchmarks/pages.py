"""Page latencies through Datasette's own client, against a plain table page (the
baseline) measured in the same run.

    python benchmarks/pages.py DB [--repeat 20]

DB is a database made by ``semsearch-sqlite ingest`` (e.g. of caltech101-dev). Prints a
markdown table of median milliseconds and the ratio to the baseline. Goals: every 404
under 100 ms and about as fast as the baseline (Datasette's default handler printed a
``rich`` traceback for each, 0.4-0.9 s); paging costs no more than page 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import time

from datasette.app import Datasette


async def measure(db: str, repeat: int) -> list[tuple[str, str, int, float]]:
    name = os.path.splitext(os.path.basename(db))[0]
    ds = Datasette([db])
    await ds.invoke_startup()
    paths = {
        "baseline: table page": f"/{name}/tags?_size=5",
        "search, page 1": f"/{name}/-/semsearch?q=elephant",
        "search, page 3": f"/{name}/-/semsearch?q=elephant&page=3",
        "empty search page": f"/{name}/-/semsearch",
        "unknown word": f"/{name}/-/semsearch?q=elefant",
        "image page": f"/{name}/-/semsearch/image/5",
        "404: no such table": f"/{name}/nonexistent",
        "404: no route": "/a/b/c/d/e",
        "404: no such image": f"/{name}/-/semsearch/image/99999999",
    }
    rows = []
    for label, path in paths.items():
        times, status = [], 0
        for i in range(repeat + 1):
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                start = time.perf_counter()
                r = await ds.client.get(path)
                elapsed = time.perf_counter() - start
            status = r.status_code
            if i:  # the first request warms caches
                times.append(elapsed * 1000)
        rows.append((label, path, status, statistics.median(times)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.db, args.repeat))
    baseline = rows[0][3]
    print("| page | status | median ms | ratio to baseline |")
    print("|---|---|---|---|")
    for label, _, status, ms in rows:
        print(f"| {label} | {status} | {ms:.1f} | {ms / baseline:.2f} |")


if __name__ == "__main__":
    main()
