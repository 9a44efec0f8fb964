"""Word-space methods side by side: the trained projections, ConSE, and their combinations.

    python benchmarks/semantic.py [--images ../shared/data/caltech101-dev] [--backbone efficientnet-lite0]
                                  [--seeds 5] [--zero-shot 0.25] [--test 0.3] [--skip mlp,hinge]

Protocol (the one ``semsearch-sqlite evaluate --zero-shot 0.25`` uses for the held-out
labels, plus held-out images): for each seed, ``numpy.random.default_rng(seed)`` picks 25%
of the labels (folder names) as zero-shot labels; the images of the other (seen) labels are
split 70/30 per label into train and test images (seeded). Each method is fitted on the
seen-label train images only. Then, among the test images (seen test images + every
zero-shot image):

* seen P@10: for each seen label, the share of its own images among the 10 images nearest
  to the label's word vector (the label typed as a text query), averaged over labels;
* zero-shot P@10: the same for each zero-shot label;
* tag@5: the share of images whose label word is among their 5 nearest vocabulary words
  (the 50,000 most frequent GloVe words + the label words, stopwords, numbers and
  punctuation left out, as the stored tags), for seen-label and zero-shot images.

Figures are means over the seeds. Features and class probabilities come from the real
backbone (``semsearch_sqlite.model.backbones.load_backbone``) and are cached in /tmp per backbone.
Prints markdown tables and writes benchmarks/results/semantic.json.
"""

from __future__ import annotations

import os

# One BLAS thread: with 2 cores shared by other work, OpenBLAS threads spin-wait and
# make sub-second fits take several seconds at random. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from semsearch_sqlite.media.files import discover  # noqa: E402
from semsearch_sqlite.media.images import load_image  # noqa: E402
from semsearch_sqlite.conse import class_word_vectors, conse_vectors  # noqa: E402
from semsearch_sqlite.model.semantic import fit_semantic  # noqa: E402
from semsearch_sqlite.model.conse import imagenet_class_names  # noqa: E402
from semsearch_sqlite.text.tags import is_tag_word  # noqa: E402
from semsearch_sqlite.text.glove import DEFAULT_VOCAB_SIZE, WordVectors, load_word_vectors  # noqa: E402
from semsearch_sqlite.text.query import tokenize  # noqa: E402
from semsearch_sqlite.vectors.maths import unit, unit_rows  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "caltech101-dev"
CACHE = Path("/tmp/semsearch-bench-features")
K = 10
TAG_K = 5

# (row name, fit_semantic method, projection inside gated/blend)
ROWS = [
    ("the talk's MLP, cosine loss", "mlp", "ridge"),
    ("DeViSE hinge rank loss", "hinge", "ridge"),
    ("ridge regression (closed form)", "ridge", "ridge"),
    ("ConSE (no training)", "conse", "ridge"),
    ("blend: 0.4 ridge + 0.6 ConSE per image", "blend", "ridge"),
    ("gated: MLP or ConSE per image", "gated", "mlp"),
    ("gated: ridge or ConSE per image (the default)", "gated", "ridge"),
]
DEFAULT_ROW = ROWS[-1][0]


def features(images: Path, backbone: str, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, class probabilities and labels (folder names) of every image, cached in /tmp."""
    files = discover(images).files
    labels = [f.parent.name if f.parent != images else "" for f in files]
    key = hashlib.sha256(("\n".join(str(f.relative_to(images)) for f in files) + backbone).encode()).hexdigest()[:12]
    stem = CACHE / f"{Path(backbone).name.replace('.', '_')}-{key}"
    if stem.with_suffix(".X.npy").exists() and stem.with_suffix(".P.npy").exists():
        return np.load(stem.with_suffix(".X.npy")), np.load(stem.with_suffix(".P.npy")), labels
    from semsearch_sqlite.model.backbones import load_backbone

    model = load_backbone(backbone)
    X, P = [], []
    for i in range(0, len(files), batch_size):
        f, p = model.predict(model.preprocess([load_image(path) for path in files[i : i + batch_size]]))
        if p is None:
            sys.exit(f"{backbone} gives no ImageNet class probabilities; ConSE needs a classifier head")
        X.append(f)
        P.append(p)
        print(f"\rfeatures: {min(i + batch_size, len(files))}/{len(files)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(stem.with_suffix(".X.npy"), np.vstack(X).astype(np.float32))
    np.save(stem.with_suffix(".P.npy"), np.vstack(P).astype(np.float32))
    return np.vstack(X).astype(np.float32), np.vstack(P).astype(np.float32), labels


def split(labels: np.ndarray, seed: int, zero_shot: float, test: float) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(seen labels, zero-shot labels, train rows, test rows)."""
    classes = sorted(set(labels.tolist()))
    rng = np.random.default_rng(seed)  # the same draw as semsearch_sqlite.evaluate
    n_out = max(1, int(round(zero_shot * len(classes))))
    held = sorted(rng.choice(classes, size=n_out, replace=False).tolist())
    seen = [c for c in classes if c not in held]
    images = np.random.default_rng([seed, 1])
    train, tests = [], []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if c in held:
            tests.extend(rows.tolist())
            continue
        rows = images.permutation(rows)
        k = int(round(test * len(rows)))
        tests.extend(rows[:k].tolist())
        train.extend(rows[k:].tolist())
    return seen, held, np.array(sorted(train)), np.array(sorted(tests))


class Scorer:
    """P@10 of label queries and tag@5 among a set of test images."""

    def __init__(self, wv: WordVectors, classes: list[str]):
        vocab = wv.subset(DEFAULT_VOCAB_SIZE, classes)
        keep = [i for i, w in enumerate(vocab.words) if is_tag_word(w)]
        self.words = [vocab.words[i] for i in keep]
        self.matrix = unit_rows(vocab.vectors[keep])
        self.queries = {c: wv.phrase(c)[0] for c in classes}

    def __call__(self, vectors: np.ndarray, labels: np.ndarray, rows: np.ndarray, seen: list[str], held: list[str]) -> dict[str, Any]:
        V, L = unit_rows(vectors[rows]), labels[rows]
        per = {}
        for c in seen + held:
            q = self.queries[c]
            if q is None:
                continue
            top = np.argsort(-(V @ q), kind="stable")[:K]
            per[c] = float((L[top] == c).mean())
        sims = V @ self.matrix.T
        top5 = np.argpartition(-sims, TAG_K, axis=1)[:, :TAG_K]
        hit = np.array([bool(set(tokenize(L[i])) & {self.words[j] for j in top5[i]}) for i in range(len(rows))])
        is_held = np.isin(L, held)
        return {
            "seen_p_at_10": _mean([per[c] for c in seen if c in per]),
            "zero_shot_p_at_10": _mean([per[c] for c in held if c in per]),
            "tag_at_5_seen": _mean(hit[~is_held].tolist()),
            "tag_at_5_zero_shot": _mean(hit[is_held].tolist()),
            "per_label_p_at_10": per,
        }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def class_mapping_study(P: np.ndarray, labels: np.ndarray, wv: WordVectors, scorer: Scorer) -> dict[str, Any]:
    """ConSE on every image with other ways of turning an ImageNet class name into a vector."""
    names = imagenet_class_names()

    def variant(pick: Any) -> np.ndarray:
        out = np.zeros((len(names), wv.dim), np.float32)
        for i, name in enumerate(names):
            vecs = [v for v in pick([s.strip() for s in name.split(",") if s.strip()]) if v is not None]
            if vecs:
                out[i] = unit(np.mean([unit(v) for v in vecs], axis=0))
        return out

    def head(s: str) -> np.ndarray | None:
        t = tokenize(s)
        return wv.get(t[-1]) if t else None

    ranks = wv.index

    def common(syns: list[str]) -> list[str]:
        return [s for s in syns if all(ranks.get(t, 10**9) < 100_000 for t in tokenize(s))] or syns

    variants = {
        "synonyms' (phrase + head noun), rare-word synonyms skipped (used)": class_word_vectors(names, wv)[0],
        "mean of synonyms' phrase vectors, rare-word synonyms skipped": variant(lambda syns: [wv.phrase(s)[0] for s in common(syns)]),
        "mean of all synonyms' phrase vectors": variant(lambda syns: [wv.phrase(s)[0] for s in syns]),
        "first synonym": variant(lambda syns: [wv.phrase(syns[0])[0]]),
        "last word of the first synonym": variant(lambda syns: [head(syns[0])]),
    }
    classes = sorted(set(labels.tolist()))
    everything = np.arange(len(labels))
    out = {}
    for name, cv in variants.items():
        r = scorer(conse_vectors(P, cv), labels, everything, classes, [])
        out[name] = {"p_at_10": r["seen_p_at_10"], "tag_at_5": r["tag_at_5_seen"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--zero-shot", type=float, default=0.25)
    parser.add_argument("--test", type=float, default=0.3)
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out (e.g. mlp,hinge)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "semantic.json")
    args = parser.parse_args()

    X, P, label_list = features(args.images, args.backbone)
    labels = np.array(label_list, dtype=object)
    wv = load_word_vectors(None)
    classes = sorted(set(label_list))
    scorer = Scorer(wv, classes)
    class_vectors, _known = class_word_vectors(imagenet_class_names(), wv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rows = [r for r in ROWS if r[1] not in skip and not (r[1] == "gated" and r[2] in skip)]

    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in rows}
    splits = []
    for seed in range(args.seeds):
        seen, held, train, test = split(labels, seed, args.zero_shot, args.test)
        splits.append({"seed": seed, "zero_shot_labels": held, "train_images": len(train), "test_images": len(test)})
        train_set = set(train.tolist())
        train_labels = [lab if i in train_set else None for i, lab in enumerate(label_list)]
        for name, method, projection in rows:
            started = time.perf_counter()
            model = fit_semantic(X, P, train_labels, wv, class_vectors, method=method, seed=seed, projection=projection)
            vectors = model.image_vectors(X, P)
            seconds = time.perf_counter() - started
            result = scorer(vectors, labels, test, seen, held)
            result["fit_seconds"] = seconds
            result["epochs"] = (model.report.get("projection_report") or {}).get("epochs")
            per_seed[name].append(result)
            print(f"seed {seed} {name}: seen {result['seen_p_at_10']:.3f} zero-shot {result['zero_shot_p_at_10']:.3f} "
                  f"({seconds:.1f} s)", file=sys.stderr)

    keys = ("seen_p_at_10", "zero_shot_p_at_10", "tag_at_5_seen", "tag_at_5_zero_shot", "fit_seconds")
    summary = {name: {k: float(np.mean([r[k] for r in results])) for k in keys} for name, results in per_seed.items()}
    for name, results in per_seed.items():
        summary[name]["zero_shot_p_at_10_min"] = float(np.min([r["zero_shot_p_at_10"] for r in results]))
        summary[name]["seen_p_at_10_min"] = float(np.min([r["seen_p_at_10"] for r in results]))
    chance = {
        "seen_p_at_10": _mean([_chance(labels, split(labels, s, args.zero_shot, args.test), False) for s in range(args.seeds)]),
        "zero_shot_p_at_10": _mean([_chance(labels, split(labels, s, args.zero_shot, args.test), True) for s in range(args.seeds)]),
    }
    mapping = class_mapping_study(P, labels, wv, scorer)

    result = {
        "backbone": args.backbone,
        "images": len(labels),
        "labels": len(classes),
        "seeds": args.seeds,
        "zero_shot_fraction": args.zero_shot,
        "test_fraction": args.test,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "fit_seconds_include": "fit_semantic + image_vectors of every image",
        "splits": splits,
        "default": DEFAULT_ROW,
        "summary": summary,
        "chance": chance,
        "per_seed": per_seed,
        "class_name_mapping_conse_all_images": mapping,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{len(labels)} images, {len(classes)} labels, backbone {args.backbone}; {args.seeds} seeds, "
          f"{round(args.zero_shot * len(classes))} zero-shot labels each, seen images {1 - args.test:.0%}/{args.test:.0%} train/test\n")
    print("| method | seen P@10 | zero-shot P@10 | tag@5 seen | tag@5 zero-shot | fit time |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        shown = f"**{name}**" if name == DEFAULT_ROW else name
        print(f"| {shown} | {s['seen_p_at_10']:.3f} | {s['zero_shot_p_at_10']:.3f} | {s['tag_at_5_seen']:.3f} | "
              f"{s['tag_at_5_zero_shot']:.3f} | {s['fit_seconds']:.2f} s |")
    print(f"| chance | {chance['seen_p_at_10']:.3f} | {chance['zero_shot_p_at_10']:.3f} | | | |")
    print("\nzero-shot labels per seed: " + "; ".join(f"{s['seed']}: {', '.join(s['zero_shot_labels'])}" for s in splits))
    print("\nImageNet class name -> word vector (ConSE, every image, all labels as queries)\n")
    print("| mapping | P@10 | tag@5 |")
    print("|---|---|---|")
    for name, m in mapping.items():
        print(f"| {name} | {m['p_at_10']:.3f} | {m['tag_at_5']:.3f} |")


def _chance(labels: np.ndarray, s: tuple[list[str], list[str], np.ndarray, np.ndarray], zero_shot: bool) -> float:
    seen, held, _train, test = s
    L = labels[test]
    return _mean([float((L == c).mean()) for c in (held if zero_shot else seen)])


if __name__ == "__main__":
    main()
