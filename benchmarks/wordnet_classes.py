"""Rebuild ``semsearch_sqlite/data/wordnet_classes.tsv.gz`` from WordNet 3.0.

    apt-get install wordnet-base   # WordNet 3.0's database files in /usr/share/wordnet
    python benchmarks/wordnet_classes.py [--wordnet /usr/share/wordnet] [--check]

For every WordNet noun lemma, the ImageNet classes it is kin to: the Wu-Palmer similarity
of each of its first SENSES senses to each class's synset (2 d(lcs) / (d(a) + d(b)), depths counted
from the root along hypernym and instance-hypernym links, the best sense and the best
common ancestor counting), turned into weights ``exp((s - best) / TAU)``. A lemma is kept
when its best class is at least ``MIN_SIMILARITY`` similar (a kind of the same close
family: gerenuk -> impala, gazelle; ketch -> schooner; abstract nouns such as "music" or
"sky" are far from every class and left out), with the classes of weight >= ``MIN_WEIGHT``.

Lines: ``lemma<TAB>best similarity<TAB>class:weight class:weight ...`` (class = row of
``imagenet_classes.txt``), then ``=plural<TAB>singular`` lines from WordNet's irregular
plurals (``noun.exc``). Not a benchmark: a data tool, kept beside them.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet_hypernyms  # noqa: E402  (the sibling data tool: one reader of data.noun)

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE.parent / "semsearch_sqlite" / "data"
OUT = DATA_DIR / "wordnet_classes.tsv.gz"
CLASSES = DATA_DIR / "imagenet_hypernyms.txt"
TAU = 0.02
MIN_SIMILARITY = 0.8
MIN_WEIGHT = 0.01
# senses counted per lemma, most frequent first: rarer ones ("cat" as "big cat") would
# outbid the sense people mean
SENSES = 3


def read_nouns(wordnet: Path) -> dict[int, list[int]]:
    """offset -> hypernym offsets of every noun synset (the reader of imagenet_hypernyms.py)."""
    return {offset: hypernyms for offset, (_lemmas, hypernyms) in imagenet_hypernyms.read_nouns(wordnet).items()}


def read_senses(wordnet: Path) -> dict[str, list[int]]:
    """lemma (lower case, spaces) -> its noun synset offsets, most frequent sense first."""
    out: dict[str, list[int]] = {}
    with open(wordnet / "index.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            p = line.split()
            n, pointers = int(p[2]), int(p[3])
            out[p[0].replace("_", " ")] = [int(x) for x in p[4 + pointers + 2 : 4 + pointers + 2 + n]]
    return out


def ancestors(nouns: dict[int, list[int]], offset: int) -> dict[int, int]:
    """ancestor offset (the synset itself included, at 0) -> its smallest distance."""
    found, frontier, depth = {offset: 0}, [offset], 0
    while frontier:
        depth += 1
        nxt = []
        for o in frontier:
            for h in nouns.get(o, ()):
                if h not in found:
                    found[h] = depth
                    nxt.append(h)
        frontier = nxt
    return found


def build(wordnet: Path) -> bytes:
    nouns = read_nouns(wordnet)
    senses = read_senses(wordnet)
    wnids = [int(line.split("\t")[0][1:]) for line in CLASSES.read_text(encoding="utf-8").splitlines() if line.strip()]
    # a synset's depth: its longest path to the root + 1 (Wu-Palmer's depth, the root at 1)
    depth_cache: dict[int, int] = {}

    def depth(o: int) -> int:
        if o not in depth_cache:
            depth_cache[o] = max(ancestors(nouns, o).values()) + 1
        return depth_cache[o]

    under: dict[int, tuple[list[int], list[int]]] = {}
    for ci, w in enumerate(wnids):
        for a, d in ancestors(nouns, w).items():
            under.setdefault(a, ([], []))
            under[a][0].append(ci)
            under[a][1].append(d)
    arrays = {a: (np.array(c), np.array(d, np.float64), 2.0 * depth(a)) for a, (c, d) in under.items()}
    synset_cache: dict[int, np.ndarray] = {}

    def similarity(o: int) -> np.ndarray:
        if o not in synset_cache:
            out = np.zeros(len(wnids))
            for a, ds in ancestors(nouns, o).items():
                if a in arrays:
                    idx, dc, twice = arrays[a]
                    np.maximum.at(out, idx, twice / (ds + dc + twice))
            synset_cache[o] = out
        return synset_cache[o]

    lines = []
    for lemma in sorted(senses):
        s = np.max([similarity(o) for o in senses[lemma][:SENSES]], axis=0)
        best = float(s.max())
        if best < MIN_SIMILARITY:
            continue
        w = np.exp((s - best) / TAU)
        keep = np.flatnonzero(w >= MIN_WEIGHT)
        keep = keep[np.argsort(-w[keep], kind="stable")]
        lines.append(f"{lemma}\t{best:.3f}\t" + " ".join(f"{c}:{w[c]:.3f}" for c in keep))
    with open(wordnet / "noun.exc", encoding="latin-1") as f:
        for line in f:
            p = line.split()
            if len(p) >= 2 and re.fullmatch(r"[a-z][a-z_'-]*", p[0]):
                lines.append(f"={p[0].replace('_', ' ')}\t{p[1].replace('_', ' ')}")
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    data = build(args.wordnet)
    if args.check:
        same = OUT.exists() and gzip.decompress(data) == gzip.decompress(OUT.read_bytes())
        print(f"{OUT.name} is up to date" if same else f"{OUT.name} differs from WordNet")
        sys.exit(0 if same else 1)
    OUT.write_bytes(data)
    lemmas = sum(1 for line in gzip.decompress(data).decode().splitlines() if not line.startswith("="))
    print(f"wrote {OUT} ({lemmas} lemmas, {len(data) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
