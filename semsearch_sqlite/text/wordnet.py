"""WordNet for text queries: kinship between words and the ImageNet classes (anchoring),
and the noun hierarchy (is a word a kind of another: :class:`Hierarchy`).

GloVe alone places many nouns poorly against the backbone's classes: "rooster" is nearer
"patas" and "otterhound" than "cock" and "hen", "ketch" nearer "oxcart" than "schooner",
and "gerenuk" is not in glove.6B at all. WordNet knows all three are kin to ImageNet
classes (a ketch is a sailing vessel like the schooner and the yawl; a gerenuk an
antelope like the impala). ``data/wordnet_classes.tsv.gz`` (built from WordNet 3.0 by
``benchmarks/wordnet_classes.py``) lists, for each of the 22k noun lemmas with a close
class, the classes with weights. A query word then becomes its GloVe vector pulled
towards the mean word vector of its kin classes (:func:`anchored`), which is where the
ConSE part of the image vectors puts photos of such things. ``data/wordnet_kinds.tsv.gz``
(``benchmarks/wordnet_kinds.py``) holds the noun hierarchy, with each synset's words and
the words of its definition, that ``model/relations.py`` relates queries to labels with.
Numpy and the standard library only: the reader install answers such queries without
WordNet.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
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


@lru_cache(maxsize=1 << 16)
def _line_of(text: bytes, key: str) -> str | None:
    """The line of ``text`` that starts with ``key`` and a tab, or None. A search of the
    text takes about a millisecond, and a query looks up the same words again and again
    (forms, senses, kin), so answers are kept (the texts are read once per process)."""
    start = text.find(b"\n" + key.encode("utf-8") + b"\t")
    if start < 0:
        return None
    end = text.find(b"\n", start + 1)
    return text[start + 1 : end if end >= 0 else len(text)].decode("utf-8")


@dataclass(frozen=True)
class Kinship:
    """The table's text: lines ``lemma<TAB>best<TAB>row:weight ...`` and ``=plural<TAB>singular``.

    Looked up by searching the text for one line (under a millisecond) rather than parsed
    whole up front (22k lines into dicts: 0.1 s more on every cold query)."""

    text: bytes

    def _line(self, key: str) -> str | None:
        return _line_of(self.text, key)

    def singular(self, plural: str) -> str | None:
        """WordNet's singular of an irregular plural ("geese" -> "goose"), or None."""
        line = self._line("=" + plural)
        return None if line is None else line.partition("\t")[2]

    def kin(self, word: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The kin classes of a word or phrase (``"sea horse"``), trying its singular too."""
        hit = self.kin_line(word)
        if hit is None:
            return None
        pairs = hit.split("\t")[2].split()
        rows, weights = zip(*(p.split(":") for p in pairs))
        return np.array(rows, np.int32), np.array(weights, np.float32)

    def similarity(self, word: str) -> float:
        """The Wu-Palmer similarity of ``word`` to its nearest ImageNet class (0 when it has none)."""
        hit = self.kin_line(word)
        return 0.0 if hit is None else float(hit.split("\t")[1])

    def kin_line(self, word: str) -> str | None:
        """The table's line of ``word`` or of its singular, or None."""
        word = word.lower().replace("_", " ").replace("-", " ").strip()
        if not word or "\n" in word or "\t" in word:
            return None
        for form in base_forms(word, self.singular):
            line = self._line(form)
            if line is not None:
                return line
        return None

    def label_kin(self, label: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The kin classes of a folder label: the whole label ("sea horse"), written as one
        word ("wild cat" -> wildcat), else its word nearest to a class ("flamingo head" ->
        flamingo, not head)."""
        words = label.lower().replace("_", " ").replace("-", " ").split()
        if not words:
            return None
        for form in (" ".join(words), "".join(words)):
            hit = self.kin(form)
            if hit is not None:
                return hit
        best = max(words, key=self.similarity)
        return self.kin(best) if len(words) > 1 and self.similarity(best) > 0 else None


# WordNet's detachment rules for nouns (morphy): plural endings and their singular
_SUFFIXES = (
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("s", ""),
)


def base_forms(word: str, singular: Callable[[str], str | None] = lambda w: None) -> list[str]:
    """``word`` and its possible singulars, the word itself first (``faces`` -> faces, face);
    ``singular`` gives irregular ones."""
    forms = [word]
    irregular = singular(word)
    if irregular:
        forms.append(irregular)
    head, _, last = word.rpartition(" ")
    for suffix, repl in _SUFFIXES:
        if last.endswith(suffix) and len(last) > len(suffix) + 1:
            forms.append((head + " " if head else "") + last[: -len(suffix)] + repl)
    return forms


@lru_cache(maxsize=1)
def kinship() -> Kinship:
    """The shipped table, read once per process."""
    raw = resources.files("semsearch_sqlite").joinpath(DATA).read_bytes()
    return Kinship(b"\n" + gzip.decompress(raw))


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


# -- the noun hierarchy: is a word a kind of another? ----------------------------------------
KINDS_DATA = "data/wordnet_kinds.tsv.gz"


@dataclass(frozen=True)
class Hierarchy:
    """WordNet's noun hierarchy as shipped in ``data/wordnet_kinds.tsv.gz`` (built by
    ``benchmarks/wordnet_kinds.py``): a word's senses and each synset's hypernyms, looked
    up by searching the text for one line (see :class:`Kinship`)."""

    lemmas: bytes
    graph: bytes

    @staticmethod
    def _find(text: bytes, key: str) -> list[str] | None:
        line = _line_of(text, key)
        return None if line is None else line.split("\t")

    def senses(self, word: str) -> tuple[int, list[str]]:
        """The noun senses of ``word`` (its singular tried too), most frequent first, and
        how many of them are common (occur in WordNet's tagged corpus); ``(0, [])`` if none.
        An ImageNet class is looked up by its WordNet id (``n01440764``)."""
        word = word.lower().replace("_", " ").replace("-", " ").strip()
        if not word or "\n" in word or "\t" in word:
            return 0, []
        for form in base_forms(word, kinship().singular):
            line = self._find(self.lemmas, form)
            if line is not None:
                return int(line[1]), line[2].split(",")
        return 0, []

    def depth(self, synset: str) -> int:
        """The synset's smallest depth below ``entity`` (0)."""
        return _node(self, synset)[0]

    def ancestors(self, synset: str) -> dict[str, int]:
        """The synset and every hypernym above it, each with its depth below ``entity``."""
        return dict(_ancestors(self, synset))

    def parents(self, synset: str) -> tuple[str, ...]:
        """The synset's hypernyms (instance hypernyms too)."""
        return _node(self, synset)[1]

    def gloss(self, synset: str) -> list[str]:
        """The content words of the synset's definition (``italian open pie ...``), or none."""
        line = _graph_line(self, synset)
        return line[4].split() if line is not None and len(line) > 4 else []

    def words(self, synset: str) -> list[str]:
        """The synset's first lemmas (``sailing vessel``), or none (a table built before them)."""
        line = _graph_line(self, synset)
        return line[3].split(",") if line is not None and len(line) > 3 and line[3] else []


@lru_cache(maxsize=1)
def _line_ends(h: Hierarchy) -> np.ndarray:
    """Where each line of the graph ends: synset ``k`` (base 36) is line ``k``, so a lookup
    is an index, not a search of the text (a label's kinds, words and definitions are
    thousands of lookups)."""
    return np.flatnonzero(np.frombuffer(h.graph, np.uint8) == 10)


@lru_cache(maxsize=1 << 16)
def _graph_line(h: Hierarchy, synset: str) -> list[str] | None:
    try:
        k = int(synset, 36)
    except ValueError:
        return None
    ends = _line_ends(h)
    if 0 <= k < len(ends) - 1:
        line = h.graph[ends[k] + 1 : ends[k + 1]].decode("utf-8").split("\t")
        if line[0] == synset:
            return line
    return Hierarchy._find(h.graph, synset)  # a table not in id order


@lru_cache(maxsize=1 << 16)
def _node(h: Hierarchy, synset: str) -> tuple[int, tuple[str, ...]]:
    line = _graph_line(h, synset)
    if line is None:
        return 0, ()
    return int(line[1]), tuple(p for p in line[2].split(",") if p)


@lru_cache(maxsize=1 << 14)
def _ancestors(h: Hierarchy, synset: str) -> tuple[tuple[str, int], ...]:
    found = {synset: _node(h, synset)[0]}
    frontier = [synset]
    while frontier:
        nxt = []
        for s in frontier:
            for p in _node(h, s)[1]:
                if p not in found:
                    found[p] = _node(h, p)[0]
                    nxt.append(p)
        frontier = nxt
    return tuple(found.items())


@lru_cache(maxsize=1)
def hierarchy() -> Hierarchy:
    """The shipped noun hierarchy, read once per process."""
    raw = gzip.decompress(resources.files("semsearch_sqlite").joinpath(KINDS_DATA).read_bytes())
    lemmas, _, graph = raw.partition(b"\n%%\n")
    return Hierarchy(b"\n" + lemmas, b"\n" + graph)
