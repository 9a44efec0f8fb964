"""Rebuild ``semsearch_sqlite/data/imagenet_hypernyms.txt`` from WordNet 3.0.

    apt-get install wordnet-base   # WordNet 3.0's database files in /usr/share/wordnet
    python benchmarks/imagenet_hypernyms.py [--wordnet /usr/share/wordnet] [--check]

Each ImageNet class is a WordNet 3.0 noun synset; its id (``n01440764``: ``n`` and the
synset's byte offset in ``data.noun``) is the first column of the existing file, in class
order. For each class this writes its ancestors through hypernym and instance-hypernym
links, nearest first (ties by offset), each as its comma-separated lemmas, leaving out
ancestors above 500 of the 1000 classes (entity, object, artifact...). ``--check`` only
compares with the shipped file. Not a benchmark: a data tool, kept beside them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "semsearch_sqlite" / "data" / "imagenet_hypernyms.txt"
MAX_CLASSES = 500


def read_nouns(wordnet: Path) -> dict[int, tuple[list[str], list[int]]]:
    """offset -> (lemmas, hypernym offsets) of every noun synset."""
    out: dict[int, tuple[list[str], list[int]]] = {}
    with open(wordnet / "data.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.partition(" | ")[0].split()
            count = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i] for i in range(count)]
            at = 4 + 2 * count
            hypernyms = [
                int(fields[at + 2 + 4 * j])
                for j in range(int(fields[at]))
                if fields[at + 1 + 4 * j] in ("@", "@i") and fields[at + 3 + 4 * j] == "n"
            ]
            out[int(fields[0])] = (lemmas, hypernyms)
    return out


def ancestors(nouns: dict[int, tuple[list[str], list[int]]], offset: int) -> dict[int, int]:
    """ancestor offset -> its smallest depth above ``offset``."""
    found: dict[int, int] = {}
    frontier, depth = [offset], 0
    while frontier:
        depth += 1
        nxt = []
        for o in frontier:
            for h in nouns[o][1]:
                if h not in found:
                    found[h] = depth
                    nxt.append(h)
        frontier = nxt
    return found


def build(wordnet: Path, wnids: list[str]) -> str:
    nouns = read_nouns(wordnet)
    per_class = [ancestors(nouns, int(w[1:])) for w in wnids]
    counts = Counter(a for anc in per_class for a in anc)
    lines = []
    for wnid, anc in zip(wnids, per_class):
        groups = []
        for a, _depth in sorted(anc.items(), key=lambda item: (item[1], item[0])):
            if counts[a] > MAX_CLASSES:
                continue
            groups.append(",".join(re.sub(r"\(.*?\)$", "", lem).replace("_", " ") for lem in nouns[a][0]))
        lines.append(wnid + "\t" + "|".join(groups))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    wnids = [line.split("\t")[0] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    text = build(args.wordnet, wnids)
    if args.check:
        same = text == DATA.read_text(encoding="utf-8")
        print("imagenet_hypernyms.txt is up to date" if same else "imagenet_hypernyms.txt differs from WordNet")
        sys.exit(0 if same else 1)
    DATA.write_text(text, encoding="utf-8")
    print(f"wrote {DATA} ({len(wnids)} classes)")


if __name__ == "__main__":
    main()
