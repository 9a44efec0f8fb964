"""ConSE (Norouzi et al., 2014): an image's word vector is the probability-weighted
mean of the word vectors of its top ImageNet classes. Needs no training."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch_sqlite.errors import FocusError, ProjectionError
from semsearch_sqlite.storage.models import CLASSES_MODEL
from semsearch_sqlite.text.query import tokenize
from semsearch_sqlite.vectors.maths import unit, unit_rows

if TYPE_CHECKING:
    from semsearch_sqlite.storage.store import Store
    from semsearch_sqlite.text.glove import WordVectors

CONSE_TOP = 10
# focus: a word that names no class or group must be at least this close (cosine) to a
# class's vector to stand for it. Class vectors mix synonyms and head nouns, so lower
# similarities mean little: "bird" is 0.83 from "great white shark", "giraffe" 0.72 from
# "Angora rabbit", while near-synonyms ("guitar" / "acoustic guitar") are above 0.95.
FOCUS_MIN_SIMILARITY = 0.9
# class names: synonyms holding a word rarer than this GloVe rank (Latin names) are skipped
CLASS_WORD_MAX_RANK = 100_000


def class_word_vectors(class_names: list[str], wv: Any) -> tuple[np.ndarray, np.ndarray]:
    """The unit word vector of each ImageNet class, and which classes have one.

    A class is the mean over its synonyms ("tabby, tabby cat") of each synonym's vector,
    and a synonym's vector is the unit mean of its phrase vector and of its last word,
    the head noun of an English compound ("monkey dog" is a dog, "coffee mug" a mug).
    Synonyms with a word rarer than GloVe rank 100,000 (mostly Latin names such as
    "Tinca tinca") are skipped when ``wv`` knows word ranks, unless nothing else is left.

    Measured (benchmarks/semantic.py, ConSE on every image, both backbones): within a
    point or two of the plain mean of synonyms on retrieval, ahead of the first synonym
    alone, and the nearest class to a word is right more often (with the plain mean,
    "cat" is nearest to "affenpinscher, monkey pinscher, monkey dog").

    Args:
        class_names: one "name, synonym, ..." string per class.
        wv: WordVectors (or anything with ``phrase(text)`` and ``get(word)``; ``index``
            in frequency order gives ranks).
    """
    ranks = getattr(wv, "index", None)
    dim = _lookup_dim(wv)
    out = np.zeros((len(class_names), dim), np.float32)
    known = np.zeros(len(class_names), bool)
    for i, name in enumerate(class_names):
        synonyms = [s.strip() for s in name.split(",") if s.strip()]
        common = synonyms
        if ranks is not None:
            common = [
                s for s in synonyms if all(ranks.get(t, CLASS_WORD_MAX_RANK) < CLASS_WORD_MAX_RANK for t in tokenize(s))
            ]
        vecs = [v for v in (_synonym_vector(s, wv) for s in common) if v is not None]
        if not vecs:
            vecs = [v for v in (_synonym_vector(s, wv) for s in synonyms) if v is not None]
        if vecs:
            out[i] = unit(np.mean(vecs, axis=0))
            known[i] = True
    return out, known


def _synonym_vector(text: str, wv: Any) -> np.ndarray | None:
    phrase = wv.phrase(text)[0]
    if phrase is None:
        return None
    tokens = tokenize(text)
    head = wv.get(tokens[-1]) if len(tokens) > 1 else None
    return unit(unit(phrase) + unit(head)) if head is not None else unit(phrase)


def _lookup_dim(wv: Any) -> int:
    dim = getattr(wv, "dim", None)
    if dim:
        return int(dim)
    for word in ("the", "a", "of", "and"):
        v = wv.get(word)
        if v is not None:
            return int(len(v))
    raise ProjectionError("cannot tell the word vectors' dimension (not even 'the' is known)")


def conse_vectors(probs: np.ndarray, class_vectors: np.ndarray, top: int = CONSE_TOP) -> np.ndarray:
    """ConSE image vectors: the probability-weighted mean of the top classes' word vectors.

    Args:
        probs: ImageNet class probabilities [n, C].
        class_vectors: unit word vector per class [C, W] (zero rows for unknown classes).
        top: how many of the most probable classes to mix (T in the paper).

    Returns:
        Unit rows [n, W].
    """
    p = np.asarray(probs, np.float32)
    cv = np.asarray(class_vectors, np.float32)
    if p.ndim != 2 or p.shape[1] != cv.shape[0]:
        raise ProjectionError(f"class probabilities must be [n, {cv.shape[0]}], got {list(p.shape)}")
    t = max(1, min(int(top), p.shape[1]))
    idx = np.argpartition(-p, t - 1, axis=1)[:, :t]
    w = np.take_along_axis(p, idx, axis=1)
    return unit_rows(np.einsum("nt,ntd->nd", w, cv[idx]))


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names (with synonyms), shipped with the package."""
    text = resources.files("semsearch_sqlite").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:  # pragma: no cover - packaging error
        raise ProjectionError(f"imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


def store_class_vectors(store: Store, wv: WordVectors) -> None:
    """Store the word vector of each ImageNet class (for ConSE and focus)."""
    names = imagenet_class_names()
    vectors, known = class_word_vectors(names, wv)
    with store.atomic():
        store.save_model(
            CLASSES_MODEL,
            "class_vectors",
            {"vectors": np.asarray(vectors, np.float32), "known": np.asarray(known, bool)},
            {"names": names, "source": wv.source},
        )


@lru_cache(maxsize=1)
def imagenet_hypernyms() -> tuple[tuple[tuple[str, ...], ...], ...]:
    """Per ImageNet class, its WordNet 3.0 ancestors nearest first, each as its lemmas
    ("finch", "oscine, oscine bird", ..., "bird", ...); shipped with the package."""
    text = resources.files("semsearch_sqlite").joinpath("data/imagenet_hypernyms.txt").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        _wnid, _, groups = line.partition("\t")
        out.append(tuple(tuple(lem.strip().lower() for lem in g.split(",")) for g in groups.split("|") if g))
    if len(out) != 1000:  # pragma: no cover - packaging error
        raise ProjectionError(f"imagenet_hypernyms.txt has {len(out)} lines, expected 1000")
    return tuple(out)


@dataclass(frozen=True)
class FocusTarget:
    """What a focus word was resolved to: one ImageNet class or a group of them."""

    classes: tuple[int, ...]
    name: str
    how: str  # "class" (a class's own name), "group" (a WordNet ancestor), "nearest" (word vector)

    def describe(self) -> str:
        if self.how == "group" and len(self.classes) > 1:
            return f"focus: {self.name} ({len(self.classes)} ImageNet classes)"
        return f"focus class: {self.name}"


def resolve_focus(
    text: str, names: list[str], vectors: np.ndarray, known: np.ndarray, query_vector: np.ndarray | None
) -> FocusTarget:
    """The ImageNet class, or group of classes, that the focus word(s) ``text`` mean.

    In order: a class whose synonyms include ``text`` ("tabby", "great white shark");
    the classes under a WordNet ancestor of that name ("bird": every bird class, "dog",
    "car", "musical instrument"; a trailing plural "s" is tried too); else the class whose
    word vector is within :data:`FOCUS_MIN_SIMILARITY` of ``query_vector``.

    Raises:
        FocusError: nothing is that near (the message names the nearest class).
    """
    wanted = " ".join(tokenize(text))
    forms = [wanted] + ([wanted[:-1]] if wanted.endswith("s") and len(wanted) > 3 else [])
    for form in forms:
        own = tuple(i for i, n in enumerate(names) if form in (s.strip().lower() for s in n.split(",")))
        if own:
            return FocusTarget(
                own,
                names[own[0]].split(",")[0].strip() if len(own) == 1 else form,
                "class" if len(own) == 1 else "group",
            )
    hypernyms = imagenet_hypernyms()
    for form in forms:
        group = tuple(i for i, anc in enumerate(hypernyms) if any(form in lemmas for lemmas in anc))
        if len(group) == 1:  # "crocodile": the one class under it
            return FocusTarget(group, names[group[0]].split(",")[0].strip(), "group")
        if group:
            return FocusTarget(group, form, "group")
    if query_vector is None:
        raise FocusError(f"no ImageNet class or group is called {text!r}; try a word such as bird, dog, car or chair")
    scores = np.asarray(vectors, np.float32) @ unit(np.asarray(query_vector, np.float32))
    scores[~np.asarray(known, bool)] = -np.inf
    c = int(np.argmax(scores))
    if scores[c] < FOCUS_MIN_SIMILARITY:
        raise FocusError(
            f"no ImageNet class is near {text!r} (the nearest, {names[c].split(',')[0].strip()!r}, has word "
            f"similarity {scores[c]:.2f}; at least {FOCUS_MIN_SIMILARITY} is needed); focus on a kind of thing "
            "the backbone knows, such as bird, dog, car or chair"
        )
    return FocusTarget((c,), names[c].split(",")[0].strip(), "nearest")
