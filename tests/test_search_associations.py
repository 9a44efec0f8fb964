"""Associations between a query word and a collection's labels (sea -> ferry, music -> grand
piano): the label's word, the words of the kinds just above it, and hubness control. Real
GloVe (glove.6B.50d), the shipped WordNet hierarchy, the 50 labels of the dev photos."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from semsearch_sqlite.model.relations import LabelSet, hubness, label_set, query_terms
from semsearch_sqlite.text.glove import WordVectors
from semsearch_sqlite.text.wordnet import hierarchy
from semsearch_sqlite.vectors.maths import unit_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# association words a person would type, none of them a label or a kind of one
QUERIES = (
    "sea ocean beach water lake river pond sailing fishing music song concert money cash football sport sky "
    "flight airport pilot rain coffee tea photograph jurassic fossil desert cartoon comic farm egg traffic "
    "street office garden australia africa italian cheese parasite portrait keyboard internet breakfast"
).split()


@pytest.fixture(scope="module")
def labels(glove: WordVectors) -> tuple[LabelSet, np.ndarray]:
    """The dev photos' 50 labels as search relates queries to them, and the vocabulary."""
    names = sorted(
        p.name.lower().replace("_", " ")
        for d in ("caltech101-dev", "caltech101-dev2")
        if (DATA / d).is_dir()
        for p in (DATA / d).iterdir()
    )
    if len(names) != 50:
        pytest.skip(f"{DATA} (the shared dev photos) is not here")
    vocabulary = unit_rows(np.asarray(glove.vectors[:50_000], np.float32))
    return label_set(names, None, glove.get, vocabulary), vocabulary


def first(labels: tuple[LabelSet, np.ndarray], glove: WordVectors, word: str, n: int) -> list[str]:
    found, vocabulary = labels
    ((_, vector),) = query_terms([word], glove.get)
    value = found.association(vector, float(hubness(vector[None], vocabulary)[0]))
    return [found.labels[j] for j in np.argsort(-value)[:n]]


def test_hierarchy_names_the_kinds_above_a_label() -> None:
    h = hierarchy()
    ketch = h.senses("ketch")[1][0]
    words = {w for s in h.ancestors(ketch) for w in h.words(s)}
    assert {"sailing vessel", "vessel", "craft"} <= words
    assert [h.words(p) for p in h.parents(ketch)] == [["sailing vessel", "sailing ship"]]
    assert h.words(ketch) == ["ketch"] and h.words("no such synset") == []
    pizza = h.senses("pizza")[1][0]
    assert {"italian", "pie", "dough"} <= set(h.gloss(pizza)) and "of" not in h.gloss(pizza)


def test_a_label_is_described_by_the_kinds_above_it(labels: tuple[LabelSet, np.ndarray], glove: WordVectors) -> None:
    found, _ = labels
    assert found.ancestry is not None and found.glosses is not None and found.centre is not None
    ketch = found.labels.index("ketch")
    sailing = glove.get("sailing")
    assert sailing is not None
    # "ketch" alone is a rare word far from sailing; its kinds (sailing vessel, vessel) are near
    assert found.ancestry[ketch] @ sailing > found.vectors[ketch] @ sailing + 0.5
    pizza, italian = found.labels.index("pizza"), glove.get("italian")
    assert italian is not None and found.glosses[pizza] @ italian > found.vectors[pizza] @ italian + 0.2


def test_associations_rank_the_related_labels_first(labels: tuple[LabelSet, np.ndarray], glove: WordVectors) -> None:
    sea = {"ferry", "dolphin", "starfish", "crab", "sea horse", "hawksbill", "ketch"}
    assert set(first(labels, glove, "sea", 3)) <= sea and set(first(labels, glove, "ocean", 5)) <= sea
    assert set(first(labels, glove, "music", 2)) == {"electric guitar", "grand piano"}
    assert set(first(labels, glove, "flight", 2)) == {"airplanes", "helicopter"}
    assert set(first(labels, glove, "jurassic", 2)) == {"brontosaurus", "stegosaurus"}
    assert first(labels, glove, "money", 1) == ["dollar bill"]
    assert first(labels, glove, "cheese", 1) == ["pizza"]
    assert "ketch" in first(labels, glove, "sailing", 2)


def test_no_label_wins_every_query(labels: tuple[LabelSet, np.ndarray], glove: WordVectors) -> None:
    winners = Counter(first(labels, glove, q, 1)[0] for q in QUERIES)
    # hubness under control: the most frequent winner wins a few queries, not most of them
    assert winners.most_common(1)[0][1] <= len(QUERIES) // 6, winners
    assert len(winners) >= 15, winners
