"""Rebuild ``semsearch_sqlite/data/wordnet_kinds.tsv.gz`` from WordNet 3.0.

    apt-get install wordnet-base   # WordNet 3.0's database files in /usr/share/wordnet
    python benchmarks/wordnet_kinds.py [--wordnet /usr/share/wordnet]

The noun hierarchy, compact, so that an install without WordNet can tell whether a query
word names a kind a label belongs to ("bird" -> rooster) or a sibling kind ("crocodile"
beside elephant). Two parts separated by a ``%%`` line:

* ``lemma<TAB>tagged<TAB>id,id,...``: the lemma's noun senses, most frequent first (at most
  SENSES), and how many of them occur in WordNet's sense-tagged corpus (0: only rare senses);
* ``id<TAB>depth<TAB>parent,parent<TAB>lemma,lemma<TAB>gloss words``: every noun synset
  with its smallest depth below ``entity``, its hypernyms (instance hypernyms too), its first
  LEMMAS lemmas and the first GLOSS_WORDS content words of its definition (what
  ``model/relations.py`` describes a label with: a ketch is a "sailing vessel", a pizza an
  "italian open pie ... cheese").

The 1000 ImageNet classes have lemma lines too, keyed by their WordNet id (``n01440764``).

Ids are base-36 numbers of the synsets in offset order; ``=plural<TAB>singular`` irregular
plurals live in ``wordnet_classes.tsv.gz``. Not a benchmark: a data tool, kept beside them.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet_hypernyms  # noqa: E402  (the sibling data tool: one reader of data.noun)

OUT = Path(__file__).resolve().parent.parent / "semsearch_sqlite" / "data" / "wordnet_kinds.tsv.gz"
SENSES = 8
# a synset's lemmas kept for its words ("dolphin" -> "dolphin", "dolphinfish", "mahimahi")
LEMMAS = 3
# content words of a synset's definition (its first clause) kept, and the words left out
GLOSS_WORDS = 10
GLOSS_STOP = set(
    "a an the of or and in to with for by on at as from that which is are be its it having used often especially "
    "any various small large one two some".split()
)


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def read_index(wordnet: Path) -> dict[str, tuple[int, list[int]]]:
    """lemma -> (tagged sense count, noun synset offsets most frequent first)."""
    out: dict[str, tuple[int, list[int]]] = {}
    with open(wordnet / "index.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            p = line.split()
            n, pointers = int(p[2]), int(p[3])
            tagged = int(p[5 + pointers])
            out[p[0].replace("_", " ")] = (tagged, [int(x) for x in p[6 + pointers : 6 + pointers + n]])
    return out


def read_glosses(wordnet: Path) -> dict[int, str]:
    """offset -> the first GLOSS_WORDS content words of the synset's definition."""
    out = {}
    with open(wordnet / "data.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            words = re.findall(r"[a-z]+", line.partition(" | ")[2].split(";")[0].lower())
            out[int(line.split()[0])] = " ".join([w for w in words if w not in GLOSS_STOP][:GLOSS_WORDS])
    return out


def build(wordnet: Path) -> bytes:
    nouns = imagenet_hypernyms.read_nouns(wordnet)
    ids = {o: base36(i) for i, o in enumerate(sorted(nouns))}
    depth: dict[int, int] = {}

    def depth_of(o: int) -> int:
        if o not in depth:
            parents = nouns[o][1]
            depth[o] = 0 if not parents else 1 + min(depth_of(p) for p in parents)
        return depth[o]

    sys.setrecursionlimit(10000)
    lemmas = [
        f"{lemma}\t{tagged}\t{','.join(ids[o] for o in offsets[:SENSES])}"
        for lemma, (tagged, offsets) in sorted(read_index(wordnet).items())
    ]
    # the ImageNet classes by WordNet id, so a photo's predicted classes join the hierarchy
    wnids = [line.partition("\t")[0] for line in imagenet_hypernyms.DATA.read_text().splitlines() if line]
    lemmas += [f"{wnid}\t1\t{ids[int(wnid[1:])]}" for wnid in wnids]
    glosses = read_glosses(wordnet)
    graph = [
        f"{ids[o]}\t{depth_of(o)}\t{','.join(ids[p] for p in nouns[o][1])}\t"
        f"{','.join(lemma.lower().replace('_', ' ') for lemma in nouns[o][0][:LEMMAS])}\t{glosses.get(o, '')}"
        for o in sorted(nouns)
    ]
    return ("\n".join(lemmas) + "\n%%\n" + "\n".join(graph) + "\n").encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    args = parser.parse_args()
    data = build(args.wordnet)
    OUT.write_bytes(gzip.compress(data, 9, mtime=0))
    print(f"{OUT}: {len(data):,} bytes, {OUT.stat().st_size:,} compressed")


if __name__ == "__main__":
    main()
