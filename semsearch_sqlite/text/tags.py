"""Stored tags: an image's tags in its own sense (its classes and their WordNet kinds,
built by ``model/sense_tags.py``), or, for models without classes, the nearest
vocabulary words to its semantic vector, with stopwords, punctuation and numbers left
out; each with a confidence (0..1)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.query import tokenize
from semsearch_sqlite.text.vocabulary import WordSpace, word_space

DEFAULT_TAGS = 10
# Words that are near everything in GloVe space and describe nothing in a photo.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each either else ever
    few for from further had has have having he her here hers herself him himself his how however i
    if in into is it its itself just least less let like many may me might more most much must my
    myself neither no nor not now of off often on once one only or other ought our ours ourselves
    out over own per perhaps rather same shall she should since so some such than that the their
    theirs them themselves then there these they this those though through thus to too under until
    up upon us very was we well were what whatever when where whether which while who whom whose why
    will with within without would yet you your yours yourself yourselves mr mrs ms dr st jr
    inc ltd co corp said says say told according although instead another anyone anything
    everyone everything someone something nothing else etc via unless whereas whom whose ie eg
    two three four five six seven eight nine ten first second third new""".split()
)
_WORDLIKE = re.compile(r"^[a-z][a-z'-]*[a-z]$")


def is_display_word(word: str) -> bool:
    """True for a word a person would call one (``ocean``, ``t-shirt``, ``a``): not
    punctuation, a number or a token such as ``'s``. Word neighbours show only these."""
    return bool(_WORDLIKE.match(word)) or (len(word) == 1 and word.isalpha())


def is_tag_word(word: str) -> bool:
    """True for alphabetic, non-stopword vocabulary entries of 2+ letters."""
    return bool(_WORDLIKE.match(word)) and word not in STOPWORDS and "'" not in word


# the mask of the last few word matrices: checking 50,000 words costs ~0.5 s, so a
# query for many tags would pay it on every call
_MASKS = 8
_masks: dict[int, tuple[object, np.ndarray]] = {}


def tag_mask(space: WordSpace) -> np.ndarray:
    """Boolean mask over the word matrix rows: which words may be tags (cached per matrix)."""
    hit = _masks.get(id(space.matrix))
    if hit is not None and hit[0] is space.matrix:
        return hit[1]
    mask = np.array([is_tag_word(space.words.get(int(i), "")) for i in space.matrix.ids.tolist()], dtype=bool)
    while len(_masks) >= _MASKS:
        _masks.pop(next(iter(_masks)))
    _masks[id(space.matrix)] = (space.matrix, mask)
    return mask


def class_tag_word(space: WordSpace, class_name: str) -> str | None:
    """The tag word naming an ImageNet class: the head noun (last word) of its first
    synonym whose head is a tag word of ``space`` ("great white shark, white shark, ..."
    -> "shark", "tabby, tabby cat" -> "tabby"), or None."""
    for synonym in class_name.split(","):
        words = tokenize(synonym)
        if words and is_tag_word(words[-1]) and words[-1] in space.ids:
            return words[-1]
    return None


def word_confidence(distance: float) -> float:
    """A nearest-word tag's confidence (0..1): the cosine of the word to the image's vector."""
    return round(min(1.0, max(0.0, 1.0 - float(distance))), 4)


def nearest_tags(
    space: WordSpace,
    vectors: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    leading: Sequence[Sequence[tuple[str, float, float]]] | None = None,
) -> list[list[tuple[str, float, float]]]:
    """For each row of ``vectors``, ``k`` tags as ``(word, cosine distance, confidence)``:
    the row's ``leading`` tags when it has any (its tags in its own sense, see
    ``model/sense_tags.py``), else the nearest tag words (models without classes)."""
    out: list[list[tuple[str, float, float]]] = []
    need = [n for n in range(len(vectors)) if leading is None or not leading[n]]
    nearest = dict(zip(need, _nearest_words(space, np.asarray(vectors)[need], k, mask))) if need else {}
    for n in range(len(vectors)):
        if n in nearest:
            out.append(nearest[n])
        else:
            assert leading is not None
            out.append([(w, float(d), float(c)) for w, d, c in list(leading[n])[:k]])
    return out


def _nearest_words(
    space: WordSpace, vectors: np.ndarray, k: int, mask: np.ndarray | None
) -> list[list[tuple[str, float, float]]]:
    """The ``k`` nearest tag words of each row, with their distances and confidences."""
    if mask is None:
        mask = tag_mask(space)
    allowed = np.flatnonzero(mask)
    words = space.matrix.vectors  # scored whole, then masked: no per-call copy of the matrix
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1
    v = v / norms
    out = []
    kk = min(k, len(allowed))
    # chunks keep the score matrix small (rows x vocabulary)
    ids = space.matrix.ids[allowed]
    for start in range(0, len(v), 256):
        for row in (v[start : start + 256] @ words.T)[:, allowed]:
            part = np.argpartition(-row, kk - 1)[:kk] if kk else np.zeros(0, np.int64)
            order = part[np.argsort(-row[part], kind="stable")]
            out.append(
                [
                    (space.words[i], d, word_confidence(d))
                    for i, d in zip(ids[order].tolist(), (1.0 - row[order]).tolist())
                ]
            )
    return out


def write_tags(
    store: Store,
    ids: Sequence[int],
    vectors: np.ndarray,
    k: int = DEFAULT_TAGS,
    leading: Sequence[Sequence[tuple[str, float, float]]] | None = None,
) -> None:
    """Replace the stored tags of ``ids`` (call inside a transaction); ``leading`` as in
    :func:`nearest_tags`."""
    space = word_space(store.conn)
    mask = tag_mask(space)
    rows = []
    for image_id, tags in zip(ids, nearest_tags(space, vectors, k, mask, leading)):
        rows.extend((int(image_id), rank, word, dist, conf) for rank, (word, dist, conf) in enumerate(tags, 1))
    store.replace_tags(ids, rows)
