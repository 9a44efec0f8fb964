"""Word-space methods side by side on the 50-label protocol, and search on a labelled
collection (``benchmarks/labelled_protocol.py``: every photo labelled, queried by kinds,
associations and absent things; needs WordNet 3.0 in /usr/share/wordnet).

    python benchmarks/semantic.py [--images DIR ...] [--backbone efficientnet-lite0]
                                  [--seeds 5] [--held-out 20] [--train 15] [--test 10] [--skip mlp]
                                  [--labelled-seeds 3] [--photos 15] [--protocols zero-shot,labelled] [--calibrate]

Data: the photos of every folder label of ``--images`` (default: the 20 labels of
``../shared/data/caltech101-dev`` and the 30 of ``caltech101-dev2``, 1,965 photos). For each
seed, ``numpy.random.default_rng(seed)`` picks ``--held-out`` labels as zero-shot labels:
none of their photos is labelled. Of each other (seen) label, ``--train`` photos are
labelled and ``--test`` others are left unlabelled; of each zero-shot label, ``--train``
photos are unlabelled. Every method is fitted on the labelled photos only (as ``ingest``
would on that database); then, among the unlabelled photos only:

* P@10 seen / zero-shot: for each label, the share of its own photos among the first 10
  photos a text query of its name finds (``car_side``: the mean of its words), averaged
  over labels, ranked as search ranks: query words anchored to their WordNet kin classes
  (the database's labels left alone) and the first 100 hits re-ranked by visual
  feedback, for the rows that have them. Query words come from the whole GloVe
  vocabulary (what the lookup table answers); a label no row can answer is refused and
  listed;
* tag@5: the share of photos with a word of their label among their 5 stored tags, as
  ``ingest`` stores them: for the rows with class-led tags, the names of the photo's most
  probable classes first, then the nearest words of the vocabulary (the 50,000 most
  frequent GloVe words plus the seen labels' words and the words of the ImageNet class
  names, stopwords, numbers and punctuation left out);
* the strong/weak cue: the share of the top-10 hits marked strong, and how many of the
  strong and of the weak hits are true matches, against the threshold ``fit_semantic``
  calibrates on the labelled photos.

Each method's row is what search does with it (neighbour smoothing and WordNet anchoring
apply to the class-based models, visual feedback to every text query, class-led tags to
joint and ConSE); the joint rows take the default apart. Figures are means over the seeds
(min over seeds in brackets for P@10). Features, class probabilities and the ImageNet head
come from the real backbone and are cached in /tmp.
Prints a markdown table and writes benchmarks/results/semantic.json.
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

from semsearch_sqlite.errors import QueryError  # noqa: E402
from semsearch_sqlite.media.files import discover  # noqa: E402
from semsearch_sqlite.media.images import load_image  # noqa: E402
from semsearch_sqlite.model.conse import class_word_vectors, imagenet_class_names  # noqa: E402
from semsearch_sqlite.model.semantic import MATCH_META, class_tags, collection_semantics, fit_semantic, match_strength  # noqa: E402
from semsearch_sqlite.model.smoothing import SMOOTH_NEIGHBOURS, smooth_vectors, smoothed_top_classes, top_classes  # noqa: E402
from semsearch_sqlite.pipeline.train import imagenet_class_words  # noqa: E402
from semsearch_sqlite.text.glove import DEFAULT_VOCAB_SIZE, WordVectors, load_word_vectors  # noqa: E402
from semsearch_sqlite.text.query import combine_terms, compound_lookup, parse_query, tokenize  # noqa: E402
from semsearch_sqlite.text.tags import nearest_tags  # noqa: E402
from semsearch_sqlite.text.vocabulary import WordSpace, anchored_lookup, query_anchoring  # noqa: E402
from semsearch_sqlite.vectors.maths import unit_rows  # noqa: E402
from semsearch_sqlite.vectors.matrix import Matrix  # noqa: E402
from semsearch_sqlite.vectors.neighbours import nearest_rows  # noqa: E402
from semsearch_sqlite.vectors.rerank import feedback_ranking  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_IMAGES = [DATA / "caltech101-dev", DATA / "caltech101-dev2"]
CACHE = Path("/tmp/semsearch-bench-features")
K = 10
TAG_K = 5

# (row name, fit_semantic method, what search adds): "smooth" (neighbour smoothing of the
# stored vectors), "anchor" (WordNet anchoring of query words), "feedback" (visual re-ranking
# of the first hits), "classes" (tags led by the most probable classes). Each method's row is
# what the product does with it (smoothing and anchoring apply to the class-based models
# only, class-led tags to joint and ConSE); the joint rows in between take the default apart.
ALL = ("smooth", "anchor", "feedback", "classes")
ROWS = [
    ("the talk's MLP (--method mlp)", "mlp", ALL),
    ("ridge", "ridge", ALL),
    ("ConSE", "conse", ALL),
    ("joint alone (round 2 default)", "joint", ()),
    ("joint + neighbour smoothing", "joint", ("smooth",)),
    ("joint + WordNet anchoring", "joint", ("anchor",)),
    ("joint + visual feedback", "joint", ("feedback",)),
    ("joint + class-led tags", "joint", ("classes",)),
    ("joint + all four (default)", "joint", ALL),
]
DEFAULT_ROW = ROWS[-1][0]


def features(
    folder: Path, backbone: str, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray, list[str], tuple[np.ndarray, np.ndarray]]:
    """Features, class probabilities, labels (folder names) and the ImageNet head, cached in /tmp."""
    files = discover(folder).files
    labels = [f.parent.name if f.parent != folder else "" for f in files]
    key = hashlib.sha256(("\n".join(str(f.relative_to(folder)) for f in files) + backbone).encode()).hexdigest()[:12]
    cached = CACHE / f"{Path(backbone).name.replace('.', '_')}-{key}.npz"
    if cached.exists():
        d = np.load(cached)
        return d["X"], d["P"], labels, (d["kernel"], d["bias"])
    from semsearch_sqlite.model.cnn import load_backbone

    model = load_backbone(backbone)
    head = model.classifier_weights()
    if head is None:
        sys.exit(f"{backbone} has no ImageNet classifier; ConSE and the joint model need one")
    X, P = [], []
    for i in range(0, len(files), batch_size):
        f, p = model.predict(model.preprocess([load_image(path) for path in files[i : i + batch_size]]))
        X.append(f)
        P.append(p)
        print(f"\rfeatures {folder.name}: {min(i + batch_size, len(files))}/{len(files)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    out = {
        "X": np.vstack(X).astype(np.float32),
        "P": np.vstack(P).astype(np.float32),
        "kernel": np.asarray(head[0], np.float32),
        "bias": np.asarray(head[1], np.float32),
    }
    np.savez(cached, **out)
    return out["X"], out["P"], labels, (out["kernel"], out["bias"])


def split(
    labels: np.ndarray, seed: int, held_out: int, n_train: int, n_test: int
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(seen labels, zero-shot labels, labelled rows, unlabelled evaluation rows)."""
    classes = sorted(set(labels.tolist()))
    rng = np.random.default_rng(seed)
    held = sorted(rng.choice(classes, size=min(held_out, len(classes) - 2), replace=False).tolist())
    seen = [c for c in classes if c not in held]
    train, test = [], []
    for c in classes:
        rows = rng.permutation(np.flatnonzero(labels == c))
        if c in held:
            test.extend(rows[:n_train].tolist())
        else:
            train.extend(rows[:n_train].tolist())
            test.extend(rows[n_train : n_train + n_test].tolist())
    return seen, held, np.array(sorted(train)), np.array(sorted(test))


class Scorer:
    """P@10 of label queries, tag@5 and the match cue among the unlabelled photos."""

    def __init__(self, wv: WordVectors, seen: list[str]):
        # the vocabulary ingest stores, as the word space tags are drawn from
        extra = {w for c in seen for w in tokenize(c)} | set(imagenet_class_words())
        vocab = wv.subset(DEFAULT_VOCAB_SIZE, sorted(extra))
        n = len(vocab.words)
        self.space = WordSpace(
            dict(enumerate(vocab.words)),
            {w: i for i, w in enumerate(vocab.words)},
            Matrix(np.arange(n), unit_rows(vocab.vectors), {i: i for i in range(n)}),
        )
        self.wv = wv

    def __call__(
        self,
        vectors: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        seen: list[str],
        held: list[str],
        strong: float | None,
        lookup: Any,
        visual: np.ndarray | None,
        leading: list[list[tuple[str, float]]] | None = None,
    ) -> dict[str, Any]:
        """``lookup``: the query-term lookup (plain or anchored); ``visual``: unit visual
        vectors of ``rows`` for the feedback re-ranking, or None; ``leading``: every
        photo's class tags (:func:`class_tags`), or None for nearest words only."""
        V, L = unit_rows(vectors[rows]), labels[rows]
        per, refused, cue = {}, [], {"strong": [], "weak": []}
        for c in seen + held:
            try:
                q = combine_terms(parse_query(c), lookup, allow_unknown=True).vector
            except QueryError:
                refused.append(c)
                continue
            s = V @ q
            top = (feedback_ranking(s, visual) if visual is not None else np.argsort(-s, kind="stable"))[:K]
            per[c] = float((L[top] == c).mean())
            for i in top:
                cue[match_strength(float(1 - s[i]), strong)].append(bool(L[i] == c))
        tags = nearest_tags(self.space, V, TAG_K, leading=None if leading is None else [leading[i] for i in rows])
        hit = np.array(
            [bool(set(tokenize(L[i])) & {w for tag, *_ in t for w in tokenize(tag)}) for i, t in enumerate(tags)]
        )
        is_held = np.isin(L, held)
        n_hits = len(cue["strong"]) + len(cue["weak"])
        return {
            "seen_p_at_10": _mean([per[c] for c in seen if c in per]),
            "zero_shot_p_at_10": _mean([per[c] for c in held if c in per]),
            "tag_at_5_seen": _mean(hit[~is_held].tolist()),
            "tag_at_5_zero_shot": _mean(hit[is_held].tolist()),
            "strong_share": len(cue["strong"]) / n_hits if n_hits else float("nan"),
            "strong_precision": _mean(cue["strong"]),
            "weak_precision": _mean(cue["weak"]),
            "refused": refused,
            "per_label_p_at_10": per,
        }


def one_of_a_kind(
    X: np.ndarray,
    P: np.ndarray,
    labels: np.ndarray,
    head: Any,
    wv: WordVectors,
    class_vectors: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, tuple[float, float]]:
    """Tags of photos unlike any other in their collection (many phone photos are): per
    seed, the labelled photos of the split plus ONE unlabelled photo of each label. The
    neighbour smoothing must not hand such a photo its neighbours' meaning."""
    plain = "joint, smoothed with every neighbour weighing 1 (not kept)"
    out: dict[str, list[tuple[float, float]]] = {"joint, not smoothed": [], plain: [], "joint, smoothed (default)": []}
    for seed in range(args.seeds):
        seen, held, train, test = split(labels, seed, args.held_out, args.train, args.test)
        rng = np.random.default_rng(seed)
        pool = np.array(sorted(int(rng.choice(test[labels[test] == c])) for c in sorted(set(labels[test].tolist()))))
        rows = np.concatenate([train, pool])
        model = fit_semantic(
            X[rows],
            P[rows],
            [labels[i] for i in train] + [None] * len(pool),
            wv,
            class_vectors,
            method="joint",
            seed=seed,
            head=head,
        )
        scorer = Scorer(wv, seen)
        mine = np.arange(len(train), len(rows))
        raw = model.image_vectors(X[rows], P[rows])
        probabilities = model.class_probabilities(X[rows], P[rows])
        own = top_classes(probabilities)
        near = nearest_rows(X[rows], SMOOTH_NEIGHBOURS)
        everyone = smooth_vectors(raw, raw[near], np.ones(near.shape, np.float32), {"threshold": 0.0, "width": 1e-6})
        alike = smoothed_top_classes(
            own, (own[0][near], own[1][near]), np.ones(near.shape, np.float32), probabilities.shape[1]
        )
        for name, (vectors, classes) in (
            ("joint, not smoothed", (raw, smoothed_top_classes(own, None, None, probabilities.shape[1]))),
            (plain, (everyone, alike)),
            ("joint, smoothed (default)", collection_semantics(model, X[rows], P[rows])),
        ):
            leading = class_tags(model, scorer.space, vectors, classes)
            r = scorer(vectors, labels[rows], mine, seen, held, None, compound_lookup(wv.get), None, leading)
            out[name].append((r["tag_at_5_seen"], r["tag_at_5_zero_shot"]))
    return {name: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))) for name, v in out.items()}


SENSE_ROWS = [("joint (default)", "joint"), ("ridge", "ridge"), ("ConSE", "conse")]


class SenseJudge:
    """Whether WordNet places a tag near a photo's true kind: the label's close kin classes
    (read from ``data/wordnet_classes.tsv.gz``: the whole label, else its word nearest to a
    class) and, for each, its hypernym chain and synonyms. A tag is in the photo's sense
    when it is a word of the label, a lemma of that chain or of the classes' names, or a
    word whose close kin classes include one of them (Wu-Palmer >= 0.8)."""

    def __init__(self) -> None:
        import gzip
        from importlib import resources

        from semsearch_sqlite.model.conse import imagenet_hypernyms

        raw = gzip.decompress(resources.files("semsearch_sqlite").joinpath("data/wordnet_classes.tsv.gz").read_bytes())
        self.best: dict[str, float] = {}
        self.close: dict[str, set[int]] = {}
        for line in raw.decode("utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                pairs = [p.split(":") for p in parts[2].split()]
                self.best[parts[0]] = float(parts[1])
                self.close[parts[0]] = {int(r) for r, w in pairs if float(w) >= 0.5}
        self.chains = imagenet_hypernyms()
        self.names = [[s.strip().lower() for s in n.split(",")] for n in imagenet_class_names()]

    def _forms(self, word: str) -> list[str]:
        return [word] + ([word[:-1]] if word.endswith("s") else []) + ([word[:-2]] if word.endswith("es") else [])

    def kind(self, label: str) -> set[int]:
        words = tokenize(label)
        for form in (" ".join(words), "".join(words)):
            for f in self._forms(form):
                if f in self.close:
                    return self.close[f]
        known = [f for w in words for f in self._forms(w) if f in self.close]
        return self.close[max(known, key=lambda f: self.best[f])] if len(words) > 1 and known else set()

    def lemmas(self, kind: set[int]) -> set[str]:
        out = {lem for r in kind for lemmas in self.chains[r] for lem in lemmas}
        out |= {name for r in kind for name in self.names[r]} | {
            name.split()[-1] for r in kind for name in self.names[r]
        }
        return out

    def in_sense(self, tag: str, label: str, kind: set[int], lemmas: set[str]) -> bool:
        if set(tokenize(tag)) & set(tokenize(label)):
            return True
        forms = self._forms(tag.lower())
        return any(f in lemmas or self.close.get(f, set()) & kind for f in forms)


def tags_in_sense(
    X: np.ndarray,
    P: np.ndarray,
    labels: np.ndarray,
    head: Any,
    wv: WordVectors,
    class_vectors: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, dict[str, float]]:
    """Tags in the photo's sense (issue 24): of the unlabelled photos of each split whose
    label WordNet knows, the share of their tags 2-5 (as ingest stores them) that the
    :class:`SenseJudge` places near the photo's true kind, for seen / zero-shot labels,
    with tag@5 of the same tags. Prints its table and writes semantic_tags.json."""
    judge = SenseJudge()
    out: dict[str, dict[str, list[float]]] = {name: {} for name, _ in SENSE_ROWS}
    examples: dict[str, list[str]] = {}
    for seed in range(args.seeds):
        seen, held, train, test = split(labels, seed, args.held_out, args.train, args.test)
        scorer = Scorer(wv, seen)
        train_labels: list[str | None] = [None] * len(labels)
        for i in train:
            train_labels[i] = labels[i]
        for name, method in SENSE_ROWS:
            model = fit_semantic(X, P, train_labels, wv, class_vectors, method=method, seed=seed, head=head)
            vectors, classes = (
                collection_semantics(model, X, P) if model.needs_probs else (model.image_vectors(X, P), None)
            )
            leading = class_tags(model, scorer.space, vectors, classes)
            tags = nearest_tags(
                scorer.space,
                unit_rows(vectors[test]),
                TAG_K,
                leading=None if leading is None else [leading[i] for i in test],
            )
            got: dict[str, list[float]] = out[name]
            for i, t in zip(test, tags):
                label, part = labels[i], "zero_shot" if labels[i] in held else "seen"
                words = [tag for tag, *_ in t]
                got.setdefault(f"tag_at_5_{part}", []).append(
                    float(bool(set(tokenize(label)) & {w for tag in words for w in tokenize(tag)}))
                )
                kind = judge.kind(label)
                if not kind:
                    continue
                lemmas = judge.lemmas(kind)
                for tag in words[1:5]:
                    ok = float(judge.in_sense(tag, label, kind, lemmas))
                    got.setdefault(f"in_sense_{part}", []).append(ok)
                    got.setdefault("in_sense", []).append(ok)
                if seed == 0 and name == SENSE_ROWS[0][0] and label not in examples:
                    examples[label] = words
    summary = {name: {k: float(np.mean(v)) for k, v in got.items()} for name, got in out.items()}
    unjudged = sorted({c for c in set(labels.tolist()) if not judge.kind(c)})
    print(
        "\nTags in the photo's sense (share of tags 2-5 WordNet places near the photo's true kind; photos of "
        f"labels WordNet lacks are not judged: {', '.join(unjudged)}):\n"
    )
    print("| method | in sense | seen labels | zero-shot | tag@5 seen | tag@5 zero-shot |\n|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(
            f"| {name} | {s['in_sense']:.3f} | {s['in_sense_seen']:.3f} | {s['in_sense_zero_shot']:.3f} | "
            f"{s['tag_at_5_seen']:.3f} | {s['tag_at_5_zero_shot']:.3f} |"
        )
    print(
        "\nthe default's 5 tags, one photo per label (seed 0): "
        + "; ".join(f"{label}: {' '.join(w)}" for label, w in sorted(examples.items()))
    )
    (HERE / "results" / "semantic_tags.json").write_text(
        json.dumps(
            {"summary": summary, "unjudged_labels": unjudged, "examples": examples, "seeds": args.seeds}, indent=2
        )
        + "\n"
    )
    return summary


def _mean(values: list[Any]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, nargs="+", default=DEFAULT_IMAGES)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--held-out", type=int, default=20)
    parser.add_argument("--train", type=int, default=15)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out (e.g. mlp)")
    parser.add_argument("--labelled-seeds", type=int, default=3, help="seeds of the labelled-collection protocol")
    parser.add_argument("--photos", type=int, default=15, help="photos per label in the labelled-collection protocol")
    parser.add_argument("--protocols", default="zero-shot,labelled", help="which protocols to run")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="labelled protocol: choose its thresholds on half the queries, report the other half",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "semantic.json")
    args = parser.parse_args()

    parts = [features(folder, args.backbone) for folder in args.images]
    X = np.vstack([p[0] for p in parts])
    P = np.vstack([p[1] for p in parts])
    labels = np.array([lab for p in parts for lab in p[2]], dtype=object)
    head = parts[0][3]
    wv = load_word_vectors(None)
    class_vectors, _known = class_word_vectors(imagenet_class_names(), wv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rows = [r for r in ROWS if r[1] not in skip]

    protocols = {p.strip() for p in args.protocols.split(",")}
    labelled = None
    if "labelled" in protocols:
        import labelled_protocol

        space = Scorer(wv, sorted({w for lab in labels.tolist() for w in [lab]})).space
        methods = [m for m in ("joint", "mlp", "ridge", "conse") if m not in skip]
        labelled = labelled_protocol.run(
            X, P, labels, head, wv, class_vectors, space, methods, args.labelled_seeds, args.photos
        )
        labelled.pop("examples", None)
        labelled_protocol.print_table(labelled)
        if args.calibrate:
            labelled["calibration"] = calibration = labelled_protocol.calibrate(
                X, P, labels, head, wv, class_vectors, space, args.photos
            )
            c = calibration["chosen"]
            print(
                f"\ncalibrated on half A: association strong at {c['ASSOCIATION_STRONG']}, zero at "
                f"{c['ASSOCIATION_ZERO']} (shipped: {calibration['shipped']}); on half B: related P@10 "
                f"{c['related_p_at_10_half_b']:.3f}, strong precision {c['strong_precision_half_b']:.3f}, "
                f"absent honesty {c['absent_honesty_half_b']:.3f}"
            )
    if "zero-shot" not in protocols:
        if labelled is not None:
            old = json.loads(args.out.read_text()) if args.out.exists() else {}
            args.out.write_text(json.dumps({**old, "labelled": labelled}, indent=2) + "\n")
        return
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in rows}
    splits = []
    for seed in range(args.seeds):
        seen, held, train, test = split(labels, seed, args.held_out, args.train, args.test)
        splits.append({"seed": seed, "zero_shot_labels": held, "labelled": len(train), "unlabelled": len(test)})
        scorer = Scorer(wv, seen)
        train_labels: list[str | None] = [None] * len(labels)
        for i in train:
            train_labels[i] = labels[i]
        fits: dict[str, Any] = {}
        for name, method, parts in rows:
            started = time.perf_counter()
            if method not in fits:
                model = fit_semantic(X, P, train_labels, wv, class_vectors, method=method, seed=seed, head=head)
                fits[method] = (model, model.image_vectors(X, P), time.perf_counter() - started)
            model, vectors, seconds = fits[method]
            started = time.perf_counter()
            classes = None
            if "smooth" in parts and model.needs_probs:
                vectors, classes = collection_semantics(model, X, P)
            probabilities = model.class_probabilities(X, P) if "classes" in parts else None
            if probabilities is not None and classes is None:
                classes = smoothed_top_classes(top_classes(probabilities), None, None, probabilities.shape[1])
            leading = class_tags(model, scorer.space, vectors, classes) if "classes" in parts else None
            lookup = compound_lookup(wv.get)
            anchor_to, labels_left = query_anchoring(model.config, class_vectors)
            if "anchor" in parts and anchor_to is not None:
                lookup = anchored_lookup(wv.get, anchor_to, labels_left)
            visual = unit_rows(X[test]) if "feedback" in parts else None
            result = scorer(vectors, labels, test, seen, held, model.report.get(MATCH_META), lookup, visual, leading)
            result["fit_seconds"] = seconds + time.perf_counter() - started
            per_seed[name].append(result)
            print(
                f"seed {seed} {name}: seen {result['seen_p_at_10']:.3f} zero-shot {result['zero_shot_p_at_10']:.3f} "
                f"({result['fit_seconds']:.1f} s)",
                file=sys.stderr,
            )

    alone = one_of_a_kind(X, P, labels, head, wv, class_vectors, args)
    tags_in_sense(X, P, labels, head, wv, class_vectors, args)

    keys = (
        "seen_p_at_10",
        "zero_shot_p_at_10",
        "tag_at_5_seen",
        "tag_at_5_zero_shot",
        "strong_share",
        "strong_precision",
        "weak_precision",
        "fit_seconds",
    )
    summary: dict[str, dict[str, float]] = {}
    for name, results in per_seed.items():
        summary[name] = {k: float(np.nanmean([r[k] for r in results])) for k in keys}
        summary[name]["seen_p_at_10_min"] = float(np.min([r["seen_p_at_10"] for r in results]))
        summary[name]["zero_shot_p_at_10_min"] = float(np.min([r["zero_shot_p_at_10"] for r in results]))
    refused = sorted({c for r in per_seed.get(DEFAULT_ROW, []) for c in r["refused"]})
    refused_other = {name: sorted({c for r in results for c in r["refused"]}) for name, results in per_seed.items()}
    result = {
        "backbone": args.backbone,
        "images": len(labels),
        "labels": len(set(labels.tolist())),
        "seeds": args.seeds,
        "held_out": args.held_out,
        "train": args.train,
        "test": args.test,
        "splits": splits,
        "default": DEFAULT_ROW,
        "refused_labels": refused,
        "refused_by_row": refused_other,
        "summary": summary,
        "per_seed": per_seed,
        "one_of_a_kind": alone,
        "labelled": labelled,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{len(labels)} photos, {len(set(labels.tolist()))} labels, backbone {args.backbone}; {args.seeds} seeds, "
        f"{args.held_out} zero-shot labels each; seen labels: {args.train} labelled + {args.test} unlabelled photos, "
        f"zero-shot labels: {args.train} unlabelled photos\n"
    )
    print(
        "| method | seen labels, new photos P@10 | zero-shot P@10 | tag@5 new photos of seen labels | "
        "tag@5 zero-shot | "
        "strong hits (precision) | weak hits' precision | fit |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        shown = f"**{name}**" if name == DEFAULT_ROW else name
        print(
            f"| {shown} | {s['seen_p_at_10']:.3f} ({s['seen_p_at_10_min']:.3f}) | {s['zero_shot_p_at_10']:.3f} "
            f"({s['zero_shot_p_at_10_min']:.3f}) | {s['tag_at_5_seen']:.3f} | {s['tag_at_5_zero_shot']:.3f} | "
            f"{s['strong_share']:.0%} ({s['strong_precision']:.3f}) | {s['weak_precision']:.3f} | "
            f"{s['fit_seconds']:.2f} s |"
        )
    print(f"\nrefused as unknown by the default: {', '.join(refused) or 'none'}")
    for name, words in refused_other.items():
        if words and name != DEFAULT_ROW:
            print(f"refused by {name}: {', '.join(words)}")
    print(
        "\nOne of a kind (the collection holds 1 unlabelled photo per label besides the labelled ones; tag@5 of "
        "those photos, seen / zero-shot labels):\n"
    )
    print("| stored vectors | tag@5 seen | tag@5 zero-shot |\n|---|---|---|")
    for name, (seen_tags, zero_tags) in alone.items():
        print(f"| {name} | {seen_tags:.3f} | {zero_tags:.3f} |")
    print(
        "\nzero-shot labels per seed: " + "; ".join(f"{s['seed']}: {', '.join(s['zero_shot_labels'])}" for s in splits)
    )


if __name__ == "__main__":
    main()
