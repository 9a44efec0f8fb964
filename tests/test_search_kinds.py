"""Search on a collection where every photo is labelled, by words that are not labels:
kinds (WordNet), associations, absent things, the strong/weak cue and the score. Real
photos of the Caltech-101 dev set, the real EfficientNet-Lite0, real GloVe, a real
database made by ingest."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import semsearch_sqlite
from semsearch_sqlite.model.relations import (
    SAME,
    STRONG_RELATION,
    Relation,
    label_evidence,
    label_kinds,
    label_senses,
    query_senses,
    rank_photos,
    relate,
)
from semsearch_sqlite.queries.search import similar_images, space_matrix, text_vector, visual_feedback
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.wordnet import hierarchy
from semsearch_sqlite.vectors.rerank import FEEDBACK_SHORTLIST

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101-dev"
LABELS = ("rooster", "butterfly", "elephant", "laptop", "ferry", "dolphin", "airplanes", "helicopter", "chair", "pizza")
PHOTOS = 4


@pytest.fixture(scope="module")
def dev_db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """PHOTOS real photos of each of LABELS, ingested with EfficientNet-Lite0."""
    from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest

    if not DEV.is_dir():
        pytest.skip(f"{DEV} (the shared dev photos) is not here")
    root = tmp_path_factory.mktemp("kinds")
    for label in LABELS:
        (root / "photos" / label).mkdir(parents=True)
        for photo in sorted((DEV / label).iterdir())[:PHOTOS]:
            shutil.copy(photo, root / "photos" / label / photo.name)
    db = root / "dev.db"
    stats = ingest(root / "photos", db, IngestOptions(backbone="efficientnet-lite0", workers=1))
    assert stats.added == len(LABELS) * PHOTOS, stats.problems
    collection = semsearch_sqlite.open(str(db))
    yield collection
    collection.close()


def labels_of(results: Any, n: int = 10) -> list[str]:
    return [h.label for h in results.hits[:n]]


# -- the shipped hierarchy and the relations ---------------------------------------------------
def test_hierarchy_knows_kinds_plurals_and_rare_senses() -> None:
    h = hierarchy()
    tagged, cats = h.senses("cats")
    assert cats == h.senses("cat")[1] and tagged >= 1
    bird = h.senses("bird")[1][0]
    rooster = h.senses("rooster")[1][0]
    assert bird in h.ancestors(rooster) and rooster not in h.ancestors(bird)
    assert h.depth(bird) > h.depth(h.senses("animal")[1][0]) > 0
    assert h.senses("zzqqzz") == (0, []) and h.senses("a\tb") == (0, [])
    # a query word counts its common senses only: "cat" the feline, not the Caterpillar tractor
    assert len(query_senses("cat")) == 1 and len(query_senses("chicken")) == 2


def test_the_photos_choose_the_label_sense() -> None:
    h = hierarchy()
    fish = h.senses("fish")[1][0]
    # "bass" is first a pitch; photos predicted as fish (tench, goldfish) make it the fish
    senses = label_senses("bass", [("n01440764", 0.4), ("n01443537", 0.2)])
    assert senses and all(fish in h.ancestors(s) for s in senses)
    assert not any(fish in h.ancestors(s) for s in label_senses("bass", []))  # no evidence: the first sense
    # car_side is no WordNet noun; its word "car" is what the car photos show
    kinds = label_kinds(["car side"], [[("n04285008", 0.3), ("n02814533", 0.3)]])["car side"]
    assert h.senses("vehicle")[1][0] in kinds
    probs = np.zeros((4, 1000), np.float32)
    probs[:2, 0], probs[2:, 1] = 1.0, 1.0
    evidence = label_evidence(probs, np.array([0, 0, 1, 1]), 2)
    assert evidence[0][0] == ("n01440764", 1.0) and evidence[1][0] == ("n01443537", 1.0)  # tench, goldfish


def test_relations_kind_sibling_same() -> None:
    elephant = label_kinds(["elephant"], [[]])["elephant"]
    assert relate("animal", query_senses("animal"), "elephant", elephant, -1.0).kind == "kind"
    # crocodiles and elephants are both vertebrates: GloVe's closeness doesn't make them a match
    sibling = relate("crocodile", query_senses("crocodile"), "elephant", elephant, 0.5)
    assert sibling.kind == "sibling" and not sibling.strong
    assert relate("elephants", [], "elephant", elephant, -1.0) == Relation("same", SAME)


def test_rank_photos_interleaves_labels_and_scores_decrease() -> None:
    rels = [Relation("kind", 0.95), Relation("kind", 0.95), Relation("none", 0.0)]
    photo_label = np.array([0, 0, 0, 1, 1, 1, 2, -1])
    sims = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95, 0.75], np.float32)
    order, score, strong = rank_photos(rels, photo_label, sims, unlabelled_strong_cos=0.7)
    assert set(photo_label[order[:2]]) == {0, 1}  # equal relations take turns
    assert list(score[order]) == sorted(score[order], reverse=True)
    assert strong.tolist() == [True] * 6 + [False, True]  # the unlabelled photo is close enough: strong
    assert photo_label[order[-1]] == 2 and score[order[-1]] < 0.5 <= score[order[-2]]


# -- end to end -----------------------------------------------------------------------------------
def test_kinds_find_the_labels_below_them(dev_db: Any) -> None:
    for query, label in (
        ("bird", "rooster"),
        ("chicken", "rooster"),
        ("insect", "butterfly"),
        ("computer", "laptop"),
        ("food", "pizza"),
        ("furniture", "chair"),
    ):
        found = dev_db.search(query, PHOTOS)
        assert labels_of(found) == [label] * PHOTOS, (query, labels_of(found))
        assert found.strong is not None and found.strong >= PHOTOS and all(h.match == "strong" for h in found.hits)
    assert set(labels_of(dev_db.search("aircraft", 2 * PHOTOS))) == {"airplanes", "helicopter"}
    animals = Counter(labels_of(dev_db.search("animal", 8), 8))
    assert set(animals) == {"rooster", "butterfly", "elephant", "dolphin"}  # every animal, not one hub


def test_absent_things_are_no_close_match(dev_db: Any) -> None:
    for query in ("crocodile", "cat", "giraffe", "violin"):
        found = dev_db.search(query, 10)
        assert found.strong == 0 and all(h.match == "weak" for h in found.hits), query
        assert found.note and found.note.startswith("no close match")
        assert all(h.score < 0.5 for h in found.hits)


def test_association_ranks_related_labels_first(dev_db: Any) -> None:
    order: list[str] = []
    for label in labels_of(dev_db.search("sea", 40), 40):
        order += [label] if label not in order else []
    assert set(order[:2]) == {"dolphin", "ferry"}, order  # both are at sea
    assert not set(order[:3]) & {"laptop", "pizza", "chair", "rooster"}
    assert dev_db.search("sea", 10).strong == 0  # an association is a guess: weak unless very close


def test_label_words_score_and_the_cue(dev_db: Any) -> None:
    for label in LABELS:
        found = dev_db.search(label, 10)
        assert labels_of(found, PHOTOS) == [label] * PHOTOS, label
        scores = [h.score for h in found.hits]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert [h.rank for h in found.hits] == list(range(1, 11))
        # strong hits come first, Results.strong counts them; weaker ones follow on request
        flags = [h.match == "strong" for h in found.hits]
        assert flags == sorted(flags, reverse=True) and found.strong == sum(flags) >= PHOTOS
        assert all((h.score >= 0.5) == (h.match == "strong") for h in found.hits)
    assert len(dev_db.search("laptop", 25).hits) == 25  # k hits, whatever the strong ones
    as_dict = dev_db.search("laptop", 3).as_dict()
    assert as_dict["strong"] == 3 and "score" in as_dict["hits"][0]


def test_multi_word_queries_want_every_word(dev_db: Any) -> None:
    found = dev_db.search("bird insect", 10)
    assert set(labels_of(found, 2 * PHOTOS)) == {"rooster", "butterfly"}
    assert found.strong == 0  # no photo is both
    assert dev_db.search("insect butterfly", PHOTOS).strong == PHOTOS  # both words right: strong
    assert STRONG_RELATION > 0.5


def test_unlabelled_photos_keep_the_visual_reranking(plugin_photos: dict, tmp_path: Path) -> None:
    copy = tmp_path / "unlabelled.db"
    shutil.copy(plugin_photos["db"], copy)
    with Store.open(str(copy)) as s:
        s.conn.execute("update images set label = null")
        s.conn.commit()
        m = space_matrix(s.conn, "semantic")
        pairs = m.top_k(text_vector(s.conn, "dog sofa")[0], FEEDBACK_SHORTLIST)
        want = visual_feedback(s.conn, pairs)
        got = similar_images(s.conn, "dog sofa", 8)
        # ranked by vector and visual agreement as before, strong ones first; the score follows the rank
        strong_ids = [h.image_id for h in got.hits if h.match == "strong"]
        assert [h.image_id for h in got.hits] == strong_ids + [i for i, _ in want[:8] if i not in strong_ids]
        assert sorted(h.image_id for h in got.hits) == sorted(i for i, _ in want[:8])
        scores = [h.score for h in got.hits]
        assert scores == sorted(scores, reverse=True)


def test_subtracted_words_leave_their_labels_out(dev_db: Any) -> None:
    assert "rooster" not in labels_of(dev_db.search("2:bird -rooster", 10))
    without_mammals = dev_db.search("animal -mammal", 2 * PHOTOS)
    assert set(labels_of(without_mammals, 2 * PHOTOS)) == {"rooster", "butterfly"}  # elephants, dolphins: mammals
    assert dev_db.search("-laptop", 5).strong == 0
