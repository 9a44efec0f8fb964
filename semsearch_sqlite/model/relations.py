"""How a query word relates to a collection's labels: the same thing, a kind the label
belongs to, an association, or nothing.

A labelled photo's vector sits on its label's word, so ranking photos by vector alone
turns every query into "the nearest label word", where hub words win. Search therefore
relates the query to the labels first, with WordNet's noun hierarchy
(``text/wordnet.py``) and the word vectors:

* **kind**: one of the query's common senses is the label's sense or above it ("bird"
  -> rooster, "aircraft" -> helicopter). The label's sense is the one its photos show:
  among the senses of the label (or of its words, ``car_side``) the one nearest, by
  Wu-Palmer similarity, to the ImageNet classes its photos are predicted as ("bass" the
  fish, not the voice); a label none of whose senses agrees keeps no kinds;
* **sibling**: the query and the label are different kinds of one close kind
  ("crocodile" and elephant are both vertebrates): not a match, whatever GloVe says;
* **association**: otherwise, GloVe similarity of the query word to the label's words one
  by one (its name, the kinds just above it, the definitions of both, its photos' ImageNet
  classes: "lake" meets crayfish's "freshwater", "egg" rooster's "eggs"), the best match
  first, and to their means, corrected for hubness (a label near everything must not win
  every query), e.g. "sea" -> ferry.

:func:`label_kinds` runs at train time (its result is stored in the model's config);
:func:`relate` at query time, numpy and the shipped data only.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from semsearch_sqlite.text.query import tokenize
from semsearch_sqlite.text.related import RelatedSpace
from semsearch_sqlite.text.wordnet import hierarchy
from semsearch_sqlite.vectors.maths import hubness, unit

# a label sense is the photos' when its mean Wu-Palmer similarity to their classes reaches this
SENSE_AGREEMENT = 0.45
# the photos' classes vouch for a sense when their top EVIDENCE_CLASSES hold this much probability
# (faces, Joshua trees: ImageNet has no such class and the evidence is noise)
EVIDENCE_MASS = 0.3
# the label's photos' most probable ImageNet classes that vouch for its sense
EVIDENCE_CLASSES = 5
# kinds that share an ancestor this deep below entity are siblings ("object", "whole" are at
# depths 2-3, "organism", "artifact" 4-5; calibrated with ASSOCIATION_STRONG)
SIBLING_DEPTH = 5
# the query's senses that count: its common ones (tagged in WordNet's corpus), at most this many
QUERY_SENSES = 3
# a sibling kind ranks by its association like any other label, but is never strong
SIBLING_TOP = 0.59
# a label's context includes the words of its kinds up to this many levels above it, each
# level ANCESTOR_DECAY less (ketch -> sailing vessel, vessel; dolphin -> toothed whale,
# cetacean), none more general than ANCESTOR_MIN_DEPTH below entity ("artifact")
ANCESTOR_LEVELS = 2
ANCESTOR_DECAY = 0.7
ANCESTOR_MIN_DEPTH = 4
# the most frequent words whose mean is the word space's common direction (hubness control)
CENTRE_WORDS = 20_000
# an association is this share the query's best match among the label's words (each
# hub-corrected), the rest its similarity to their means: one telling word ("freshwater")
# is lost in a mean of twenty
WORD_MATCH_SHARE = 0.75
# a label's words count only within these frequency ranks: the commonest are function
# words, the rarest have noisy vectors ("hawksbill" is rank 103,915)
WORD_RANKS = (300, 50_000)
# a photo class's name weighs this much among the label's words (in full from a third of its
# photos' probability mass); the class context weighs CONTEXT_WEIGHT among the means
CLASS_WORD_WEIGHT = 0.5
CLASS_WORD_MASS = 1 / 3
CONTEXT_WEIGHT = 2.0
# the definitions of the query's common senses weigh this much beside the query word, each
# sense QUERY_SENSE_DECAY less than the one before
QUERY_GLOSS_WEIGHT = 0.3
QUERY_SENSE_DECAY = 0.7

# relation scores (0..1): what search ranks labels by and reads the cue from
SAME, KIND = 1.0, 0.95
# an association scores ASSOCIATION_TOP at most (below every photo of a kind: a kind is
# WordNet's word, an association a guess); strong from STRONG_RELATION on
ASSOCIATION_TOP = 0.7
STRONG_RELATION = 0.6
# the association value (LabelSet.association) that scores STRONG_RELATION, and the one that
# scores 0, calibrated on half of the labelled protocol's queries
# (benchmarks/labelled_protocol.py: the best P@10 keeping coverage@20 >= 0.85, then the most
# right strong hits keeping strong precision and absent honesty >= 0.95) and reported on the
# other. The zero sets the order (lower: labels take turns, coverage up, P@10 down)
ASSOCIATION_STRONG = 0.1
ASSOCIATION_ZERO = -0.45
# the CSLS similarity of query and label in the relatedness space (text/related.py) is
# added at this weight: it orders labels by association better than GloVe alone, which
# still carries most of the score (1.0 ranks worse than 0.2; see docs/research.md)
RELATED_WEIGHT = 0.2


@dataclass(frozen=True)
class Relation:
    """How a query relates to one label: ``kind`` is same, kind, association, sibling or none."""

    kind: str
    score: float

    @property
    def strong(self) -> bool:
        return self.score >= STRONG_RELATION


def _wup(a: dict[str, int], b: dict[str, int], depth_a: int, depth_b: int) -> float:
    common = [d for s, d in a.items() if s in b]
    return 2.0 * max(common) / max(depth_a + depth_b, 1) if common else 0.0


def label_senses(label: str, evidence: Sequence[tuple[str, float]]) -> list[str]:
    """The WordNet senses of ``label`` its photos show.

    ``evidence``: ``(ImageNet WordNet id, probability mass)`` of the label's photos' most
    probable classes. Without evidence, the label's first sense (if it is a WordNet noun)."""
    h = hierarchy()
    _, whole = h.senses(label)
    candidates = list(whole)
    if not whole:  # car_side: the senses of its words ("car", "side"), or of "wildcat" for wild_cat
        for word in ["".join(tokenize(label)), *tokenize(label)]:
            candidates += h.senses(word)[1]
    if not evidence:
        return whole[:1]
    classes = []
    for wnid, mass in evidence:
        senses = h.senses(wnid)[1]
        if senses:
            classes.append((h.ancestors(senses[0]), h.depth(senses[0]), mass))
    total = sum(m for *_, m in classes)
    if not classes or total < EVIDENCE_MASS:
        return whole[:1]
    scored = []
    for s in candidates:
        up, depth = h.ancestors(s), h.depth(s)
        scored.append((sum(m * _wup(up, a, depth, d) for a, d, m in classes) / total, s))
    best = max(scored)[0] if scored else 0.0
    chosen = [s for score, s in scored if score >= SENSE_AGREEMENT and score >= best - 0.02]
    # a label with one sense means it, whatever ImageNet's nearest classes are (dollar bill)
    return chosen or (whole if len(whole) == 1 else [])


def label_kinds(labels: Sequence[str], evidence: Sequence[Sequence[tuple[str, float]]]) -> dict[str, dict[str, int]]:
    """Each label's senses (:func:`label_senses`) and everything above them, each with its
    depth below ``entity``: what :func:`relate` reads, stored in the model's config."""
    h = hierarchy()
    out: dict[str, dict[str, int]] = {}
    for label, ev in zip(labels, evidence):
        kinds: dict[str, int] = {}
        for s in label_senses(label, ev):
            kinds.update(h.ancestors(s))
        out[label] = kinds
    return out


def query_senses(term: str) -> list[dict[str, int]]:
    """The ancestors (with depths) of each common sense of a query term, the sense first."""
    h = hierarchy()
    tagged, senses = h.senses(term)
    return [h.ancestors(s) for s in senses[: max(1, min(tagged, QUERY_SENSES))]]


def association_score(value: float) -> float:
    """An association value as a relation score: 0 at ASSOCIATION_ZERO, STRONG_RELATION at
    ASSOCIATION_STRONG, at most ASSOCIATION_TOP."""
    span = ASSOCIATION_STRONG - ASSOCIATION_ZERO
    return float(np.clip((value - ASSOCIATION_ZERO) / span * STRONG_RELATION, 0.0, ASSOCIATION_TOP))


def relate(term: str, senses: list[dict[str, int]], label: str, kinds: dict[str, int], association: float) -> Relation:
    """How the query ``term`` (with :func:`query_senses`) relates to ``label`` (with its
    :func:`label_kinds` entry); ``association`` is their LabelSet.association value."""
    if " ".join(tokenize(term)) == label or _singular(term) == _singular(label):
        return Relation("same", SAME)
    for rank, up in enumerate(senses):
        own = next(iter(up))
        if own in kinds:
            return Relation("kind", KIND - 0.05 * rank)
    for up in senses[:1]:
        common = [d for s, d in up.items() if s in kinds]
        if common and max(common) >= SIBLING_DEPTH:
            return Relation("sibling", min(association_score(association), SIBLING_TOP))
    score = association_score(association)
    return Relation("association" if score > 0 else "none", score)


def _singular(text: str) -> str:
    words = tokenize(text)
    if words and len(words[-1]) > 3 and words[-1].endswith("s") and not words[-1].endswith("ss"):
        words[-1] = words[-1][:-1]
    return " ".join(words)


# -- ranking photos by their labels' relation ---------------------------------------------------
# within one label, the n-th photo (by its own vector's similarity) keeps 1 - WITHIN_DECAY * n / (n + WITHIN_HALF)
# of its label's relation, so labels of equal relation take turns and close ones mix
WITHIN_DECAY = 0.2
WITHIN_HALF = 5


@dataclass
class LabelSet:
    """A collection's labels as search relates queries to them."""

    labels: list[str]
    kinds: list[dict[str, int]]
    vectors: np.ndarray  # [L, W] unit word vectors (zero rows for labels without one)
    # [L, W] the mean word vector of each label's photos' ImageNet classes (what is around a
    # ferry: liners, docks), or None
    context: np.ndarray | None = None
    # [L, W] the words of the kinds just above each label (a ketch is a "sailing vessel"), and
    # of the definitions of its senses and those kinds (pizza: "italian open pie"), or its own
    # vector where it has none
    ancestry: np.ndarray | None = None
    glosses: np.ndarray | None = None
    # [W] the mean of the common words' unit vectors: the direction every word shares
    centre: np.ndarray | None = None
    # the labels' words one by one (:func:`label_words`), or None
    words: LabelWords | None = None
    # each vocabulary word's frequency rank (0: the commonest), or None
    ranks: Mapping[str, int] | None = None
    # the labels in the relatedness space, or None (a database without it)
    related: RelatedLabels | None = None

    def means(self, vector: np.ndarray, hub: float) -> np.ndarray:
        """2 (q - centre) . v - r(q) over the label's word, context (CONTEXT_WEIGHT), ancestry
        and gloss vectors (a CSLS whose label hubness is the label's pull towards the common
        direction)."""
        parts = [(1.0, self.vectors), (CONTEXT_WEIGHT, self.context), (1.0, self.ancestry), (1.0, self.glosses)]
        centre = self.centre if self.centre is not None else np.zeros_like(vector)
        q = np.asarray(vector, np.float32) - centre
        total = sum(w for w, p in parts if p is not None)
        return (2.0 * sum(w * (p @ q) for w, p in parts if p is not None) / total - hub).astype(np.float32)

    def association(
        self,
        vector: np.ndarray,
        hub: float,
        gloss: tuple[np.ndarray, float] | None = None,
        related: tuple[np.ndarray, float] | None = None,
    ) -> np.ndarray:
        """A query word's association to each label: :meth:`means` (with the query's
        definitions, ``(unit vector, r)``, at QUERY_GLOSS_WEIGHT), and, WORD_MATCH_SHARE of it,
        the best hub-corrected match among the label's words (:meth:`LabelWords.best`); plus
        RELATED_WEIGHT of :meth:`RelatedLabels.csls` with the word's ``related`` ``(vector, r)``."""
        value = self.means(vector, hub)
        if gloss is not None:
            value = (value + QUERY_GLOSS_WEIGHT * self.means(*gloss)) / (1 + QUERY_GLOSS_WEIGHT)
        if self.words is not None:
            best = self.words.best(np.asarray(vector, np.float32), hub, len(self.labels))
            value = (1 - WORD_MATCH_SHARE) * value + WORD_MATCH_SHARE * best
        if self.related is not None:
            value = value + RELATED_WEIGHT * self.related.csls(related)
        return np.asarray(value, np.float32)


@dataclass
class RelatedLabels:
    """The labels in the relatedness space (:mod:`semsearch_sqlite.text.related`)."""

    space: RelatedSpace
    vectors: np.ndarray  # [L, d] unit (zero rows: labels without one)
    hub: np.ndarray  # [L] r of each label (the space's mean where it has no vector)
    known: np.ndarray  # [L] bool

    def csls(self, query: tuple[np.ndarray, float] | None) -> np.ndarray:
        """2 q . l - r(q) - r(l) per label; a query word or label without a vector counts
        as any word would (the space's mean cosine and hubness)."""
        if query is None:
            cos, hub = np.full(len(self.hub), self.space.mean_cos, np.float32), self.space.mean_hub
        else:
            cos, hub = np.where(self.known, self.vectors @ query[0], self.space.mean_cos), query[1]
        return (2.0 * cos - hub - self.hub).astype(np.float32)

    def lookup(self, words: Sequence[str]) -> list[tuple[np.ndarray, float] | None]:
        """``(unit vector, r)`` of each query word, or None where the space has none."""
        found = [self.space.vector(w) for w in words]
        present = [v for v in found if v is not None]
        if not present:
            return [None] * len(found)
        hubs = iter(_query_hubness(np.vstack(present), self.space.common).tolist())
        return [None if v is None else (v, next(hubs)) for v in found]


@dataclass
class LabelWords:
    """The labels' words, one row each: which label, how much it counts, and its hubness."""

    words: tuple[str, ...]
    vectors: np.ndarray  # [N, W] unit
    label: np.ndarray  # [N] label index, ascending
    weight: np.ndarray  # [N]
    hub: np.ndarray  # [N] r of each word

    def best(self, vector: np.ndarray, hub: float, n_labels: int) -> np.ndarray:
        """Per label, max over its words of weight * max(0, 2 q . w - r(q) - r(w)): a word
        that matches no better than chance adds nothing (0 for a label without words)."""
        value = np.maximum(2.0 * (self.vectors @ vector) - hub - self.hub, 0.0) * self.weight
        out = np.zeros(n_labels, np.float32)
        if len(value):
            starts = np.r_[0, np.flatnonzero(np.diff(self.label)) + 1]
            out[self.label[starts]] = np.maximum.reduceat(value, starts)
        return out


def query_gloss(term: str, lookup: Any, ranks: Mapping[str, int] | None) -> np.ndarray | None:
    """The unit mean vector of the definitions of the query term's common senses (each
    QUERY_SENSE_DECAY less than the one before), or None."""
    if ranks is None:
        return None
    h = hierarchy()
    tagged, senses = h.senses(term)
    found = [
        _mean_vector([w for w in h.gloss(s) if _in_band(w, ranks)], lookup)
        for s in senses[: max(1, min(tagged, QUERY_SENSES))]
    ]
    parts = [QUERY_SENSE_DECAY**k * v for k, v in enumerate(found) if v is not None]
    total = np.sum(parts, axis=0) if parts else np.zeros(0, np.float32)
    return unit(total) if len(total) and float(np.linalg.norm(total)) > 0 else None


def query_relations(
    terms: Sequence[tuple[str, np.ndarray | None]],
    query_hubs: Sequence[float],
    labels: LabelSet,
    glosses: Sequence[tuple[np.ndarray, float] | None] | None = None,
    related: Sequence[tuple[np.ndarray, float] | None] | None = None,
) -> list[Relation]:
    """Each label's relation to a query of one or more terms (``(word, plain word vector)``,
    with their definitions' ``(vector, r)`` from :func:`query_gloss` and their relatedness
    ``(vector, r)`` from :meth:`RelatedLabels.lookup`): the whole query naming
    a label is that label; otherwise the mean of the terms' relations (a multi-word query
    wants every word), its kind the weakest term's."""
    whole = " ".join(w for t, _ in terms for w in tokenize(t))
    out = []
    per_term = []
    for k, ((term, vector), hub) in enumerate(zip(terms, query_hubs)):
        senses = query_senses(term)
        gloss = glosses[k] if glosses else None
        assoc = (
            labels.association(vector, hub, gloss, related[k] if related else None)
            if vector is not None
            else np.full(len(labels.labels), -9.0, np.float32)
        )
        per_term.append(
            [relate(term, senses, lab, kinds, float(a)) for lab, kinds, a in zip(labels.labels, labels.kinds, assoc)]
        )
    for j, label in enumerate(labels.labels):
        if _singular(whole) == _singular(label):
            out.append(Relation("same", SAME))
            continue
        rel = [r[j] for r in per_term]
        if not rel:
            out.append(Relation("none", 0.0))
            continue
        weakest = min(rel, key=lambda r: r.score)
        score = float(np.mean([r.score for r in rel]))
        # strong only when every word is: "bird insect" is no strong match for roosters
        out.append(Relation(weakest.kind, score if weakest.strong else min(score, SIBLING_TOP)))
    return out


def rank_photos(
    relations: Sequence[Relation], photo_label: np.ndarray, sims: np.ndarray, unlabelled_strong_cos: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every photo's order, score (0..1) and strong flag for one query.

    ``photo_label``: each photo's index into ``relations`` (-1: unlabelled); ``sims``: the
    cosine of each photo's own vector to the query, which orders photos within a label
    and places unlabelled photos (strong from ``unlabelled_strong_cos`` on, the
    calibrated cue). Strong hits score 0.5-1, weak ones 0-0.5; ranked by score."""
    photo_label = np.asarray(photo_label)
    sims = np.asarray(sims, np.float32)
    rel = np.array([r.score for r in relations] + [0.0], np.float32)
    strong_rel = np.array([r.strong for r in relations] + [False])
    value = np.empty(len(sims), np.float32)
    strong = np.zeros(len(sims), bool)
    labelled = photo_label >= 0
    # the photo's place within its label, by its own similarity
    order = np.lexsort((-sims, photo_label))
    place = np.empty(len(sims), np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(photo_label[order])) + 1]
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        place[order[a:b]] = np.arange(b - a)
    idx = np.where(labelled, photo_label, len(relations))
    value[labelled] = rel[idx[labelled]] * (1 - WITHIN_DECAY * place[labelled] / (place[labelled] + WITHIN_HALF))
    strong[labelled] = strong_rel[idx[labelled]]
    free = ~labelled
    ratio = np.clip(sims[free] / max(unlabelled_strong_cos, 1e-3), 0.0, None)
    strong[free] = ratio >= 1.0
    value[free] = np.where(
        strong[free],
        np.clip(0.6 + 0.4 * (ratio - 1.0) / max(1 / unlabelled_strong_cos - 1, 1e-3), 0.6, 1.0),
        0.6 * ratio,
    )
    score = np.where(strong, 0.5 + 0.5 * value, 0.5 * value * (1 - 1e-6))
    ranking = np.lexsort((-sims, -score))
    return ranking, score, strong


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The WordNet ids of the 1000 ImageNet classes, in class order."""
    text = resources.files("semsearch_sqlite").joinpath("data/imagenet_hypernyms.txt").read_text(encoding="utf-8")
    return tuple(line.partition("\t")[0] for line in text.splitlines() if line.strip())


def label_evidence(probs: np.ndarray, label_index: np.ndarray, n_labels: int) -> list[list[tuple[str, float]]]:
    """Per label, its photos' EVIDENCE_CLASSES most probable ImageNet classes (mean
    probability over the photos) as ``(WordNet id, mass)``."""
    wnids = imagenet_wnids()
    probs = np.asarray(probs, np.float32)
    out = []
    for k in range(n_labels):
        rows = probs[np.asarray(label_index) == k]
        if not len(rows) or rows.shape[1] != len(wnids):
            out.append([])
            continue
        mean = rows.mean(axis=0)
        top = np.argsort(-mean)[:EVIDENCE_CLASSES]
        out.append([(wnids[c], round(float(mean[c]), 4)) for c in top])
    return out


def label_set(
    labels: Sequence[str],
    kinds: dict[str, dict[str, int]] | None,
    lookup: Any,
    vocabulary: np.ndarray,
    evidence: dict[str, list[tuple[str, float]]] | None = None,
    class_vectors: np.ndarray | None = None,
    ranks: Mapping[str, int] | None = None,
    related: RelatedSpace | None = None,
) -> LabelSet:
    """The :class:`LabelSet` of ``labels``: kinds from the model's config (computed from the
    first senses when it has none: a model trained before them), vectors by ``lookup``
    (word -> vector or None), the centre from the unit ``vocabulary`` rows (most frequent
    first); with the config's ``evidence`` and the ImageNet ``class_vectors``, the labels'
    context vectors; with the words' frequency ``ranks``, the labels' words one by one; with
    the ``related`` space, the labels in it."""
    kinds = kinds or {}
    table = [kinds[lab] if lab in kinds else label_kinds([lab], [[]])[lab] for lab in labels]
    vectors = np.zeros((len(labels), vocabulary.shape[1]), np.float32)
    for i, lab in enumerate(labels):
        found = _mean_vector(tokenize(lab), lookup)
        if found is not None:
            vectors[i] = found
    centre = np.asarray(vocabulary[:CENTRE_WORDS], np.float32).mean(axis=0) if len(vocabulary) else None
    ancestry, glosses = _ancestry(table, lookup, vectors)
    words = None if ranks is None else label_words(labels, table, lookup, ranks, vocabulary, evidence)
    context = _context(labels, evidence, class_vectors, vectors)
    near = None if related is None else related_labels(labels, related, words)
    return LabelSet(list(labels), table, vectors, context, ancestry, glosses, centre, words, ranks, near)


def related_labels(labels: Sequence[str], space: RelatedSpace, words: LabelWords | None = None) -> RelatedLabels:
    """The :class:`RelatedLabels` of ``labels`` in ``space``: each label's name (a compound,
    the mean of its words) and, as much again, the weighted mean of its ``words`` one by
    one (its kinds, definitions and classes: a name alone is one token's company, "sea" is
    near "elephant" by the elephant seal), and the result's hubness."""
    found = [space.vector(lab) for lab in labels]
    if words is not None and len(words.words):
        rows = [space.vector(w) for w in words.words]
        mine = np.array([v is not None for v in rows], bool)
        described = np.zeros((len(labels), space.common.shape[1]), np.float32)
        if mine.any():
            weighted = np.vstack([v for v in rows if v is not None]) * words.weight[mine, None]
            np.add.at(described, words.label[mine], weighted)
        found = [
            v if v is None or not described[j].any() else unit(v + unit(described[j])) for j, v in enumerate(found)
        ]
    known = np.array([v is not None for v in found], bool)
    vectors = np.zeros((len(labels), space.common.shape[1]), np.float32)
    hub = np.full(len(labels), space.mean_hub, np.float32)
    if known.any():
        vectors[known] = np.vstack([v for v in found if v is not None])
        hub[known] = hubness(vectors[known], space.common)
    return RelatedLabels(space, vectors, hub, known)


def _name_words(synset: str) -> list[str]:
    """The words of a synset's lemmas ("sailing vessel" -> sailing, vessel)."""
    return [w for name in hierarchy().words(synset) for w in name.split()]


def _in_band(word: str, ranks: Mapping[str, int]) -> bool:
    rank = ranks.get(word)
    return rank is not None and WORD_RANKS[0] <= rank < WORD_RANKS[1]


def _word_weights(
    label: str, kinds: dict[str, int], ranks: Mapping[str, int], evidence: Sequence[tuple[str, float]]
) -> dict[str, float]:
    """A label's words and their weights: its name's words (1), the words naming its senses
    and the kinds above them and of their definitions (ANCESTOR_DECAY less per level), the
    names of its photos' classes (CLASS_WORD_WEIGHT); the highest weight of a word counts."""
    h = hierarchy()
    out: dict[str, float] = {}

    def add(words: Sequence[str], weight: float) -> None:
        for w in words:
            if _in_band(w, ranks) and weight > out.get(w, 0.0):
                out[w] = weight

    add(tokenize(label), 1.0)
    for synset, step in _levels(kinds).items():
        add(_name_words(synset), ANCESTOR_DECAY**step)
        add(h.gloss(synset), ANCESTOR_DECAY**step)
    for wnid, mass in evidence:
        senses = h.senses(wnid)[1]
        if senses:
            weight = CLASS_WORD_WEIGHT * min(1.0, mass / CLASS_WORD_MASS)
            add(_name_words(senses[0]), weight)
    return out


def label_words(
    labels: Sequence[str],
    kinds: Sequence[dict[str, int]],
    lookup: Any,
    ranks: Mapping[str, int],
    vocabulary: np.ndarray,
    evidence: dict[str, list[tuple[str, float]]] | None = None,
) -> LabelWords:
    """Every label's words (:func:`_word_weights`) with their unit vectors and hubness."""
    rows: list[tuple[int, str, float]] = []
    found: dict[str, np.ndarray | None] = {}
    for i, (label, up) in enumerate(zip(labels, kinds)):
        for w, weight in _word_weights(label, up, ranks, (evidence or {}).get(label, [])).items():
            if w not in found:
                found[w] = lookup(w)
            if found[w] is not None:
                rows.append((i, w, weight))
    unique = sorted({w for _, w, _ in rows})
    dim = vocabulary.shape[1]
    matrix = np.array([unit(np.asarray(found[w], np.float32)) for w in unique], np.float32).reshape(-1, dim)
    hubs = np.concatenate([hubness(matrix[a : a + 512], vocabulary) for a in range(0, len(unique), 512)] or [[]])
    at = {w: j for j, w in enumerate(unique)}
    index = np.array([at[w] for _, w, _ in rows], np.int64)
    return LabelWords(
        tuple(w for _, w, _ in rows),
        matrix[index] if len(index) else np.zeros((0, dim), np.float32),
        np.array([i for i, _, _ in rows], np.int64),
        np.array([weight for *_, weight in rows], np.float32),
        np.asarray(hubs, np.float32)[index] if len(index) else np.zeros(0, np.float32),
    )


def _mean_vector(words: Sequence[str], lookup: Any) -> np.ndarray | None:
    found = [v for v in (lookup(w) for w in words) if v is not None]
    return unit(np.mean([unit(np.asarray(v, np.float32)) for v in found], axis=0)) if found else None


def _levels(up: dict[str, int]) -> dict[str, int]:
    """A label's senses (0) and their kinds up to ANCESTOR_LEVELS levels above them (none
    above ANCESTOR_MIN_DEPTH), each with its level."""
    h = hierarchy()
    above = {p for s in up for p in h.parents(s)}
    level = {s: 0 for s in up if s not in above}  # the label's senses: nothing in it is below them
    frontier = list(level)
    for step in range(1, ANCESTOR_LEVELS + 1):
        frontier = [p for s in frontier for p in h.parents(s) if p not in level and up.get(p, 0) >= ANCESTOR_MIN_DEPTH]
        level.update({p: step for p in frontier})
    return level


def _ancestry(kinds: Sequence[dict[str, int]], lookup: Any, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each label's kinds' words (the kinds above its senses, :func:`_levels`) and the words
    of the definitions of its senses and those kinds, ANCESTOR_DECAY less per level; its own
    vector where it has none."""
    h = hierarchy()
    out = [np.array(vectors, np.float32), np.array(vectors, np.float32)]
    for i, up in enumerate(kinds):
        total = np.zeros((2, vectors.shape[1]), np.float32)
        for synset, step in _levels(up).items():
            names = _name_words(synset) if step else []
            for j, words in enumerate((names, h.gloss(synset))):
                v = _mean_vector(words, lookup)
                if v is not None:
                    total[j] += ANCESTOR_DECAY**step * v
        for j in range(2):
            if float(np.linalg.norm(total[j])) > 0:
                out[j][i] = unit(total[j])
    return out[0], out[1]


def _context(
    labels: Sequence[str],
    evidence: dict[str, list[tuple[str, float]]] | None,
    class_vectors: np.ndarray | None,
    vectors: np.ndarray,
) -> np.ndarray | None:
    """Each label's mass-weighted mean class vector (its own vector where it has no evidence)."""
    if not evidence or class_vectors is None or len(class_vectors) != len(imagenet_wnids()) or not len(labels):
        return None
    row = {w: i for i, w in enumerate(imagenet_wnids())}
    out = np.array(vectors, np.float32)
    for i, lab in enumerate(labels):
        pairs = [(row[w], m) for w, m in evidence.get(lab, []) if w in row]
        if pairs:
            v = sum(m * np.asarray(class_vectors[r], np.float32) for r, m in pairs)
            if float(np.linalg.norm(v)) > 0:
                out[i] = unit(v)
    return out


def query_terms(words: Sequence[str], lookup: Any) -> list[tuple[str, np.ndarray | None]]:
    """``(word, unit plain word vector or None)`` of each query word; a compound
    (``stop_sign``) is the mean of its words when not a word itself."""
    out = []
    for w in words:
        v = lookup(w)
        if v is None:
            found = [x for x in (lookup(t) for t in tokenize(w)) if x is not None]
            v = np.mean([unit(np.asarray(x, np.float32)) for x in found], axis=0) if found else None
        out.append((w, None if v is None else unit(np.asarray(v, np.float32))))
    return out


def rank_query(
    words: Sequence[str],
    lookup: Any,
    vocabulary: np.ndarray,
    labels: LabelSet,
    photo_label: np.ndarray,
    sims: np.ndarray,
    unlabelled_strong_cos: float,
    without: Sequence[str] = (),
) -> tuple[list[Relation], np.ndarray, np.ndarray, np.ndarray]:
    """Search's ranking of every photo for the query ``words``: the labels' relations,
    then :func:`rank_photos` (order, score, strong). A label that a ``without`` word
    (``-rooster``) names, or is a kind of, relates to nothing."""
    rels = _relations(words, lookup, vocabulary, labels)
    for word in without:
        senses = query_senses(word)
        for j, (label, kinds) in enumerate(zip(labels.labels, labels.kinds)):
            if relate(word, senses, label, kinds, -9.0).kind in ("same", "kind"):
                rels[j] = Relation("none", 0.0)
    return (rels, *rank_photos(rels, photo_label, sims, unlabelled_strong_cos))


def _relations(words: Sequence[str], lookup: Any, vocabulary: np.ndarray, labels: LabelSet) -> list[Relation]:
    terms = query_terms(words, lookup)
    if not terms:  # only subtracted words ("-dog"): no label is named, the photos' vectors rank
        return [Relation("none", 0.0)] * len(labels.labels)
    dim = vocabulary.shape[1]
    stacked = np.vstack([v if v is not None else np.zeros(dim, np.float32) for _, v in terms])
    found = [query_gloss(t, lookup, labels.ranks) if v is not None else None for t, v in terms]
    glosses: list[tuple[np.ndarray, float] | None] = [None] * len(terms)
    if any(g is not None for g in found):
        gloss_hubs = _query_hubness(
            np.vstack([g if g is not None else np.zeros(dim, np.float32) for g in found]), vocabulary
        )
        glosses = [None if g is None else (g, float(r)) for g, r in zip(found, gloss_hubs)]
    related = labels.related.lookup([t for t, _ in terms]) if labels.related is not None else None
    return query_relations(terms, _query_hubness(stacked, vocabulary).tolist(), labels, glosses, related)


# per vocabulary matrix (checked by weak reference, so a freed one is never mistaken for a
# new one at the same address): each query vector's r, a scan of the whole vocabulary
_hubness_memo: dict[int, tuple[weakref.ref, dict[bytes, float]]] = {}
_HUBNESS_MEMO_MAX = 4096


def _query_hubness(vectors: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """:func:`hubness` of each query vector, remembered: people repeat searches."""
    owner, memo = _hubness_memo.get(id(vocabulary), (None, None))
    if owner is None or owner() is not vocabulary or memo is None:
        memo = {}
        _hubness_memo[id(vocabulary)] = (weakref.ref(vocabulary), memo)
    keys = [np.ascontiguousarray(v, np.float32).tobytes() for v in vectors]
    missing = [i for i, key in enumerate(keys) if key not in memo]
    if missing:
        if len(memo) > _HUBNESS_MEMO_MAX:
            memo.clear()
        for i, r in zip(missing, hubness(vectors[missing], vocabulary).tolist()):
            memo[keys[i]] = r
    return np.array([memo[key] for key in keys], np.float32)
