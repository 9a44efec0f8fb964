"""Near-duplicate detection: precision and recall on generated copies, per threshold.

    python benchmarks/duplicates.py [--images ../shared/data/caltech101-dev] [--originals 60]
                                    [--backbone efficientnet-lite0] [--reuse photos.db] [--work DIR]

Protocol: ``numpy.random.default_rng(0)`` picks ``--originals`` photos of the dev set; each
gets three copies: resized to half size, recompressed as JPEG quality 30, and cropped to
the central 85%. The copies are added to the whole dev set (so every copy sits among
different photos of its own class) and the folder is ingested with the real backbone.
A pair of images is a true duplicate when both come from the same original (or the
originals' bytes are identical). For each threshold, ``duplicate_groups`` is run and every
pair inside one group counts as predicted: precision = true predicted pairs / predicted
pairs, recall = true predicted pairs / true pairs (the copies' pairs). Natural
near-duplicates of the dev set (bursts of one scene) count against precision.

``--reuse DB`` copies a database already ingested from ``--images`` and only embeds the
copies. Prints a markdown table and writes benchmarks/results/duplicates.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from semsearch_sqlite.media.files import discover
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.queries.duplicates import DEFAULT_THRESHOLD, duplicate_groups
from semsearch_sqlite.storage.store import Store

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "caltech101-dev"
THRESHOLDS = [0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3]
COPIES = ("resized", "recompressed", "cropped")


def make_copy(src: Path, kind: str, dest: Path) -> None:
    with Image.open(src) as im:
        im = im.convert("RGB")
        if kind == "resized":
            im = im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS)
            im.save(dest, "JPEG", quality=90)
        elif kind == "recompressed":
            im.save(dest, "JPEG", quality=30)
        else:
            dx, dy = round(im.width * 0.075), round(im.height * 0.075)
            im.crop((dx, dy, im.width - dx, im.height - dy)).save(dest, "JPEG", quality=90)


def build_folder(images: Path, work: Path, n: int) -> tuple[Path, dict[str, str]]:
    """The dev set plus copies; returns the folder and path -> original path (copies and originals)."""
    folder = work / "images"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(images, folder, copy_function=shutil.copy2)  # same mtimes: --reuse sees them unchanged
    files = sorted(p.relative_to(folder).as_posix() for p in discover(folder).files)
    chosen = [files[i] for i in np.random.default_rng(0).choice(len(files), size=n, replace=False)]
    origin = {}
    for rel in chosen:
        origin[rel] = rel
        for kind in COPIES:
            dest = folder / (rel.rsplit(".", 1)[0] + f"_copy_{kind}.jpg")
            make_copy(folder / rel, kind, dest)
            origin[dest.relative_to(folder).as_posix()] = rel
    return folder, origin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--originals", type=int, default=60)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--reuse", type=Path, help="a database already ingested from --images")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "duplicates.json")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="semsearch-dups-"))
    work.mkdir(parents=True, exist_ok=True)
    folder, origin = build_folder(args.images, work, args.originals)
    db = work / "dups.db"
    if db.exists():
        db.unlink()
    if args.reuse:
        shutil.copy(args.reuse, db)
    started = time.perf_counter()
    ingest(folder, db, IngestOptions(backbone=args.backbone, workers=2))
    ingest_s = time.perf_counter() - started
    with Store.open(db) as store:
        conn = store.conn
        by_id = {i: (p, s) for i, p, s in conn.execute("select id, path, sha256 from images")}
        # true pairs: an original and its copies, and files with identical bytes
        by_key: dict[str, list[int]] = {}
        for i, (path, sha) in by_id.items():
            by_key.setdefault("origin:" + origin.get(path, path), []).append(i)
            by_key.setdefault("sha:" + sha, []).append(i)
        truth = {frozenset(p) for members in by_key.values() for p in itertools.combinations(members, 2)}
        rows = []
        for t in THRESHOLDS:
            started = time.perf_counter()
            groups = duplicate_groups(conn, t)
            seconds = time.perf_counter() - started
            predicted = {frozenset(p) for g in groups for p in itertools.combinations([i for i, _ in g], 2)}
            hit = len(predicted & truth)
            precision = hit / len(predicted) if predicted else 1.0
            recall = hit / len(truth) if truth else 1.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append(
                {
                    "threshold": t,
                    "groups": len(groups),
                    "pairs": len(predicted),
                    "precision": round(precision, 4),
                    "recall": round(recall, 4),
                    "f1": round(f1, 4),
                    "seconds": round(seconds, 3),
                }
            )
        per_kind = {}
        groups = duplicate_groups(conn, DEFAULT_THRESHOLD)
        member = {i: n for n, g in enumerate(groups) for i, _ in g}
        ids = {p: i for i, (p, _) in by_id.items()}
        for kind in COPIES:
            found = [
                member.get(ids[p]) is not None and member.get(ids[p]) == member.get(ids[o])
                for p, o in origin.items()
                if p.endswith(f"_copy_{kind}.jpg")
            ]
            per_kind[kind] = round(sum(found) / len(found), 4)
    result = {
        "images": len(by_id),
        "originals": args.originals,
        "copies": args.originals * len(COPIES),
        "true_pairs": len(truth),
        "backbone": args.backbone,
        "ingest_seconds": round(ingest_s, 1),
        "default_threshold": DEFAULT_THRESHOLD,
        "recall_by_copy_kind_at_default": per_kind,
        "rows": rows,
    }
    print(
        f"{len(by_id)} images ({args.originals} originals x {len(COPIES)} copies among the dev set), "
        f"{len(truth)} true pairs, backbone {args.backbone}\n"
    )
    print("| threshold | groups | predicted pairs | precision | recall | F1 | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['threshold']} | {r['groups']} | {r['pairs']} | {r['precision']:.3f} | {r['recall']:.3f} "
            f"| {r['f1']:.3f} | {r['seconds']} |"
        )
    print(f"\nrecall per copy kind at the default threshold {DEFAULT_THRESHOLD}: {per_kind}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
