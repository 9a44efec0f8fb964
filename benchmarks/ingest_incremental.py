"""Incremental ingest at 100k photos: ``python benchmarks/ingest.py --incremental``.

Builds (once; reused from ``--store-dir``, default /tmp/semsearch-ingest-100k) a 100k-photo
collection through the real code paths: ``ingest`` of the dev photos (800, real
EfficientNet-Lite0 features and ImageNet probabilities), then each photo replicated 125
times as hard links in its label folder, with its features plus Gaussian noise (0.15 of
each dimension's spread, clipped at 0 as the ReLU6 features are) and the probabilities of
those features under the backbone's own head; rows copy the source photo's thumbnail and
metadata (no display copies: they are not read here). A second ``ingest`` of the 100k
folder then fits the word-space model, the neighbour graph and the indexes as any ingest
would. Each run copies that store, adds 10 photos (caltech101-dev2 ketch) to an existing
label folder and times the whole CLI command (a subprocess), then a no-op run (the copy
is first brought to this version's schema, untimed):

    RESULT case=incremental n=100000 added=10 whole_s=... noop_s=...
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.storage.models import CLASSIFIER_MODEL
from semsearch_sqlite.storage.store import Store, encode_f32
from semsearch_sqlite.storage.vec0 import VEC_VISUAL, read_vectors

COPIES = 125  # x 800 dev photos = 100,000
NOISE = 0.15
ADDED = 10
DEV_ADDED = 5
HOW = "benchmarks/ingest.py --incremental"
CLI = [sys.executable, "-m", "semsearch_sqlite"]


def build_store(images: Path, new_photos: Path, where: Path) -> tuple[Path, Path]:
    """The 100k store and its folder under ``where`` (built once)."""
    folder, db = where / "photos", where / "store.db"
    if (where / "built").exists():
        return folder, db
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    seed = where / "seed.db"
    ingest(images, seed, IngestOptions(backbone="efficientnet-lite0"))
    with Store.open(seed) as store:
        rows = store.conn.execute("select id, path, label from images order by id").fetchall()
        ids, X = read_vectors(store.conn, VEC_VISUAL)
        head = store.load_model(CLASSIFIER_MODEL)
    assert head is not None
    kernel, bias = head[0]["kernel"], head[0]["bias"]
    features = dict(zip(ids.tolist(), X))
    spread = X.std(axis=0)
    for _, path, _ in rows:
        src = images / path
        for k in range(COPIES):
            dest = folder / Path(path).parent / f"r{k:03d}_{Path(path).name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dest)
    shutil.copy(seed, db)
    rng = np.random.default_rng(0)
    with Store.open(db) as store:
        conn = store.conn
        cols = [r[1] for r in conn.execute("pragma table_info(images)") if r[1] not in ("id", "path", "sha256")]
        names = ", ".join(cols)
        with store.atomic():
            conn.execute("delete from tags")
            conn.execute("delete from image_files")
            conn.execute(
                "update images set path = rtrim(path, replace(path, '/', '')) || 'r000_' || "
                "replace(path, rtrim(path, replace(path, '/', '')), '')"
            )
            store.set_meta("images_root", str(folder.resolve()))
        for k in range(1, COPIES):
            new_ids, vectors, probs = [], [], []
            with store.atomic():
                for image_id, path, _ in rows:
                    folder_part, name = path.rsplit("/", 1)
                    cur = conn.execute(
                        f"insert into images (path, sha256, {names}) select ?, sha256 || ?, {names} "
                        "from images where id = ?",
                        [f"{folder_part}/r{k:03d}_{name}", f"-{k}", image_id],
                    )
                    x = np.clip(features[image_id] + rng.normal(0, NOISE, spread.shape) * spread, 0, None)
                    new_ids.append(int(cur.lastrowid))
                    vectors.append(x.astype(np.float32))
                z = np.vstack(vectors) @ kernel + bias
                z = np.exp(z - z.max(axis=1, keepdims=True))
                probs = z / z.sum(axis=1, keepdims=True)
                store.write_vectors(VEC_VISUAL, new_ids, np.vstack(vectors))
                conn.executemany(
                    "insert into image_classes(image_id, probs) values (?, ?)",
                    ((i, encode_f32(p)) for i, p in zip(new_ids, probs)),
                )
                store.bump_generation()
    # the second ingest: every file unchanged, so it fits the word space, graph and indexes
    ingest(folder, db, IngestOptions(backbone="efficientnet-lite0"))
    (where / "built").write_text("")
    return folder, db


def timed(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    took = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return took, done.stderr


def run_incremental(images: Path, new_photos: Path, where: Path, repeats: int = 3) -> dict[str, Any]:
    """Time adding ADDED photos and a no-op on a copy of the 100k store, ``repeats`` times."""
    started = time.perf_counter()
    folder, db = build_store(images, new_photos, where)
    build_s = time.perf_counter() - started
    adds = sorted(new_photos.iterdir())[:ADDED]
    work = where / "work.db"
    whole, noop, logs = [], [], []
    for _ in range(repeats):
        shutil.copy(db, work)
        # a store built by an older version gets this version's schema steps here, once,
        # untimed: a collection pays them on its first run after an upgrade, not per change
        Store.open(work, create=True).close()
        for f in adds:
            shutil.copy(f, folder / "ferry" / f"new_{f.name}")
        # the copy leaves GBs of dirty pages: written back now, untimed, not by the timed
        # command's first fsync (a collection is not a just-written 2 GB file)
        os.sync()
        try:
            cmd = [*CLI, "ingest", str(folder), str(work), "--backbone", "efficientnet-lite0"]
            took, log = timed(cmd)
            whole.append(took)
            logs.append(log.strip().splitlines()[-2:])
            took, log = timed(cmd)
            noop.append(took)
        finally:
            for f in adds:
                (folder / "ferry" / f"new_{f.name}").unlink(missing_ok=True)
    with Store.open(work) as store:
        n = store.conn.execute("select count(*) from images").fetchone()[0]
    return {
        "n": int(n) - ADDED,
        "added": ADDED,
        "whole_s": round(float(np.median(whole)), 2),
        "noop_s": round(float(np.median(noop)), 2),
        "whole_runs_s": [round(t, 2) for t in whole],
        "noop_runs_s": [round(t, 2) for t in noop],
        "build_s_if_built_now": round(build_s, 1),
        "features": f"real dev features replicated {COPIES}x with Gaussian noise ({NOISE} of each dimension's std)",
        "last_log": logs[-1],
    }


def run_dev(images: Path, new_photos: Path, where: Path, repeats: int = 5) -> dict[str, float]:
    """The dev collection (a copy of its folder, ingested once): the whole command adding
    DEV_ADDED photos, a no-op, and a no-op beside a broken file (reported once, then
    remembered), medians of ``repeats`` runs."""
    folder, seed = where / "dev-photos", where / "dev-seed.db"
    if not (where / "dev-built").exists():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(images, folder)
        seed.unlink(missing_ok=True)
        ingest(folder, seed, IngestOptions(backbone="efficientnet-lite0"))
        (where / "dev-built").write_text("")
    adds = sorted(new_photos.iterdir())[:DEV_ADDED]
    work, broken = where / "dev-work.db", folder / "ferry" / "broken.jpg"
    cmd = [*CLI, "ingest", str(folder), str(work), "--backbone", "efficientnet-lite0"]
    times: dict[str, list[float]] = {"add_5_photos_s": [], "noop_s": [], "noop_with_broken_file_s": []}
    for _ in range(repeats):
        shutil.copy(seed, work)
        for f in adds:
            shutil.copy(f, folder / "ferry" / f"new_{f.name}")
        try:
            times["add_5_photos_s"].append(timed(cmd)[0])
            times["noop_s"].append(timed(cmd)[0])
            broken.write_bytes(b"\xff\xd8 not a photo")
            timed(cmd)  # reports the file once and remembers it
            times["noop_with_broken_file_s"].append(timed(cmd)[0])
        finally:
            broken.unlink(missing_ok=True)
            for f in adds:
                (folder / "ferry" / f"new_{f.name}").unlink(missing_ok=True)
    return {key: round(float(np.median(runs)), 2) for key, runs in times.items()}


def main(images: Path, new_photos: Path, where: Path, results: Path) -> None:
    r = run_incremental(images, new_photos, where)
    line = f"RESULT case=incremental n={r['n']} added={r['added']} whole_s={r['whole_s']} noop_s={r['noop_s']}"
    print(line)
    dev = run_dev(images, new_photos, where)
    print("RESULT case=incremental-dev " + " ".join(f"{k}={v}" for k, v in dev.items()))
    path = results / "ingest.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["incremental_100k"] = {"result": line, **r, "cpus": os.cpu_count()}
    old = data.get("incremental_dev", {})
    data["incremental_dev"] = {
        **old,
        "what": f"ingest {images.name} with efficientnet-lite0, folder copied; whole CLI command wall time",
        "cpus": os.cpu_count(),
        **{
            key: {**old.get(key, {}), "this": value, "this_how": f"median of 5 runs ({HOW})"}
            for key, value in dev.items()
        },
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
