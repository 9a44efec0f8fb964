"""Tags in the photo's sense: its most probable classes, then the WordNet kinds they
belong to, each with a confidence (0..1).

The nearest GloVe words to a photo's vector follow the label word's other senses (a
butterfly photo was tagged breaststroke, a cup photo championship, a chair photo
sitting). A photo's classes say what it shows, and WordNet says in which sense: a
rooster label is kin to the ImageNet classes cock and hen (``text/wordnet.py``), whose
hypernym chains (``data/imagenet_hypernyms.txt``) read fowl, poultry, bird, vertebrate,
animal. So the tags are the classes' names, then the single-word lemmas of their
ancestors that the vocabulary knows, weighted by the class's confidence and by how far
up the chain they are; an ancestor several classes share adds up their evidence
(noisy-or). No nearest-word tags are added to a photo with classes: they are where the
wrong senses come from.

A tag's confidence: a class's is the cosine of its word vector to the photo's vector
(the photo's vector is the probability-weighted mean of its classes' vectors, so the
most probable class is nearest); an ancestor's is its noisy-or over the classes below it
of ``confidence x kin weight x HYPERNYM_DECAY ** depth``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from semsearch_sqlite.model.conse import imagenet_hypernyms
from semsearch_sqlite.text.tags import class_tag_word, is_tag_word
from semsearch_sqlite.text.wordnet import kinship
from semsearch_sqlite.vectors.maths import unit, unit_rows

# how much an ancestor's evidence shrinks per step up the chain: the near kinds of a
# photo's second class (wallaby -> kangaroo) outrank the far kinds of its first (cougar ->
# feline, mammal). On benchmarks/semantic.py (tags in sense / zero-shot tag@5) 0.6 gives
# 0.728 / 0.481; with the classes all kept in front: 0.5 0.721 / 0.480, 0.6 0.726 / 0.481,
# 0.7 0.739 / 0.479, 0.85 0.760 / 0.475 (main: 0.247 / 0.481)
HYPERNYM_DECAY = 0.6
# a label's kind: its kin classes of at least this weight (the same close family)
KIN_CLOSE = 0.5
# a kind word names a label's kind when it is an ancestor of at least this share of it
KIND_SHARE = 0.5
# ancestors that name no kind a person would tag a photo with
GENERIC = frozenset(
    """organism being thing whole unit entity object artifact artefact instrumentality
    implementation commodity matter substance material creature causal agent abstraction
    attribute relation measure group collection part piece portion form shape instrumentation device
    covering protection communication housing nourishment chordate craniate""".split()
)

Tag = tuple[str, float, float]  # (word, cosine distance to the photo's vector, confidence)


def ancestor_words(space: Any) -> list[list[tuple[int, str]]]:
    """Per ImageNet class, ``(depth, word)`` of its WordNet ancestors, nearest first
    (depth 1: the parent): each ancestor's first single-word lemma that ``space`` has as a
    tag word, generic ones (:data:`GENERIC`) left out."""
    out = []
    for chain in imagenet_hypernyms():
        words = []
        for depth, lemmas in enumerate(chain, 1):
            word = next((w for w in lemmas if " " not in w and is_tag_word(w) and w in space.ids), None)
            if word is not None and word not in GENERIC:
                words.append((depth, word))
        out.append(words)
    return out


def label_kind(label: str) -> list[tuple[int, float]]:
    """The ImageNet classes (row, kin weight) a label's photos are a kind of: its close kin
    (``Kinship.label_kin``, weight >= KIN_CLOSE); none for a label WordNet lacks."""
    hit = kinship().label_kin(label)
    if hit is None:
        return []
    return [(int(r), float(w)) for r, w in zip(*hit) if w >= KIN_CLOSE]


def sense_tags(
    names: Sequence[str],
    n_labels: int,
    label_vectors: np.ndarray | None,
    space: Any,
    vectors: np.ndarray,
    classes: np.ndarray,
    k: int,
) -> list[list[Tag]]:
    """Each photo's ``k`` tags (fewer when its classes support fewer), most confident first
    after its most probable class, which leads.

    Args:
        names: the model's class names (its labels, then ImageNet's 1000).
        n_labels: how many of ``names`` are labels (0 for models without them).
        label_vectors: [n_labels, W] the labels' word vectors.
        space: the word space tags are drawn from.
        vectors: [n, W] the photos' semantic vectors.
        classes: [n, c] each photo's most probable classes (indices into ``names``, -1 pads).
    """
    table = _class_table(names, n_labels, label_vectors, space, np.unique(classes[classes >= 0]).tolist())
    ancestors = ancestor_words(space)
    v = unit_rows(np.asarray(vectors, np.float32))
    out = []
    for row, cs in zip(v, np.asarray(classes).tolist()):
        evidence = [(table[c], float(np.clip(row @ table[c][1], 0.0, 1.0))) for c in cs if c >= 0 and table.get(c)]
        tags: dict[str, float] = {}
        for (word, _vec, _kind), conf in evidence:
            tags.setdefault(word, conf)
        covered = {w for word in tags for w in word.split()}
        doubt: dict[str, float] = {}  # per ancestor word: the chance that no class supports it
        for (_word, _vec, kind), conf in evidence:
            for word, s in kind_support(kind, ancestors).items():
                doubt[word] = doubt.get(word, 1.0) * (1.0 - conf * s)
        for word, d in doubt.items():
            if word not in covered:
                tags.setdefault(word, 1.0 - d)
        ranked = list(tags.items())
        # the most probable class leads (tag@5), the rest by confidence (its other classes too)
        ranked = ranked[:1] + sorted(ranked[1:], key=lambda t: -t[1])
        out.append([(w, _distance(space, row, w, table, cs), round(c, 4)) for w, c in ranked[:k]])
    return out


def kind_support(kind: list[tuple[int, float]], ancestors: list[list[tuple[int, str]]]) -> dict[str, float]:
    """Per ancestor word of a class's kind (ImageNet rows with weights): the weighted share
    of the rows under it, each discounted by HYPERNYM_DECAY ** depth. Words under less than
    KIND_SHARE of the weight are left out: a cup's kin classes are the containers cassette,
    envelope, flowerpot and thimble, and a thimble's parent "cap" is no kind of cup."""
    total = sum(w for _, w in kind)
    support: dict[str, float] = {}
    share: dict[str, float] = {}
    for r, weight in kind:
        nearest: dict[str, int] = {}
        for depth, word in ancestors[r]:
            nearest.setdefault(word, depth)  # a word once per row, at its nearest
        for word, depth in nearest.items():
            support[word] = support.get(word, 0.0) + weight * HYPERNYM_DECAY**depth / total
            share[word] = share.get(word, 0.0) + weight / total
    return {w: min(1.0, s) for w, s in support.items() if share[w] >= KIND_SHARE}


def _class_table(
    names: Sequence[str], n_labels: int, label_vectors: np.ndarray | None, space: Any, used: list[int]
) -> dict[int, tuple[str, np.ndarray, list[tuple[int, float]]] | None]:
    """class -> (tag word, unit vector, its kind as ImageNet rows with weights), or None
    for a class without a tag word: a label by its stored name and label vector, an
    ImageNet class by :func:`class_tag_word` and that word's vector."""
    table: dict[int, tuple[str, np.ndarray, list[tuple[int, float]]] | None] = {}
    for c in used:
        if c < n_labels:
            assert label_vectors is not None
            table[c] = (names[c].lower(), unit(label_vectors[c]), label_kind(names[c]))
        else:
            word = class_tag_word(space, names[c])
            vector = None if word is None else space.vector(word)
            table[c] = None if vector is None else (word, unit(vector), [(c - n_labels, 1.0)])
    return table


def _distance(space: Any, row: np.ndarray, word: str, table: dict[int, Any], classes: list[int]) -> float:
    """The cosine distance of a tag to the photo's vector (a class tag through its class's vector)."""
    for c in classes:
        entry = table.get(c) if c >= 0 else None
        if entry is not None and entry[0] == word:
            return round(float(1.0 - row @ entry[1]), 6)
    vector = space.vector(word)
    return 1.0 if vector is None else round(float(1.0 - row @ unit(vector)), 6)
