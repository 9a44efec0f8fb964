"""Ingest throughput against the backbone's raw ``predict`` speed, measured in one run.

    python benchmarks/ingest.py [--images ../shared/data/caltech101-dev] [--backbone efficientnet-lite0] [--n 800]

Prints a markdown table and writes benchmarks/results/ingest.json. The goal is a
pipeline/raw ratio >= 0.9: decoding, thumbnails and SQLite writes hidden behind the CNN.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from semsearch_sqlite.model.backbones import load_backbone
from semsearch_sqlite.media.files import discover
from semsearch_sqlite.media.images import load_image
from semsearch_sqlite.pipeline.ingest import IngestOptions
from semsearch_sqlite.pipeline.ingest import ingest

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "caltech101-dev"


class StageClock:
    """Times the 'embedding' stage of an ingest run."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def stage(self, name: str, total: int | None) -> None:
        now = time.perf_counter()
        if self.current is not None:
            self.seconds[self.current] = now - self.started[self.current]
        self.current = name
        self.started[name] = now

    def advance(self, n: int) -> None:
        pass

    def problem(self, path: str, reason: str) -> None:
        pass

    def finish(self) -> None:
        self.stage("done", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    files = discover(args.images).files[: args.n]
    work = Path(tempfile.mkdtemp(prefix="semsearch-bench-"))
    try:
        folder = work / "images"
        for f in files:
            target = folder / f.relative_to(args.images)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)

        backbone = load_backbone(args.backbone)
        tensors = np.stack([backbone.preprocess([load_image(f)])[0] for f in files])
        backbone.predict(tensors[: args.batch_size])  # warm-up: graph tracing
        started = time.perf_counter()
        for i in range(0, len(tensors), args.batch_size):
            backbone.predict(tensors[i : i + args.batch_size])
        raw = len(tensors) / (time.perf_counter() - started)
        del tensors

        clock = StageClock()
        started = time.perf_counter()
        stats = ingest(folder, work / "bench.db", IngestOptions(backbone=args.backbone, batch_size=args.batch_size), clock)
        total = time.perf_counter() - started
        clock.finish()
        embed_seconds = clock.seconds.get("embedding", total)
        pipeline = stats.embedded / embed_seconds

        started = time.perf_counter()
        again = ingest(folder, work / "bench.db", IngestOptions(), None)
        rerun = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "backbone": args.backbone,
        "images": len(files),
        "batch_size": args.batch_size,
        "raw_predict_images_per_s": round(raw, 1),
        "pipeline_images_per_s": round(pipeline, 1),
        "ratio": round(pipeline / raw, 3),
        "whole_ingest_s": round(total, 2),
        "stages_s": {k: round(v, 2) for k, v in clock.seconds.items()},
        "rerun_s": round(rerun, 2),
        "rerun_embedded": again.embedded,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| backbone | images | raw predict img/s | pipeline img/s | ratio | whole ingest | re-run (0 re-embedded) |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.backbone} | {len(files)} | {raw:.1f} | {pipeline:.1f} | {pipeline / raw:.2f} | "
        f"{total:.1f} s | {rerun:.2f} s ({again.embedded} embedded) |"
    )
    print("stages (s):", json.dumps(result["stages_s"]))


if __name__ == "__main__":
    main()
