"""Query latency and recall at scale: numpy brute force, sqlite-vec, and this project's
search layer, measured in one run over the same vectors.

    python benchmarks/query.py            # every size (several minutes; peak memory ~6 GB)
    python benchmarks/query.py --quick    # three small cases (about a minute)
    python benchmarks/query.py --cases 100k:4096,1M:300 --queries 200
    python benchmarks/query.py --cases 1M:4096 --output benchmarks/results/query_1M_4096.json

Every case also ends with the product served by a FRESH process that only opens the
file and answers the same queries (its peak RSS is the serving cost), printed as one line:

    RESULT case=1M:4096 strategy=codes p50_ms=... p95_ms=... recall10=... serve_rss_gib=... first_query_s=...

Big cases also print the disk use per vector (pages, from dbstat) of the rescoring copy
(int16 rows), the codes, vec0's own tables, and the whole file:

    RESULT case=1M:4096 copy_bytes_per_vector=... copy_row_bytes=... ... file_bytes_per_vector=...

and ``--float32-copy`` then rewrites the copy in float32, as files written before hold
it, and serves the same queries again (same index, same exact answers): the A/B of the two.

Cases whose float32 matrix exceeds 4 GiB (``--cases 1M:4096``: 16 GB; about 45 minutes
and 40 GB of disk under ``--work``) are generated and inserted block by block, their
exact answers come from one streamed pass over the file, numpy's latency is timed on
65k rows in RAM and scaled, sqlite-vec float gets 3 queries (each reads the whole
table), and the library's in-process rows are left out (they would need the matrix).

Rows per case: numpy brute force (the reference, and the exact answers), sqlite-vec
float (vec0 KNN), sqlite-vec bit + rescore (vec0 hamming top 100, then exact cosine
from a plain BLOB table), the library's ``Matrix.top_k`` (auto: the stored IVF index
when the table has one, else exact) and forced exact, and the SQL face
``similar_to_image(id, 11)`` where the table holds images. Latency median and p95,
recall@10 against numpy's exact answer, ratio to numpy, build time, memory and bytes
per vector. Writes benchmarks/results/query.json and prints a markdown table.

The vectors are synthetic but structured: a mixture of topics and sub-clusters with a
low-dimensional continuous part and isotropic noise (word-like, 50/300-d); for the
1280/4096-d "visual" spaces the same shifted and passed through a ReLU (about 70%
zeros, like CNN features). Half the queries are stored vectors asking for their
neighbours (image -> image; the vector itself excluded), half are sums of two stored
vectors plus noise (like multi-word text queries).
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the serving process's first query is timed from here

import argparse
import gc
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.storage.store import Store, connect
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL, VEC_WORDS, read_vectors
from semsearch_sqlite.vectors import ivf, matrix, upkeep

HERE = Path(__file__).resolve().parent
FULL = "10k:50,10k:300,10k:1280,10k:4096,100k:50,100k:300,100k:1280,100k:4096,1M:50,1M:300"
QUICK = "10k:300,10k:4096,100k:300"
K = 10
RESCORE = 100
CNN_IMAGES_PER_S = 50.0  # measured ingest speed (benchmarks/results/ingest.json)
SQL_READ_MAX_CELLS = 40_000_000  # beyond this the SQL read is timed on a slice and scaled
BIG_BYTES = 4 << 30  # cases whose float32 matrix exceeds this are generated and measured streamed


def parse_n(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * mult)


# -- data ----------------------------------------------------------------------------------
def structured_blocks(n: int, d: int, seed: int, visual: bool) -> Iterator[tuple[int, np.ndarray]]:
    """Topics x sub-clusters x a low-dimensional continuum x noise (float32, raw), as
    ``(first row, block)`` a few MB at a time, so 1M x 4096 never sits in memory."""
    rng = np.random.default_rng(seed)
    topics, subs, latent = 48, max(64, n // 150), 8
    mu = 0.4 * rng.standard_normal(d).astype(np.float32)  # embeddings aren't centred
    t = rng.standard_normal((topics, d)).astype(np.float32)
    s = 0.9 * rng.standard_normal((subs, d)).astype(np.float32)
    basis = 0.5 * rng.standard_normal((topics, latent, d)).astype(np.float32)
    sub_topic = rng.integers(0, topics, subs)
    sub = rng.choice(subs, n, p=rng.dirichlet(np.full(subs, 0.7)))
    step = max(1024, (1 << 22) // d)
    held: list[tuple[int, np.ndarray]] = []
    cut = None
    need = min(n, 2000)  # the ReLU cut: a quantile of the first rows
    for a in range(0, n, step):
        b = min(n, a + step)
        tp = sub_topic[sub[a:b]]
        z = rng.standard_normal((b - a, latent)).astype(np.float32)
        x = mu + t[tp] + s[sub[a:b]] + np.einsum("nl,nld->nd", z, basis[tp])
        x += 0.7 * rng.standard_normal((b - a, d)).astype(np.float32)
        if not visual:
            yield a, x
            continue
        if cut is None:
            held.append((a, x))
            if sum(len(h) for _, h in held) >= need:
                cut = np.quantile(np.concatenate([h for _, h in held])[:need], 0.7)
                for a0, h in held:
                    yield a0, np.maximum(h - cut, 0)
                held = []
            continue
        yield a, np.maximum(x - cut, 0)


def structured(n: int, d: int, seed: int, visual: bool) -> np.ndarray:
    """:func:`structured_blocks` in one matrix."""
    return np.concatenate([x for _, x in structured_blocks(n, d, seed, visual)])


def unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1
    return (x / n).astype(np.float32)


def make_queries(x: np.ndarray, ids: np.ndarray, nq: int, seed: int) -> list[tuple[np.ndarray, int | None]]:
    """Half stored vectors (excluding themselves), half pair sums plus noise."""
    rng = np.random.default_rng(seed)
    out: list[tuple[np.ndarray, int | None]] = []
    for i in rng.choice(len(x), nq // 2, replace=False):
        out.append((x[i].copy(), int(ids[i])))
    for _ in range(nq - nq // 2):
        a, b = rng.integers(0, len(x), 2)
        v = x[a] + x[b]
        v = v / np.linalg.norm(v)
        v = v + 0.3 * rng.standard_normal(len(v)).astype(np.float32) / np.sqrt(len(v))
        out.append(((v / np.linalg.norm(v)).astype(np.float32), None))
    return out


# -- measurement ------------------------------------------------------------------------------
def timed(
    fn: Callable[[np.ndarray, int | None], list[int]], queries: list[tuple[np.ndarray, int | None]]
) -> tuple[list[float], list[list[int]]]:
    lat, res = timed_together([fn], queries)
    return lat[0], res[0]


def timed_together(
    fns: list[Callable[[np.ndarray, int | None], list[int]]], queries: list[tuple[np.ndarray, int | None]]
) -> tuple[list[list[float]], list[list[list[int]]]]:
    """Each query through every function in turn (so that they share the machine's
    noise), after one warm-up call each."""
    for fn in fns:
        fn(*queries[0])
    lat: list[list[float]] = [[] for _ in fns]
    res: list[list[list[int]]] = [[] for _ in fns]
    for q, self_id in queries:
        for j, fn in enumerate(fns):
            t = time.perf_counter()
            got = fn(q, self_id)
            lat[j].append(time.perf_counter() - t)
            res[j].append(got)
    return lat, res


def recall(results: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(r[:K]) & set(t[:K])) / K for r, t in zip(results, truth)]))


def drop_self(hits: list[int], self_id: int | None) -> list[int]:
    return [h for h in hits if h != self_id][:K]


def rss_gib() -> float:
    """This process's peak resident memory. VmHWM where there is one: ru_maxrss keeps
    the parent's figure across fork and exec, so a fresh child would report its parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_case(n: int, d: int, nq: int, nq_slow: int, work: Path, skip_sqlite_vec: bool) -> dict[str, Any]:
    visual = d >= 1000
    table = VEC_VISUAL if visual else (VEC_WORDS if n > 200_000 else VEC_SEMANTIC)
    key = {VEC_VISUAL: "image_id", VEC_SEMANTIC: "image_id", VEC_WORDS: "word_id"}[table]
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    print(
        f"\n## {label} x {d} ({'visual, post-ReLU' if visual else 'word-like'}; {table})", file=sys.stderr, flush=True
    )
    case: dict[str, Any] = {"n": n, "d": d, "table": table, "rows": {}}
    raw = structured(n, d, seed=n + d, visual=visual)
    ids = np.arange(1, n + 1, dtype=np.int64)
    path = work / f"bench_{label}_{d}.db"

    # -- ingest: vec0 float (the product's table), timed
    store = Store.open(path, create=True)
    t = time.perf_counter()
    with store.atomic():
        store.ensure_vec_table(table, d)
        step = 5000
        for a in range(0, n, step):
            store.conn.executemany(
                f"insert into {table}({key}, embedding) values (?, ?)",
                ((int(i), v.tobytes()) for i, v in zip(ids[a : a + step], raw[a : a + step])),
            )
        if table != VEC_WORDS:
            store.conn.executemany(
                "insert into images(id, path, sha256) values (?, ?, '')", ((int(i), f"img/{i}.jpg") for i in ids)
            )
        store.bump_generation()
    case["vec0_insert_s"] = round(time.perf_counter() - t, 2)
    store.conn.execute("pragma wal_checkpoint(truncate)")  # sizes: everything in the main file
    size_vec0 = path.stat().st_size
    print(f"  vec0 insert {case['vec0_insert_s']} s", file=sys.stderr, flush=True)

    x = unit(raw)
    queries = make_queries(x, ids, nq, seed=d)
    slow_queries = queries[: nq_slow // 2] + queries[nq // 2 : nq // 2 + nq_slow - nq_slow // 2]

    # -- numpy brute force: the reference
    def numpy_exact(q: np.ndarray, self_id: int | None) -> list[int]:
        s = x @ q
        top = np.argpartition(s, len(s) - K - 1)[len(s) - K - 1 :]
        top = top[np.argsort(-s[top], kind="stable")]
        return drop_self([int(ids[i]) for i in top], self_id)

    numpy_lat, truth = timed(numpy_exact, queries)
    truth_of = {i: t for i, t in enumerate(truth)}
    slow_truth = truth[: nq_slow // 2] + truth[nq // 2 : nq // 2 + nq_slow - nq_slow // 2]
    base = float(np.median(numpy_lat))
    rows = case["rows"]

    def add(
        name: str,
        lat: list[float],
        rec: float,
        base: float = base,
        *,
        qs: list | None = None,
        res: list | None = None,
        tr: list | None = None,
        **extra: Any,
    ) -> None:
        med = float(np.median(lat))
        rows[name] = {
            "median_ms": round(med * 1e3, 3),
            "p95_ms": round(float(np.percentile(lat, 95)) * 1e3, 3),
            "recall@10": round(rec, 4),
            "vs_numpy": round(med / base, 3),
            "queries": len(lat),
            **extra,
        }
        if qs is not None and res is not None and tr is not None:  # by kind of query
            for kind, want in (("image", True), ("text", False)):
                sel = [i for i, (_, self_id) in enumerate(qs) if (self_id is not None) == want]
                if sel:
                    rows[name][f"{kind}_median_ms"] = round(float(np.median([lat[i] for i in sel])) * 1e3, 3)
                    rows[name][f"{kind}_recall@10"] = round(recall([res[i] for i in sel], [tr[i] for i in sel]), 4)
        print(f"  {name}: {med * 1e3:.2f} ms, recall {rec:.3f}", file=sys.stderr, flush=True)

    # -- sqlite-vec float and bit + rescore (slow: fewer queries; numpy's times on the same ones)
    if not skip_sqlite_vec:
        conn = store.conn

        def vec_float(q: np.ndarray, self_id: int | None) -> list[int]:
            got = conn.execute(
                f"select {key} from {table} where embedding match ? and k = ?", [q.tobytes(), K + 1]
            ).fetchall()
            return drop_self([r[0] for r in got], self_id)

        lat, res = timed_together([numpy_exact, vec_float], slow_queries)
        add(
            "sqlite-vec float",
            lat[1],
            recall(res[1], slow_truth),
            float(np.median(lat[0])),
            qs=slow_queries,
            res=res[1],
            tr=slow_truth,
            db_bytes_per_vector=round(size_vec0 / n, 1),
        )

        t = time.perf_counter()
        with store.atomic():
            dbits = 8 * ((d + 7) // 8)  # bit vectors come in whole bytes: pad with zeros
            conn.execute(f"create virtual table bench_bits using vec0(id integer primary key, embedding bit[{dbits}])")
            conn.execute("create table bench_floats(id integer primary key, embedding blob)")
            for a in range(0, n, 5000):
                bits = np.packbits(raw[a : a + 5000] > 0, axis=1, bitorder="little")
                conn.executemany(
                    "insert into bench_bits(id, embedding) values (?, vec_bit(?))",
                    ((int(i), b.tobytes()) for i, b in zip(ids[a : a + 5000], bits)),
                )
                conn.executemany(
                    "insert into bench_floats(id, embedding) values (?, ?)",
                    ((int(i), v.tobytes()) for i, v in zip(ids[a : a + 5000], raw[a : a + 5000])),
                )
        bit_build = time.perf_counter() - t
        conn.execute("pragma wal_checkpoint(truncate)")
        size_bits = path.stat().st_size - size_vec0

        def vec_bits(q: np.ndarray, self_id: int | None) -> list[int]:
            got = conn.execute(
                "with coarse as (select id from bench_bits where embedding match vec_bit(?) and k = ?) "
                "select coarse.id, vec_distance_cosine(f.embedding, ?) as d from coarse "
                "join bench_floats f on f.id = coarse.id order by d limit ?",
                [np.packbits(q > 0, bitorder="little").tobytes(), RESCORE, q.tobytes(), K + 1],
            ).fetchall()
            return drop_self([r[0] for r in got], self_id)

        lat, res = timed_together([numpy_exact, vec_bits], slow_queries)
        add(
            f"sqlite-vec bit + rescore {RESCORE}",
            lat[1],
            recall(res[1], slow_truth),
            float(np.median(lat[0])),
            qs=slow_queries,
            res=res[1],
            tr=slow_truth,
            build_s=round(bit_build, 2),
            db_bytes_per_vector=round(size_bits / n, 1),
        )
        with store.atomic():
            conn.execute("drop table bench_bits")
            conn.execute("drop table bench_floats")

    # -- this project: refresh_index (what ingest calls), then a reader's first load
    del raw
    gc.collect()
    matrix.clear_cache()
    t = time.perf_counter()
    summary = upkeep.refresh_index(store, table)
    refresh_s = time.perf_counter() - t
    index_blob = store.conn.execute(
        "select length(weights) from models where name = ?", [ivf.index_name(table)]
    ).fetchone()
    store.conn.execute("pragma wal_checkpoint(truncate)")
    store.close()
    matrix.clear_cache()
    gc.collect()
    case["refresh_index"] = {
        "action": summary["action"],
        "seconds": round(refresh_s, 2),
        "vs_vec0_insert": round(refresh_s / max(case["vec0_insert_s"], 1e-9), 3),
        "vs_cnn_ingest": round(refresh_s / (n / CNN_IMAGES_PER_S), 4) if table != VEC_WORDS else None,
        "index_db_bytes_per_vector": round((index_blob[0] if index_blob else 0) / n, 1),
        "config": {k: v for k, v in summary.get("config", {}).items() if k not in ("stamp",)},
    }
    print(f"  refresh_index: {summary['action']} in {refresh_s:.2f} s", file=sys.stderr, flush=True)

    reader = connect(path, readonly=True)
    t = time.perf_counter()
    m = matrix.matrix(reader, table)
    case["load_s"] = round(time.perf_counter() - t, 2)
    cells = n * d
    if cells <= SQL_READ_MAX_CELLS:
        t = time.perf_counter()
        read_vectors(reader, table)
        case["sql_read_s"] = round(time.perf_counter() - t, 2)
    else:  # the SQL read of a slice, scaled (the whole read takes minutes)
        part = max(1000, SQL_READ_MAX_CELLS // (4 * d))
        t = time.perf_counter()
        reader.execute(f"select {key}, embedding from {table} where {key} <= ? order by {key}", [part]).fetchall()
        case["sql_read_s_estimated"] = round((time.perf_counter() - t) * n / part, 1)
    print(
        f"  first load {case['load_s']} s (SQL read: {case.get('sql_read_s', case.get('sql_read_s_estimated'))} s)",
        file=sys.stderr,
        flush=True,
    )

    mem = m.vectors.nbytes + m.ids.nbytes + 16 * len(m)
    if m.ivf is not None:
        mem += m.ivf.centroids.nbytes + m.ivf.offsets.nbytes

    def library(exact: bool | None) -> Callable[[np.ndarray, int | None], list[int]]:
        def run(q: np.ndarray, self_id: int | None) -> list[int]:
            return [i for i, _ in m.top_k(q, K, exclude={self_id} if self_id is not None else None, exact=exact)]

        return run

    # numpy and the library, query by query in turn (they share the machine's noise)
    strategy = m.strategy(K, {1})
    lat, res = timed_together([numpy_exact, library(None), library(True)], queries)
    base = float(np.median(lat[0]))
    add(
        "numpy brute force", lat[0], 1.0, base, qs=queries, res=res[0], tr=truth, memory_bytes_per_vector=x.itemsize * d
    )
    auto = f"Matrix.top_k (auto: {strategy})"
    add(
        auto,
        lat[1],
        recall(res[1], truth),
        base,
        qs=queries,
        res=res[1],
        tr=truth,
        memory_bytes_per_vector=round(mem / n, 1),
        first_load_s=case["load_s"],
        build_s=round(refresh_s, 2),
    )
    add("Matrix.top_k (exact=True)", lat[2], recall(res[2], truth), base, qs=queries, res=res[2], tr=truth)
    if m.ivf is not None:
        p = m.ivf.probes_for(K + 1)
        rows[auto].update(nprobe=p, nlist=m.ivf.nlist, scanned_share=round(m.ivf.scan_share(K + 1), 4))
    # -- the SQL face, where the table holds images
    if table != VEC_WORDS:
        try:
            from semsearch_sqlite.queries.sqlfuncs import register_functions

            register_functions(reader)
            space = "visual" if table == VEC_VISUAL else "semantic"
            stored_q = [(q, s) for q, s in queries if s is not None]
            stored_truth = [truth_of[i] for i, (_, s) in enumerate(queries) if s is not None]

            def sql(q: np.ndarray, self_id: int | None) -> list[int]:
                got = reader.execute("select image_id from similar_to_image(?, ?, ?)", [self_id, K, space]).fetchall()
                return [r[0] for r in got]

            lat, res = timed_together([numpy_exact, sql], stored_q)
            add("SQL similar_to_image(id, 10)", lat[1], recall(res[1], stored_truth), float(np.median(lat[0])))
        except Exception as e:  # noqa: BLE001 - the SQL face is optional here
            print(f"  SQL face skipped: {e}", file=sys.stderr)
    reader.close()
    matrix.clear_cache()
    served(case, path, table, queries, truth, base)
    first = ["numpy brute force"]
    case["rows"] = {k: rows[k] for k in first + [k for k in rows if k not in first]}
    # the product's file: vec0 table (+ images rows) and the stored index
    case["db_file_bytes_per_vector"] = round((size_vec0 + (index_blob[0] if index_blob else 0)) / n, 1)
    case["peak_rss_gib"] = round(rss_gib(), 2)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return case


# -- the serving side, in a fresh process ------------------------------------------------------
def serve(path: Path, table: str, qfile: Path, out: Path) -> None:
    """What ``--serve`` runs in a fresh process: open the file, answer every query
    (the first one timed from the interpreter's start: imports, load, query), write
    latencies and answers."""
    t0 = _STARTED
    conn = connect(path, readonly=True)
    data = np.load(qfile)
    qs, selfs = data["queries"], data["selfs"]

    def ask(i: int) -> list[int]:
        ex = {int(selfs[i])} if selfs[i] >= 0 else None
        return [h for h, _ in m.top_k(qs[i], K, exclude=ex)]

    m = matrix.matrix(conn, table)
    ask(0)
    first_s = time.perf_counter() - t0
    lat, res = [], []
    for i in range(len(qs)):
        t = time.perf_counter()
        got = ask(i)
        lat.append(time.perf_counter() - t)
        res.append(got)
    nbytes = m.nbytes if hasattr(m, "nbytes") else m.vectors.nbytes + m.ids.nbytes + 16 * len(m)
    strategy = m.strategy(K, {1})
    out.write_text(
        json.dumps(
            {
                "lat": lat,
                "res": res,
                "first_query_s": first_s,
                "rss_gib": rss_gib(),
                "strategy": strategy,
                "bytes_per_vector": nbytes / max(len(m), 1),
            }
        )
    )


def served(
    case: dict[str, Any],
    path: Path,
    table: str,
    queries: list[tuple[np.ndarray, int | None]],
    truth: list[list[int]],
    base: float | None,
    tag: str = "",
) -> None:
    """Run :func:`serve` in a fresh interpreter; add its row and print the RESULT line
    (``tag``: what differs from the default row, in its name)."""
    import subprocess

    qfile, out = path.with_suffix(".queries.npz"), path.with_suffix(".served.json")
    np.savez(
        qfile,
        queries=np.stack([q for q, _ in queries]).astype(np.float32),
        selfs=np.array([-1 if s is None else s for _, s in queries], dtype=np.int64),
    )
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            str(path),
            "--table",
            table,
            "--queries-file",
            str(qfile),
            "--served-out",
            str(out),
        ],
        check=True,
    )
    got = json.loads(out.read_text())
    qfile.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    lat, res = got["lat"], [drop_self(r, s) for r, (_, s) in zip(got["res"], queries)]
    rec = recall(res, truth)
    name = f"served: fresh process ({got['strategy']}{', ' + tag if tag else ''})"
    rows = case["rows"]
    med = float(np.median(lat))
    rows[name] = {
        "median_ms": round(med * 1e3, 3),
        "p95_ms": round(float(np.percentile(lat, 95)) * 1e3, 3),
        "recall@10": round(rec, 4),
        "vs_numpy": round(med / base, 3) if base else None,
        "queries": len(lat),
        "memory_bytes_per_vector": round(got["bytes_per_vector"], 1),
        "serve_rss_gib": round(got["rss_gib"], 3),
        "first_query_s": round(got["first_query_s"], 2),
    }
    label = f"{case['n'] // 1000}k" if case["n"] < 1_000_000 else f"{case['n'] // 1_000_000}M"
    print(
        f"RESULT case={label}:{case['d']} strategy={got['strategy']}{'/' + tag.replace(' ', '-') if tag else ''} "
        f"p50_ms={med * 1e3:.3f} "
        f"p95_ms={float(np.percentile(lat, 95)) * 1e3:.3f} recall10={rec:.4f} serve_rss_gib={got['rss_gib']:.3f} "
        f"first_query_s={got['first_query_s']:.2f} bytes_per_vector={got['bytes_per_vector']:.0f}",
        flush=True,
    )


class _Rows:
    """Stands in for the matrix in :func:`make_queries`: records which rows it reads
    (the choice depends only on the count), then hands out the real rows."""

    def __init__(self, n: int, d: int, rows: dict[int, np.ndarray] | None = None):
        self.n, self.d, self.rows, self.seen = n, d, rows, set()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> np.ndarray:
        self.seen.add(int(i))
        return self.rows[int(i)] if self.rows is not None else np.zeros(self.d, dtype=np.float32)


def run_big_case(
    n: int, d: int, nq: int, nq_slow: int, work: Path, skip_sqlite_vec: bool, float32_copy: bool = False
) -> dict[str, Any]:
    """A case too big for a float matrix in RAM (1M x 4096: 16 GB): generated and
    inserted block by block, exact answers by one streamed pass over the file, numpy's
    latency timed on a slice that fits and scaled, the product served by a fresh process."""
    from semsearch_sqlite.storage.vec0 import read_chunks
    from semsearch_sqlite.vectors.codes import TopK

    visual = d >= 1000
    table = VEC_VISUAL if visual else VEC_SEMANTIC
    key = "image_id"
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    print(
        f"\n## {label} x {d} ({'visual, post-ReLU' if visual else 'word-like'}; {table}; streamed)",
        file=sys.stderr,
        flush=True,
    )
    case: dict[str, Any] = {"n": n, "d": d, "table": table, "rows": {}}
    ids = np.arange(1, n + 1, dtype=np.int64)
    path = work / f"bench_{label}_{d}.db"
    probe = _Rows(n, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        make_queries(probe, ids, nq, seed=d)  # which rows the queries use
    kept: dict[int, np.ndarray] = {}
    sample_rows = 1 << 16 if d >= 1000 else 1 << 18  # numpy's timing slice (1 GB at 4096-d)
    sample = np.empty((min(n, sample_rows), d), dtype=np.float32)
    store = Store.open(path, create=True)
    gen_s = 0.0
    t = time.perf_counter()
    with store.atomic():
        store.ensure_vec_table(table, d)
    g = time.perf_counter()
    for a, raw in structured_blocks(n, d, seed=n + d, visual=visual):
        gen_s += time.perf_counter() - g
        with store.atomic():  # a transaction per block: the WAL stays small
            store.conn.executemany(
                f"insert into {table}({key}, embedding) values (?, ?)",
                ((int(i), v.tobytes()) for i, v in zip(ids[a : a + len(raw)], raw)),
            )
            store.conn.executemany(
                "insert into images(id, path, sha256) values (?, ?, '')",
                ((int(i), f"img/{i}.jpg") for i in ids[a : a + len(raw)]),
            )
        x = unit(raw)
        for i in [i for i in probe.seen if a <= i < a + len(raw)]:
            kept[i] = x[i - a].copy()
        if a < len(sample):
            sample[a : a + len(x)] = x[: len(sample) - a]
        g = time.perf_counter()
    with store.atomic():
        store.bump_generation()
    case["generate_s"] = round(gen_s, 2)
    case["vec0_insert_s"] = round(time.perf_counter() - t - gen_s, 2)
    store.conn.execute("pragma wal_checkpoint(truncate)")
    size_vec0 = path.stat().st_size
    print(f"  generated in {case['generate_s']} s, vec0 insert {case['vec0_insert_s']} s", file=sys.stderr, flush=True)
    queries = make_queries(_Rows(n, d, kept), ids, nq, seed=d)
    slow_queries = queries[: nq_slow // 2] + queries[nq // 2 : nq // 2 + nq_slow - nq_slow // 2]

    # exact answers: one pass over the file for all queries at once
    t = time.perf_counter()
    reader = connect(path, readonly=True)
    q = np.stack([v for v, _ in queries])
    top = TopK(q, K, np.array([-1 if s is None else s for _, s in queries], dtype=np.int64))
    at, order_ids = 0, np.empty(n, dtype=np.int64)
    for block_ids, raw in read_chunks(reader, table, d):
        top.add(unit(raw), at, block_ids)
        order_ids[at : at + len(block_ids)] = block_ids
        at += len(block_ids)
    truth = [order_ids[r].tolist() for r in top.best()]
    case["exact_pass_s"] = round(time.perf_counter() - t, 2)
    print(f"  exact answers (one streamed pass) {case['exact_pass_s']} s", file=sys.stderr, flush=True)

    # numpy brute force, in RAM: timed on the slice, scaled to the whole table
    def numpy_slice(v: np.ndarray, self_id: int | None) -> list[int]:
        s = sample @ v
        top_ = np.argpartition(s, len(s) - K - 1)[len(s) - K - 1 :]
        return top_[np.argsort(-s[top_])].tolist()

    lat, _ = timed(numpy_slice, queries)
    scale = n / len(sample)
    base = float(np.median(lat)) * scale
    rows = case["rows"]
    rows["numpy brute force (est.)"] = {
        "median_ms": round(base * 1e3, 3),
        "p95_ms": round(float(np.percentile(lat, 95)) * scale * 1e3, 3),
        "recall@10": 1.0,
        "vs_numpy": 1.0,
        "queries": len(lat),
        "memory_bytes_per_vector": 4 * d,
        "note": f"timed on {len(sample)} rows in RAM, x{scale:.1f} "
        f"(the whole matrix would need {4 * d * n / 2**30:.1f} GiB)",
    }
    print(f"  numpy brute force (est.): {base * 1e3:.1f} ms", file=sys.stderr, flush=True)
    sample = sample[:0].copy()  # frees the slice before the index build
    gc.collect()

    if not skip_sqlite_vec:

        def vec_float(v: np.ndarray, self_id: int | None) -> list[int]:
            got = reader.execute(
                f"select {key} from {table} where embedding match ? and k = ?", [v.tobytes(), K + 1]
            ).fetchall()
            return drop_self([r[0] for r in got], self_id)

        slow_truth = truth[: nq_slow // 2] + truth[nq // 2 : nq // 2 + nq_slow - nq_slow // 2]
        lat, res = timed(vec_float, slow_queries)
        med = float(np.median(lat))
        rows["sqlite-vec float"] = {
            "median_ms": round(med * 1e3, 3),
            "p95_ms": round(float(np.percentile(lat, 95)) * 1e3, 3),
            "recall@10": round(recall(res, slow_truth), 4),
            "vs_numpy": round(med / base, 3),
            "queries": len(lat),
            "db_bytes_per_vector": round(size_vec0 / n, 1),
        }
        print(f"  sqlite-vec float: {med * 1e3:.0f} ms", file=sys.stderr, flush=True)
    reader.close()

    t = time.perf_counter()
    summary = upkeep.refresh_index(store, table)
    refresh_s = time.perf_counter() - t
    store.conn.execute("pragma wal_checkpoint(truncate)")
    store.close()
    matrix.clear_cache()
    size_all = path.stat().st_size
    case["refresh_index"] = {
        "action": summary["action"],
        "seconds": round(refresh_s, 2),
        "vs_vec0_insert": round(refresh_s / max(case["vec0_insert_s"], 1e-9), 3),
        "vs_cnn_ingest": round(refresh_s / (n / CNN_IMAGES_PER_S), 4),
        "index_db_bytes_per_vector": round((size_all - size_vec0) / n, 1),
        "config": {k: v for k, v in summary.get("config", {}).items() if k not in ("stamp",)},
    }
    case["load_s"] = None
    print(
        f"  refresh_index: {summary['action']} in {refresh_s:.1f} s "
        f"(nprobe {summary['config'].get('nprobe')}, shortlist {summary['config'].get('shortlist')})",
        file=sys.stderr,
        flush=True,
    )
    served(case, path, table, queries, truth, base)
    name = next(k for k in rows if k.startswith("served"))
    case["load_s"] = rows[name]["first_query_s"]
    case["sql_read_s_estimated"] = None
    case["db_file_bytes_per_vector"] = round(size_all / n, 1)
    case["disk"] = disk_use(path, table, n)
    print(
        f"RESULT case={label}:{d} "
        + " ".join(f"{k}={v}" for k, v in case["disk"].items())
        + f" file_bytes_per_vector={case['db_file_bytes_per_vector']}",
        flush=True,
    )
    if float32_copy:  # the same index and queries, rescored from the float32 copy earlier versions wrote
        t = time.perf_counter()
        rewrite_copy_float32(path, table, d)
        case["float32_copy_rewrite_s"] = round(time.perf_counter() - t, 1)
        served(case, path, table, queries, truth, base, tag="float32 copy")
        case["disk_float32_copy"] = disk_use(path, table, n)
        print(
            f"RESULT case={label}:{d} float32 copy: "
            + " ".join(f"{k}={v}" for k, v in case["disk_float32_copy"].items())
        )
    case["peak_rss_gib"] = round(rss_gib(), 2)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return case


def rewrite_copy_float32(path: Path, table: str, d: int) -> None:
    """Rewrite every row of the rescoring copy as raw float32, as files written before
    the compact copy hold it (a fresh table, so its pages are laid out as a build's)."""
    from semsearch_sqlite.storage.vec0 import float_rows_table, read_chunks

    copy = float_rows_table(table)
    conn = connect(path)
    try:
        conn.execute("begin")
        conn.execute(f'drop table "{copy}"')
        conn.execute(f'create table "{copy}" (id integer primary key, embedding blob not null)')
        conn.execute("commit")
        for block_ids, raw in read_chunks(conn, table, d):
            conn.execute("begin")
            conn.executemany(
                f'insert into "{copy}"(id, embedding) values (?, ?)',
                ((int(i), v.astype("<f4").tobytes()) for i, v in zip(block_ids, raw)),
            )
            conn.execute("commit")
        conn.execute("pragma wal_checkpoint(truncate)")
    finally:
        conn.close()
    matrix.clear_cache()


def disk_use(path: Path, table: str, n: int) -> dict[str, Any]:
    """Bytes per vector on disk (whole pages, from SQLite's dbstat) of the rescoring copy,
    the codes and vec0's own tables, and the length of one copy row."""
    from semsearch_sqlite.storage.vec0 import code_lists_table, float_rows_table

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        # aggregate dbstat: pageno is the btree's page count (its pgsize overflows 32 bits here)
        size = conn.execute("pragma page_size").fetchone()[0]
        pages = {k: v * size for k, v in conn.execute("select name, sum(pageno) from dbstat('main', 1) group by name")}
        row = conn.execute(f'select length(embedding) from "{float_rows_table(table)}" limit 1').fetchone()
    finally:
        conn.close()
    copy, lists = float_rows_table(table), code_lists_table(table)
    vec0 = sum(v for k, v in pages.items() if k == table or (k.startswith(table + "_") and k not in (copy, lists)))
    return {
        "copy_bytes_per_vector": round(pages.get(copy, 0) / n, 1),
        "copy_row_bytes": int(row[0]) if row else None,
        "codes_bytes_per_vector": round(pages.get(lists, 0) / n, 1),
        "vec0_bytes_per_vector": round(vec0 / n, 1),
        "free_bytes_per_vector": round(pages.get("", 0) / n, 1),
    }


def markdown(cases: list[dict[str, Any]]) -> str:
    lines = [
        "| N | D | strategy | median ms | p95 ms | recall@10 | vs numpy | image->image ms (recall) "
        "| text-like ms (recall) | build s | memory B/vec | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        for name, r in c["rows"].items():
            mem = r.get("memory_bytes_per_vector") or r.get("db_bytes_per_vector") or ""
            notes = []
            if "nprobe" in r:
                notes.append(f"nprobe {r['nprobe']}/{r['nlist']}, scans {100 * r['scanned_share']:.1f}%")
            if "first_load_s" in r:
                notes.append(f"first load {r['first_load_s']} s")
            if "db_bytes_per_vector" in r:
                notes.append("B/vec on disk")
            if "serve_rss_gib" in r:
                notes.append(f"fresh process: peak RSS {r['serve_rss_gib']} GiB, first query {r['first_query_s']} s")
            if "note" in r:
                notes.append(r["note"])
            build = r.get("build_s", "")
            n = f"{c['n'] // 1000}k" if c["n"] < 1_000_000 else f"{c['n'] // 1_000_000}M"
            kinds = [
                f"{r[f'{k}_median_ms']:.2f} ({r[f'{k}_recall@10']:.3f})" if f"{k}_median_ms" in r else ""
                for k in ("image", "text")
            ]
            lines.append(
                f"| {n} | {c['d']} | {name} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | {r['recall@10']:.3f} | "
                f"{'' if r.get('vs_numpy') is None else format(r['vs_numpy'], '.2f') + 'x'} | {kinds[0]} | {kinds[1]} "
                f"| {build} | {mem} | {'; '.join(notes)} |"
            )
    lines.append("")
    lines.append(
        "| N | D | vec0 insert s | refresh_index s | vs vec0 insert | vs CNN ingest (50 img/s) | index B/vec in DB "
        "| DB B/vec | first load s | SQL read s |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        r = c["refresh_index"]
        n = f"{c['n'] // 1000}k" if c["n"] < 1_000_000 else f"{c['n'] // 1_000_000}M"
        sql = c.get("sql_read_s", f"~{c.get('sql_read_s_estimated')} (est.)" if c.get("sql_read_s_estimated") else "")
        cnn = "" if r["vs_cnn_ingest"] is None else f"{100 * r['vs_cnn_ingest']:.2f}%"
        lines.append(
            f"| {n} | {c['d']} | {c['vec0_insert_s']} | {r['seconds']} ({r['action']}) "
            f"| {100 * r['vs_vec0_insert']:.0f}% | "
            f"{cnn} | {r['index_db_bytes_per_vector']} | {c['db_file_bytes_per_vector']} | {c['load_s']} | {sql} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    parser.add_argument("--cases", default=None, help=f"N:D list (default {FULL})")
    parser.add_argument("--queries", type=int, default=100, help="queries per case (numpy and the library)")
    parser.add_argument("--slow-queries", type=int, default=20, help="queries per case for sqlite-vec (slow at 1M)")
    parser.add_argument("--skip-sqlite-vec", action="store_true")
    parser.add_argument(
        "--float32-copy",
        action="store_true",
        help="big cases: also serve the same queries with the rescoring copy rewritten in float32 (older files)",
    )
    parser.add_argument("--work", type=Path, default=None, help="folder for the temporary databases")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "query.json")
    parser.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--table", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--served-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:  # the fresh serving process of served()
        serve(args.serve, args.table, args.queries_file, args.served_out)
        return
    spec = args.cases or (QUICK if args.quick else FULL)
    cases_spec = [(parse_n(a), int(b)) for a, b in (c.split(":") for c in spec.split(","))]
    work = Path(tempfile.mkdtemp(prefix="semsearch-query-", dir=args.work))
    started = time.perf_counter()
    cases = []
    try:
        for n, d in cases_spec:
            nq_slow = args.slow_queries if n * d <= 100_000_000 else max(6, args.slow_queries // 2)
            big = n * d * 4 > BIG_BYTES
            if big:
                nq_slow = max(3, args.slow_queries // 6)  # each sqlite-vec query reads the whole table
            if big:
                cases.append(run_big_case(n, d, args.queries, nq_slow, work, args.skip_sqlite_vec, args.float32_copy))
            else:
                cases.append(run_case(n, d, args.queries, nq_slow, work, args.skip_sqlite_vec))
            gc.collect()  # the case's matrices go before the next one's arrive
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "numpy": np.__version__, "sqlite": sqlite3.sqlite_version},
        "settings": {
            "k": K,
            "rescore": RESCORE,
            "target_recall": ivf.TARGET_RECALL,
            "min_cells": ivf.MIN_CELLS,
            "min_cells_words": ivf.MIN_CELLS_WORDS,
            "queries": args.queries,
            "slow_queries": args.slow_queries,
        },
        "total_s": round(time.perf_counter() - started, 1),
        "peak_rss_gib": round(rss_gib(), 2),
        "cases": cases,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(cases))
    print(f"\ntotal {result['total_s']} s, peak RSS {result['peak_rss_gib']} GiB; written to {args.output}")


if __name__ == "__main__":
    main()
