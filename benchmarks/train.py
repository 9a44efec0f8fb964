"""Word-space model fit time on 1,000 cached feature rows, per method, in one run.

    python benchmarks/train.py [--db photos.db] [--rows 1000]

With ``--db`` the rows are that database's stored features (tiled to --rows);
otherwise structured synthetic features (20 real label words, post-ReLU clusters) of
the EfficientNet-Lite0 (1280-d) and VGG16 (4096-d) sizes. The issue's bar: the talk's
epoch took ~20 minutes; here a whole fit must take seconds (train < 30 s, closed form < 1 s).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from semsearch_sqlite.model.conse import imagenet_class_names
from semsearch_sqlite.model.semantic import fit_semantic
from semsearch_sqlite.pipeline.train import training_data
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.glove import load_word_vectors
from semsearch_sqlite.text.vocabulary import word_space

HERE = Path(__file__).resolve().parent
LABELS = (
    "airplane butterfly camera chair crab cup dolphin elephant ferry helicopter "
    "kangaroo lamp laptop llama pizza revolver rooster starfish sunflower umbrella"
).split()
METHODS = ("ridge", "conse", "auto", "mlp")


def synthetic(rows: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    centres = np.maximum(rng.normal(0, 1, (len(LABELS), dim)), 0)
    labels = [LABELS[i % len(LABELS)] for i in range(rows)]
    X = np.maximum(centres[[i % len(LABELS) for i in range(rows)]] + rng.normal(0, 0.7, (rows, dim)), 0)
    logits = rng.normal(0, 1, (rows, 1000))
    logits[np.arange(rows), [(i % len(LABELS)) * 37 for i in range(rows)]] += 6
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return X.astype(np.float32), probs.astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    from semsearch_sqlite.model.conse import class_word_vectors

    results = []
    if args.db:
        with Store.open(args.db) as store:
            _, X, probs, labels = training_data(store, None)
            words = word_space(store.conn)
            classes = store.load_model("imagenet_classes")[0]["vectors"]  # type: ignore[index]
        take = rng.choice(len(X), size=args.rows, replace=len(X) < args.rows)
        cases = [
            (
                f"{args.db.name} ({X.shape[1]}-d)",
                X[take],
                None if probs is None else probs[take],
                [labels[i] for i in take],
            )
        ]
    else:
        words = load_word_vectors()
        classes, _ = class_word_vectors(imagenet_class_names(), words)
        cases = [(f"synthetic {d}-d", *synthetic(args.rows, d, rng)) for d in (1280, 4096)]
    for name, X, probs, labels in cases:
        for method in METHODS:
            started = time.perf_counter()
            model = fit_semantic(X, probs, labels, words, classes, method=method, seed=0)
            fit = time.perf_counter() - started
            started = time.perf_counter()
            model.image_vectors(X, probs)
            project = time.perf_counter() - started
            results.append(
                {
                    "features": name,
                    "rows": len(X),
                    "method": method,
                    "fit_s": round(fit, 3),
                    "project_s": round(project, 4),
                }
            )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    ridge = {r["features"]: r["fit_s"] for r in results if r["method"] == "ridge"}
    print("| features | rows | method | fit (s) | x ridge | project all rows (s) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ratio = r["fit_s"] / ridge[r["features"]] if ridge[r["features"]] else float("nan")
        print(
            f"| {r['features']} | {r['rows']} | {r['method']} | {r['fit_s']:.3f} | {ratio:.1f} | {r['project_s']:.4f} |"
        )


if __name__ == "__main__":
    main()
