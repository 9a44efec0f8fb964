"""Relevance feedback (Rocchio): P@10 after one round of 2 liked + 2 disliked images,
against no feedback.

    python benchmarks/feedback.py DB [--seeds 5] [--zero-shot 0.25]

DB is a database ingested from labelled folders (e.g. the dev set:
``semsearch-sqlite ingest ../shared/data/caltech101-dev dev.db --backbone efficientnet-lite0``).

Protocol, for each label and seed (``numpy.random.default_rng(seed)``):

* text: the label typed as a query (``similar_images``, semantic space);
  image: a random image of the label as the query (``similar_to_image``, visual space);
  zero-shot text: as text, on a copy of DB whose word-space model is refitted without
  the labels of a seeded 25% of the labels (``refresh_semantic(labels=..., method="ridge")``:
  no ConSE, which alone finds these ImageNet-like labels), for those held-out labels:
  the case where the search alone is weak;
* a simulated user looks at the first 20 results: "more like this" on 2 of them that
  have the label, "less like this" on the 2 best-ranked that don't (when the first 20
  hold fewer, images of the label / of other labels are drawn at random);
* P@10 = share of the label among the 10 best results, counted on the residual
  collection (the 4 judged images and the query image are left out of both rankings,
  so showing back what the user already clicked earns nothing).

Prints a markdown table and writes benchmarks/results/feedback.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from semsearch_sqlite.pipeline.train import refresh_semantic
from semsearch_sqlite.queries.search import similar_images, similar_to_image
from semsearch_sqlite.storage.store import Store

HERE = Path(__file__).resolve().parent
K = 10
LOOK = 20


def judged(
    rng: np.random.Generator,
    ranked: list[tuple[int, str | None]],
    label: str,
    by_label: dict[str, list[int]],
    skip: set[int],
) -> tuple[list[int], list[int]]:
    """2 liked and 2 disliked ids, as a user would click them on the first results."""
    first = ranked[:LOOK]
    like = [i for i, lab in first if lab == label and i not in skip][:2]
    unlike = [i for i, lab in first if lab != label and i not in skip][:2]
    own = [i for i in by_label[label] if i not in skip and i not in like]
    others = [i for lab, ids in by_label.items() if lab != label for i in ids if i not in skip and i not in unlike]
    while len(like) < 2 and own:
        like.append(own.pop(int(rng.integers(len(own)))))
    while len(unlike) < 2:
        unlike.append(others.pop(int(rng.integers(len(others)))))
    return like, unlike


def precision(hits: list[tuple[int, str | None]], label: str, leave_out: set[int]) -> float:
    kept = [lab for i, lab in hits if i not in leave_out][:K]
    return sum(lab == label for lab in kept) / K


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--zero-shot", type=float, default=0.25)
    parser.add_argument(
        "--zero-shot-method",
        default="ridge",
        help="word-space method refitted for the zero-shot rows (ridge: no ConSE, so the search is weak)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "feedback.json")
    args = parser.parse_args()
    sums: dict[tuple[str, str], list[float]] = {}
    run_rounds(args.db, args.seeds, None, sums)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "zero-shot.db"
        shutil.copy(args.db, copy)
        with Store.open(copy, create=True) as store:
            labelled = store.conn.execute("select path, label from images where label is not null").fetchall()
            labels = sorted({lab for _, lab in labelled})
            held = set(
                np.random.default_rng(0)
                .choice(labels, size=max(1, round(len(labels) * args.zero_shot)), replace=False)
                .tolist()
            )
            refresh_semantic(
                store, method=args.zero_shot_method, labels={p: lab for p, lab in labelled if lab not in held}
            )
        run_rounds(copy, args.seeds, held, sums)
    result = {f"{kind}_{mode}_p_at_10": round(float(np.mean(v)), 4) for (kind, mode), v in sums.items()}
    result.update(
        seeds=args.seeds,
        zero_shot_labels=sorted(held),
        zero_shot_method=args.zero_shot_method,
        queries={kind: len(v) for (kind, mode), v in sums.items() if mode == "none"},
    )
    print(f"{len(labels)} labels ({len(held)} held out for zero-shot) x {args.seeds} seeds, residual P@{K}\n")
    print("| query | no feedback | 2+ / 2- feedback | gain |")
    print("|---|---|---|---|")
    for kind, space in (("text", "semantic space"), ("zero-shot text", "semantic space"), ("image", "visual space")):
        a, b = result[f"{kind}_none_p_at_10"], result[f"{kind}_feedback_p_at_10"]
        print(f"| {kind} ({space}) | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run_rounds(db: Path, seeds: int, held: set[str] | None, sums: dict[tuple[str, str], list[float]]) -> None:
    """One feedback round per label and seed; ``held``: only text queries of these labels."""
    with Store.open(db) as store:
        conn = store.conn
        by_label: dict[str, list[int]] = {}
        for i, label in conn.execute("select id, label from images where label is not null order by id"):
            by_label.setdefault(label, []).append(i)
        want = K + 5 + LOOK
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            for label, ids in by_label.items():
                if held is not None and label not in held:
                    continue
                query_image = int(ids[int(rng.integers(len(ids)))])
                cases = [
                    (
                        "text" if held is None else "zero-shot text",
                        lambda label=label, **kw: similar_images(conn, label, want, allow_unknown=True, **kw),
                        set(),
                    ),
                ]
                if held is None:
                    cases.append(
                        (
                            "image",
                            lambda q=query_image, **kw: similar_to_image(conn, q, want, "visual", **kw),
                            {query_image},
                        )
                    )
                for kind, run, skip in cases:
                    before = [(h.image_id, h.label) for h in run().hits]
                    like, unlike = judged(rng, before, label, by_label, skip)
                    after = [(h.image_id, h.label) for h in run(like=like, unlike=unlike).hits]
                    leave_out = set(like) | set(unlike) | skip
                    sums.setdefault((kind, "none"), []).append(precision(before, label, leave_out))
                    sums.setdefault((kind, "feedback"), []).append(precision(after, label, leave_out))


if __name__ == "__main__":
    sys.exit(main())
