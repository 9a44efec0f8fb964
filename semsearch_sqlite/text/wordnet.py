"""WordNet kinship between words and the ImageNet classes, for anchoring text queries.

GloVe alone places many nouns poorly against the backbone's classes: "rooster" is nearer
"patas" and "otterhound" than "cock" and "hen", "ketch" nearer "oxcart" than "schooner",
and "gerenuk" is not in glove.6B at all. WordNet knows all three are kin to ImageNet
classes (a ketch is a sailing vessel like the schooner and the yawl; a gerenuk an
antelope like the impala). ``data/wordnet_classes.tsv.gz`` (built from WordNet 3.0 by
``benchmarks/wordnet_classes.py``) lists, for each of the 22k noun lemmas with a close
class, the classes with weights. A query word then becomes its GloVe vector pulled
towards the mean word vector of its kin classes (:func:`anchored`), which is where the
ConSE part of the image vectors puts photos of such things. Numpy and the standard
library only: the reader install answers such queries without WordNet.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from semsearch_sqlite.vectors.maths import unit

DATA = "data/wordnet_classes.tsv.gz"
# how far a query word moves towards its kin classes (the weight of their mean vector
# beside the word's own unit vector); on the 50-label protocol of benchmarks/semantic.py
# 0.5 gave zero-shot P@10 +5 points, 1.0 the same within noise, 2.0 less (the word's own
# sense is lost)
ANCHOR_WEIGHT = 0.5


@dataclass(frozen=True)
class Kinship:
    """Lemma -> (class rows, weights), and WordNet's irregular plurals."""

    # lemma -> "row:weight row:weight ...", parsed when asked (parsing all 22k lines up
    # front would add 0.3 s to every cold query)
    classes: dict[str, str]
    plurals: dict[str, str]

    def kin(self, word: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The kin classes of a word or phrase (``"sea horse"``), trying its singular too."""
        for form in base_forms(word.lower().replace("_", " ").replace("-", " "), self.plurals):
            pairs = self.classes.get(form)
            if pairs is not None:
                rows, weights = zip(*(p.split(":") for p in pairs.split()))
                return np.array(rows, np.int32), np.array(weights, np.float32)
        return None


# WordNet's detachment rules for nouns (morphy): plural endings and their singular
_SUFFIXES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
             ("ies", "y"), ("s", ""))


def base_forms(word: str, plurals: dict[str, str]) -> list[str]:
    """``word`` and its possible singulars, the word itself first (``faces`` -> faces, face)."""
    forms = [word]
    if word in plurals:
        forms.append(plurals[word])
    head, _, last = word.rpartition(" ")
    for suffix, repl in _SUFFIXES:
        if last.endswith(suffix) and len(last) > len(suffix) + 1:
            forms.append((head + " " if head else "") + last[: -len(suffix)] + repl)
    return forms


@lru_cache(maxsize=1)
def kinship() -> Kinship:
    """The shipped table, parsed once per process."""
    raw = resources.files("semsearch_sqlite").joinpath(DATA).read_bytes()
    classes: dict[str, str] = {}
    plurals: dict[str, str] = {}
    for line in gzip.decompress(raw).decode("utf-8").splitlines():
        if line.startswith("="):
            plural, _, singular = line[1:].partition("\t")
            plurals[plural] = singular
            continue
        lemma, _best, pairs = line.split("\t")
        classes[lemma] = pairs
    return Kinship(classes, plurals)


def anchored(word: str, vector: np.ndarray | None, class_vectors: np.ndarray) -> np.ndarray | None:
    """``vector`` (the word's own, or None when GloVe lacks it) moved towards the mean
    vector of the word's kin ImageNet classes; unchanged when it has none.

    ``class_vectors`` are the database's unit class vectors in ``imagenet_classes.txt`` order.
    """
    hit = kinship().kin(word)
    if hit is None or class_vectors is None or len(class_vectors) <= int(hit[0].max()):
        return vector
    rows, weights = hit
    kin = unit(weights @ np.asarray(class_vectors[rows], np.float32))
    if vector is None:
        return kin.astype(np.float32)
    return unit(unit(vector) + ANCHOR_WEIGHT * kin).astype(np.float32)
