"""Images/s of the ingest CNN through several CPU runtimes, from the same Keras model.

    python benchmarks/runtimes.py [--backbones efficientnet-lite0,vgg16] [--images 48] [--reps 5]

Each backbone is built once in Keras (EfficientNet-Lite0 with its ImageNet weights;
VGG16 with random weights, ``weights=None``: for speed only), then converted to LiteRT
(TensorFlow's converter, as ingest does; run by ``tf.lite.Interpreter`` with XNNPACK),
ONNX (Keras' exporter, tf2onnx underneath; run by onnxruntime) and OpenVINO (read from
the ONNX file). onnxruntime, tf2onnx, onnx and openvino are not dependencies: a runtime
that can't be imported is reported as such. Every runtime embeds the same real photos
(``/work/shared/data/caltech101-dev``, or ``--photos``) on 2 threads; its features are
compared with Keras' (max abs diff; max_rel_diff relative to the largest feature).
Runtimes run back to back, ``--reps`` times round-robin, and the median images/s is
reported, so other jobs on the machine slow all of them alike. Prints a table per
backbone and writes benchmarks/results/runtimes.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREADS = 2
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(THREADS))
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ["SEMSEARCH_RUNTIME"] = "keras"  # the backbone as Keras runs it; the others are converted here

import numpy as np
from PIL import Image

from semsearch_sqlite.model.cnn import KerasBackbone, load_backbone
from semsearch_sqlite.model.keras_env import import_tf, quiet_fd2

PHOTOS = Path("/work/shared/data/caltech101-dev")
Runner = Callable[[np.ndarray], np.ndarray]


def photos(folder: Path, n: int, backbone: KerasBackbone) -> np.ndarray:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    return backbone.preprocess([Image.open(p) for p in files])


def keras_runner(backbone: KerasBackbone, batch: int) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        return np.concatenate([backbone.predict(x[i : i + batch])[0] for i in range(0, len(x), batch)])

    return run


def litert_runners(backbone: KerasBackbone, tmp: Path, batch: int) -> dict[str, dict]:
    """LiteRT as ingest runs it (``LiteRTRunner``: one image per invoke) and, for the
    record, whole batches per invoke."""
    from semsearch_sqlite.model.litert import LiteRTRunner, convert_to_tflite, tflite_interpreter

    t0 = time.perf_counter()
    path = tmp / f"{backbone.name}.tflite"
    path.write_bytes(convert_to_tflite(backbone.model))
    notes = {"convert_s": round(time.perf_counter() - t0, 2), "model_bytes": path.stat().st_size}
    single = LiteRTRunner(tflite_interpreter(path, THREADS))
    interp = tflite_interpreter(path, THREADS)
    batched = interp.get_signature_runner("serving_default")

    def run_single(x: np.ndarray) -> np.ndarray:
        return np.concatenate([single.predict(x[i : i + batch])[0] for i in range(0, len(x), batch)])

    def run_batched(x: np.ndarray) -> np.ndarray:
        return np.concatenate([batched(image=x[i : i + batch])["features"] for i in range(0, len(x), batch)])

    return {
        "litert (XNNPACK; ingest's path)": {"run": run_single, **notes, "batch": 1},
        "litert (XNNPACK, batch per invoke)": {"run": run_batched, **notes, "batch": batch},
    }


def onnx_file(backbone: KerasBackbone, tmp: Path) -> tuple[Path, float]:
    """The backbone as ONNX through Keras' own exporter (tf2onnx underneath)."""
    t0 = time.perf_counter()
    path = tmp / f"{backbone.name}.onnx"
    with quiet_fd2(), contextlib.redirect_stdout(sys.stderr):
        backbone.model.export(str(path), format="onnx", verbose=False)
    return path, time.perf_counter() - t0


def onnxruntime_runner(path: Path, batch: int, dim: int) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = next(o.name for o in sess.get_outputs() if o.shape[-1] == dim)  # the features, not the classes

    def run(x: np.ndarray) -> np.ndarray:
        return np.concatenate([sess.run([out], {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])

    return run


def openvino_runner(path: Path, batch: int, dim: int) -> Runner:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32"}
    )
    req = compiled.create_infer_request()
    out = next(o for o in compiled.outputs if o.get_partial_shape()[-1].get_length() == dim)

    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(x), batch):
            outs.append(np.array(req.infer([x[i : i + batch]])[out]))
        return np.concatenate(outs)

    return run


def build_runners(backbone: KerasBackbone, batch: int, tmp: Path, onnx: bool = True) -> dict[str, dict]:
    """Every runtime that loads here: ``{name: {"run": fn, ...notes}}`` or ``{"error": ...}``."""
    runners: dict[str, dict] = {"keras (predict_on_batch)": {"run": keras_runner(backbone, batch), "batch": batch}}
    try:
        runners.update(litert_runners(backbone, tmp, batch))
    except Exception as e:  # noqa: BLE001 - report, don't stop the other runtimes
        runners["litert (XNNPACK)"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    if not onnx:
        skipped = {"error": "not measured (--skip-onnx: its ONNX export needed more memory than this machine has)"}
        return {**runners, "onnxruntime": skipped, "openvino": skipped}
    try:
        path, convert_s = onnx_file(backbone, tmp)
    except Exception as e:  # noqa: BLE001
        err = {"error": f"tf2onnx: {type(e).__name__}: {e}"[:300]}
        return {**runners, "onnxruntime": err, "openvino": err}
    for name, make in (("onnxruntime", onnxruntime_runner), ("openvino", openvino_runner)):
        try:
            runners[name] = {"run": make(path, batch, backbone.dim), "convert_s": round(convert_s, 2), "batch": batch}
        except Exception as e:  # noqa: BLE001
            runners[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return runners


def measure(name: str, weights: str, n: int, reps: int, batch: int, folder: Path, tmp: Path, onnx: bool = True) -> dict:
    backbone = load_backbone(name, weights=weights)
    assert isinstance(backbone, KerasBackbone) and backbone.runtime == "keras"
    x = photos(folder, n, backbone)
    runners = build_runners(backbone, batch, tmp, onnx)
    live = {k: v for k, v in runners.items() if "run" in v}
    reference = None
    for v in live.values():  # warm-up (traces, allocations) and the outputs compared
        out = v["run"](x)
        if reference is None:
            reference = out
        scale = float(np.abs(reference).max()) or 1.0
        v["max_abs_diff"] = float(np.abs(out - reference).max())
        v["max_rel_diff"] = v["max_abs_diff"] / scale
    times: dict[str, list[float]] = {k: [] for k in live}
    for _ in range(reps):
        for k, v in live.items():
            t0 = time.perf_counter()
            v["run"](x)
            times[k].append(time.perf_counter() - t0)
    rows = {}
    keras_ips = len(x) / statistics.median(times[next(iter(live))])
    for k, v in runners.items():
        row = {key: val for key, val in v.items() if key != "run"}
        if k in times:
            ips = len(x) / statistics.median(times[k])
            row.update(
                images_per_s=round(ips, 1),
                ms_per_image=round(1000 / ips, 2),
                vs_keras=round(ips / keras_ips, 2),
                runs_s=[round(t, 3) for t in times[k]],
            )
        rows[k] = row
    return {"backbone": name, "weights": weights, "images": len(x), "dim": int(reference.shape[1]), "runtimes": rows}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "onnxruntime", "tf2onnx", "onnx", "openvino", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="efficientnet-lite0,vgg16")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32, help="batch of the batched runtimes (ingest's default)")
    ap.add_argument(
        "--skip-onnx",
        default="vgg16",
        help="backbones not exported to ONNX (VGG16's export peaked above 15 GB of RAM and was stopped)",
    )
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtimes.json")
    args = ap.parse_args()
    tf = import_tf()
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    weights = {"efficientnet-lite0": "imagenet", "vgg16": "none"}
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbones.split(","):
            load = os.getloadavg()[0]
            onnx = name not in args.skip_onnx.split(",")
            w = weights.get(name, "imagenet")
            case = measure(name, w, args.images, args.reps, args.batch, args.photos, Path(tmp), onnx)
            case["load_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]  # before, after
            cases.append(case)
            print(f"\n{name} (weights={case['weights']}, {case['images']} photos, {THREADS} threads)")
            print(f"{'runtime':30s} {'img/s':>7s} {'ms/img':>7s} {'vs keras':>8s} {'max abs diff':>13s}")
            for k, r in case["runtimes"].items():
                if "error" in r:
                    print(f"{k:30s} {'-':>7s} {'-':>7s} {'-':>8s}  {r['error'][:60]}")
                else:
                    print(
                        f"{k:30s} {r['images_per_s']:7.1f} {r['ms_per_image']:7.2f} {r['vs_keras']:8.2f} "
                        f"{r['max_abs_diff']:13.2e}"
                    )
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "threads": THREADS,
            "python": platform.python_version(),
            "shared": "yes: other jobs ran on the same 2 cores (see each case's load_1min, before and after)",
        },
        "settings": {"images": args.images, "reps": args.reps, "batch": args.batch},
        "versions": versions(),
        "cases": cases,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
