"""The cost of large k in the SQL table functions, and of their interruption points.

    python benchmarks/sqlfuncs.py --db photos.db [--image 1] [--repeats 7]

Prints, for ``image_tags`` and ``similar_words``, the median time of a fresh (uncached)
call at k=10 and at k=4096 and their ratio; and the cost of one interruption point
against a k=10 ``similar_words`` call measured in the same run. The goal (issue 18): a
4096-row call stays within a few tens of milliseconds, so ``sql_time_limit_ms`` stops
it, and an interruption point costs a small share of a query.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from semsearch_sqlite.queries import search, sqlfuncs
from semsearch_sqlite.storage.store import Store

HERE = Path(__file__).resolve().parent


def median_seconds(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--image", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with Store.open(args.db, readonly=True) as store:
        conn = store.conn
        search.warm(conn)
        image = args.image or conn.execute("select min(id) from images").fetchone()[0]
        search.image_tags(conn, image, 4096)  # builds the cached tag mask once
        out: dict[str, float] = {}
        for name, call in (
            ("image_tags", lambda k: search.image_tags(conn, image, k)),
            ("similar_words", lambda k: search.similar_words(conn, "cat", k)),
        ):
            small = median_seconds(lambda call=call: call(10), args.repeats)
            large = median_seconds(lambda call=call: call(4096), args.repeats)
            out[f"{name}_k10_ms"], out[f"{name}_k4096_ms"] = small * 1000, large * 1000
            out[f"{name}_ratio"] = large / small
            print(f"{name}: k=10 {small * 1000:.2f} ms, k=4096 {large * 1000:.2f} ms (x{large / small:.1f})")
        point = median_seconds(lambda: sqlfuncs.interruption_point(conn), args.repeats * 10)
        base = out["similar_words_k10_ms"] / 1000
        out["interruption_point_us"] = point * 1e6
        out["interruption_point_share_of_k10_words"] = point / base
        print(f"interruption point: {point * 1e6:.0f} us ({point / base:.1%} of a k=10 similar_words call)")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sqlfuncs.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
