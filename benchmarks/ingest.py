"""Ingest on small photos and on the same photos at phone size (12 MP), against the bare
model, plus the writer's own ceiling and the cold start of a new-image query; one run.

    python benchmarks/ingest.py [--images ../shared/data/caltech101-dev] [--n 120] [--photos DIR] [--ray]
    python benchmarks/ingest.py --incremental   (a 100k store, 10 photos added: see ingest_incremental.py)

For each case (the dev photos as they are, ~300 px; the same photos upscaled to 4032x3024
with sensor-like noise, so the JPEGs have real entropy, ~2.5 MB each) it prints: prepare
ms/img (read + hash + decode + thumbnail + display copy + model input, one thread),
model ms/img (bare ``predict`` on ready tensors), the ingest pipeline's img/s, the
pipeline/bare-model ratio and the whole ingest time. Then the writer alone (rows/s
stored with vectors, thumbnails and display copies, no model): the most images/s one
database file can absorb from any number of workers. Then a new-image query
(``similar DB new.jpg``) cold, in a fresh process, and warm. Goals: 12 MP whole ingest
<= 1.35x small; pipeline/bare model >= 0.85 on small photos; cold query <= 5 s.
Writes benchmarks/results/ingest.json. ``--photos DIR`` keeps the generated 12 MP photos
for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from semsearch_sqlite.media.files import discover
from semsearch_sqlite.media.images import load_image
from semsearch_sqlite.model.cnn import load_backbone
from semsearch_sqlite.pipeline.ingest import IngestOptions, _Item, _Run, ingest
from semsearch_sqlite.pipeline.prepare import PrepareSpec, prepare_image
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.storage.vec0 import VEC_VISUAL

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "caltech101-dev"
PHONE_SIZE = (4032, 3024)
NOISE = 8  # +-8 levels of uniform noise: phone-sensor-like entropy, ~2.5 MB JPEGs at quality 90
WRITER_ROWS = 1024


class StageClock:
    """Times the stages of an ingest run."""

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


def make_phone_photos(files: list[Path], root: Path, target: Path) -> list[Path]:
    """The same photos at 4032x3024: bicubic upscale plus noise (kept in ``target``)."""
    rng = np.random.default_rng(0)
    out = []
    for f in files:
        dest = target / f.relative_to(root)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            big = np.asarray(load_image(f).resize(PHONE_SIZE, Image.Resampling.BICUBIC), np.int16)
            big = big + rng.integers(-NOISE, NOISE + 1, big.shape, dtype=np.int16)
            Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(dest, quality=90)
        out.append(dest)
    return out


def measure_case(
    name: str,
    files: list[Path],
    root: Path,
    work: Path,
    backbone: Any,
    backbone_name: str,
    batch_size: int,
    use_ray: bool,
) -> dict[str, Any]:
    spec = PrepareSpec(backbone.preprocessor, backbone.input_size)
    prepare_image(files[0], spec)  # warm-up
    started = time.perf_counter()
    prepared = [prepare_image(f, spec) for f in files]
    prepare_ms = (time.perf_counter() - started) * 1000 / len(files)
    started = time.perf_counter()
    for f in files:
        load_image(f)
    full_decode_ms = (time.perf_counter() - started) * 1000 / len(files)

    tensors = np.stack([p.tensor for p in prepared])
    backbone.predict(tensors[:batch_size])  # warm-up: graph tracing
    whole_batches = max(batch_size, len(tensors) - len(tensors) % batch_size)  # its steady rate
    started = time.perf_counter()
    for i in range(0, whole_batches, batch_size):
        backbone.predict(tensors[i : i + batch_size])
    model_s = (time.perf_counter() - started) * len(tensors) / min(whole_batches, len(tensors))
    del tensors

    db = work / f"{name}.db"
    clock = StageClock()
    started, cpu = time.perf_counter(), _cpu_seconds()
    stats = ingest(root, db, IngestOptions(backbone=backbone_name, batch_size=batch_size), clock)
    whole, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    clock.finish()
    pipeline = stats.embedded / clock.seconds["embedding"]
    result = {
        "images": len(files),
        "mean_file_kb": round(sum(f.stat().st_size for f in files) / len(files) / 1024, 1),
        "decoded_size": list(load_image(files[0], reduce_to=spec.decode_size()).size),
        "display_size": list(prepared[0].display[2:]),
        "prepare_ms_per_img": round(prepare_ms, 1),
        "full_decode_ms_per_img": round(full_decode_ms, 1),
        "model_ms_per_img": round(model_s * 1000 / len(files), 1),
        "bare_model_img_s": round(len(files) / model_s, 1),
        "pipeline_img_s": round(pipeline, 1),
        "pipeline_over_model": round(pipeline * model_s / len(files), 3),
        "whole_ingest_s": round(whole, 2),
        "whole_ingest_cpu_s": round(cpu, 2),
        "stages_s": {k: round(v, 2) for k, v in clock.seconds.items()},
    }
    # the goal's measure: the whole command, as a user runs it (TensorFlow import included)
    command = [
        sys.executable,
        "-m",
        "semsearch_sqlite",
        "ingest",
        str(root),
        "",
        "--backbone",
        backbone_name,
        "--batch-size",
        str(batch_size),
        "-q",
    ]
    for key, extra in (("whole_command_s", []), ("whole_command_ray_local_s", ["--ray"])):
        if extra and not use_ray:
            continue
        command[5] = str(work / f"{name}-{key}.db")
        started = time.perf_counter()
        subprocess.run(command + extra, check=True, capture_output=True)
        result[key] = round(time.perf_counter() - started, 2)
    return {"result": result, "prepared": prepared, "db": db}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def writer_rate(prepared: list[Any], dim: int, work: Path, batch_size: int) -> float:
    """Rows/s the one writer stores (image row, thumbnail, display copy, features, class
    probabilities, one transaction per batch), the model replaced by ready vectors."""
    rng = np.random.default_rng(1)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "writer.db"
    with Store.open(db, create=True) as store:
        store.ensure_vec_table(VEC_VISUAL, dim)
        run = _Run(store, work, IngestOptions(), None)  # type: ignore[arg-type]
        started = time.perf_counter()
        for start in range(0, WRITER_ROWS, batch_size):
            batch = [
                (_Item(Path(f"w/{i}.jpg"), f"w/{i}.jpg", "label", 1, 1.0), prepared[i % len(prepared)])
                for i in range(start, min(start + batch_size, WRITER_ROWS))
            ]
            features = rng.random((len(batch), dim), dtype=np.float32)
            probs = rng.random((len(batch), 1000), dtype=np.float32)
            run._write_batch(batch, features, probs)
        return WRITER_ROWS / (time.perf_counter() - started)


def query_times(db: Path, image: Path) -> dict[str, float]:
    """``similar DB image`` for a file that is not in the database: cold (a fresh
    process, the whole command) and warm (the same query again in one process)."""
    colds = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "semsearch_sqlite", "similar", str(db), str(image), "-k", "5"],
            check=True,
            capture_output=True,
        )
        colds.append(time.perf_counter() - started)
    code = (
        "import sys, time\n"
        "from semsearch_sqlite import open as open_db\n"
        "c = open_db(sys.argv[1])\n"
        "t = time.perf_counter(); c.similar(sys.argv[2], 5); first = time.perf_counter() - t\n"
        "t = time.perf_counter(); c.similar(sys.argv[2], 5); print(first, time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(db), str(image)], check=True, capture_output=True, text=True)
    first, warm = (float(v) for v in out.stdout.split())
    return {
        "cold_command_s": round(min(colds), 2),
        "cold_command_max_s": round(max(colds), 2),
        "first_query_in_process_s": round(first, 2),
        "warm_query_s": round(warm, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photos", type=Path, help="keep the generated 12 MP photos here (reused next time)")
    parser.add_argument("--ray", action="store_true", help="also time ingest --ray on a local Ray cluster")
    parser.add_argument("--incremental", action="store_true", help="only: 10 photos added to a 100k store, and a no-op")
    parser.add_argument("--new-photos", type=Path, default=DEFAULT_IMAGES.parent / "caltech101-dev2" / "ketch")
    parser.add_argument("--store-dir", type=Path, default=Path(tempfile.gettempdir()) / "semsearch-ingest-100k")
    args = parser.parse_args()
    if args.incremental:
        from ingest_incremental import main as incremental

        incremental(args.images, args.new_photos, args.store_dir, HERE / "results")
        return

    all_files = discover(args.images).files
    files = all_files[:: max(1, len(all_files) // args.n)][: args.n]  # every label, not the first few
    work = Path(tempfile.mkdtemp(prefix="semsearch-bench-"))
    try:
        small_root, phone_root = work / "small", args.photos or work / "phones"
        small = []
        for f in files:
            target = small_root / f.relative_to(args.images)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
            small.append(target)
        print(f"making {len(files)} photos at {PHONE_SIZE[0]}x{PHONE_SIZE[1]}...", file=sys.stderr)
        phones = make_phone_photos(small, small_root, phone_root)
        if args.photos:  # a kept folder may hold more photos than this run asked for
            phone_root = work / "phones-run"
            for p in phones:
                (phone_root / p.relative_to(args.photos)).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(p, phone_root / p.relative_to(args.photos))
            phones = [phone_root / p.relative_to(args.photos) for p in phones]
            # (symlinks: ingest follows them; the prepare timings read the same bytes)

        backbone = load_backbone(args.backbone)
        cases = {}
        for name, group, root in (("small", small, small_root), ("12mp", phones, phone_root)):
            print(f"measuring {name}...", file=sys.stderr)
            cases[name] = measure_case(name, group, root, work, backbone, args.backbone, args.batch_size, args.ray)
        writer = {
            name: round(writer_rate(case["prepared"], backbone.dim, work / name, args.batch_size), 1)
            for name, case in cases.items()
        }
        new_image = work / "new.jpg"
        shutil.copy2(all_files[-1] if all_files[-1] not in files else all_files[-2], new_image)
        query = query_times(cases["small"]["db"], new_image)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    s, b = cases["small"]["result"], cases["12mp"]["result"]
    result = {
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "small": s,
        "12mp": b,
        "12mp_over_small_whole_command": round(b["whole_command_s"] / s["whole_command_s"], 3),
        "12mp_over_small_whole_ingest": round(b["whole_ingest_s"] / s["whole_ingest_s"], 3),
        "12mp_over_small_embedding_stage": round(b["stages_s"]["embedding"] / s["stages_s"]["embedding"], 3),
        "12mp_over_small_whole_ingest_cpu": round(b["whole_ingest_cpu_s"] / s["whole_ingest_cpu_s"], 3),
        "writer_rows_s": writer,
        "new_image_query": query,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.backbone}, batch {args.batch_size}, {os.cpu_count()} CPUs, {len(files)} photos")
    print(
        "| case | file | decoded at | prepare ms/img | full decode ms/img | model ms/img | pipeline img/s "
        "| pipeline/bare model | embedding stage | ingest() | whole command | writer alone |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in (("small", s), ("12 MP", b)):
        key = "small" if name == "small" else "12mp"
        print(
            f"| {name} | {r['mean_file_kb']:.0f} KB | {r['decoded_size'][0]}x{r['decoded_size'][1]} "
            f"| {r['prepare_ms_per_img']} | {r['full_decode_ms_per_img']} | {r['model_ms_per_img']} "
            f"| {r['pipeline_img_s']} | {r['pipeline_over_model']:.2f} | {r['stages_s']['embedding']:.1f} s "
            f"| {r['whole_ingest_s']:.1f} s | {r['whole_command_s']:.1f} s | {writer[key]:.0f} rows/s |"
        )
    print(
        f"12 MP / small: whole command {result['12mp_over_small_whole_command']:.2f}x (goal <= 1.35), "
        f"ingest() {result['12mp_over_small_whole_ingest']:.2f}x, "
        f"embedding stage {result['12mp_over_small_embedding_stage']:.2f}x, "
        f"CPU time of the whole ingest {result['12mp_over_small_whole_ingest_cpu']:.2f}x "
        f"({s['whole_ingest_cpu_s']:.1f} s, {b['whole_ingest_cpu_s']:.1f} s)"
    )
    if args.ray:
        print(
            f"ingest --ray, whole command on a local cluster: small {s['whole_command_ray_local_s']:.1f} s, "
            f"12 MP {b['whole_command_ray_local_s']:.1f} s"
        )
    print(
        f"new-image query: cold command {query['cold_command_s']:.2f} s (max {query['cold_command_max_s']:.2f}), "
        f"first in a process {query['first_query_in_process_s']:.2f} s, warm {query['warm_query_s'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
