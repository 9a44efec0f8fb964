"""Tags led by an image's most probable classes: the smoothing of the class distribution,
the names ImageNet classes are tagged with, the order of the stored tags, and the same
tags for stored images, new files and pages. Real GloVe, real SQLite databases made by
the real ingest pipeline, real Datasette."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from datasette.app import Datasette
from markupsafe import escape

from semsearch_sqlite.model.semantic import class_tags, collection_semantics, semantic_model
from semsearch_sqlite.model.smoothing import (
    SMOOTH_WEIGHT,
    TAG_CLASS_SHARE,
    TAG_CLASSES,
    smoothed_top_classes,
    top_classes,
)
from semsearch_sqlite.pipeline.train import training_data
from semsearch_sqlite.queries.search import image_tags, space_matrix
from semsearch_sqlite.storage.rows import every_stored_tag
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.tags import class_tag_word, nearest_tags
from semsearch_sqlite.text.vocabulary import word_space


# -- the class distribution ------------------------------------------------------------------
def test_top_classes_are_the_most_probable() -> None:
    p = np.array([[0.1, 0.6, 0.05, 0.25], [0.4, 0.1, 0.3, 0.2]], np.float32)
    idx, val = top_classes(p, 2)
    assert [sorted(r) for r in idx.tolist()] == [[1, 3], [0, 2]]
    assert np.allclose(np.sort(val, axis=1), [[0.25, 0.6], [0.3, 0.4]])


def test_neighbours_reorder_a_photos_own_classes_but_add_none() -> None:
    own = (np.array([[0, 1, 2]], np.int32), np.array([[0.5, 0.3, 0.2]], np.float32))
    # one neighbour, sure of class 1 and a little of class 5 (not among the photo's own)
    near = (np.array([[[1, 5, 6]]], np.int32), np.array([[[0.6, 0.3, 0.1]]], np.float32))
    assert smoothed_top_classes(own, near, np.ones((1, 1), np.float32), 8).tolist() == [[1, 0, 2]]
    # a neighbour that weighs nothing changes nothing; without neighbours: the own order
    assert smoothed_top_classes(own, near, np.zeros((1, 1), np.float32), 8).tolist() == [[0, 1, 2]]
    assert smoothed_top_classes(own, None, None, 8).tolist() == [[0, 1, 2]]
    # class 1 gains SMOOTH_WEIGHT x 0.6: the weights and the mean over neighbours count
    two = (np.array([[[1, 5, 6], [7, 5, 6]]], np.int32), np.array([[[0.6, 0.3, 0.1], [0.9, 0.05, 0.05]]], np.float32))
    got = smoothed_top_classes(own, two, np.ones((1, 2), np.float32), 8)
    assert got.tolist() == ([[1, 0, 2]] if 0.3 + SMOOTH_WEIGHT * 0.6 / 2 > 0.5 else [[0, 1, 2]])


def test_classes_with_a_small_share_lead_no_tags() -> None:
    share = TAG_CLASS_SHARE / 2
    own = (np.array([[3, 4, 5]], np.int32), np.array([[1 - 3 * share, 2 * share, share]], np.float32))
    assert smoothed_top_classes(own, None, None, 6).tolist() == [[3, 4, -1]]
    assert smoothed_top_classes(own, None, None, 6, keep=1).tolist() == [[3]]
    assert TAG_CLASSES == smoothed_top_classes((own[0], np.full((1, 3), 1 / 3, np.float32)), None, None, 6).shape[1]


# -- names and order -------------------------------------------------------------------------
def test_an_imagenet_class_is_tagged_by_the_head_noun_of_its_first_known_synonym(plugin_photos: dict) -> None:
    with Store.open(plugin_photos["db"]) as s:
        space = word_space(s.conn)
    assert class_tag_word(space, "great white shark, white shark, man-eater, Carcharodon carcharias") == "shark"
    assert class_tag_word(space, "tabby, tabby cat") == "tabby"
    assert class_tag_word(space, "qqxzy, blorfzz qqxzy") is None  # no synonym's head is a vocabulary word
    assert class_tag_word(space, "the, cat") == "cat"  # stopwords are no tags


def test_leading_tags_are_the_tags_and_rows_without_them_get_nearest_words(plugin_photos: dict) -> None:
    with Store.open(plugin_photos["db"]) as s:
        space = word_space(s.conn)
    car = space.vector("car")
    plain = nearest_tags(space, car[None, :], 6)[0]
    assert plain[0][0] == "car" and all(0 <= c <= 1 for _, _, c in plain)
    # a photo with classes gets its tags in its own sense, never nearest words after them
    led = nearest_tags(space, np.vstack([car, car]), 6, leading=[[("car_side", 0.25, 0.9), ("truck", 0.3, 0.6)], []])
    assert led[0] == [("car_side", 0.25, 0.9), ("truck", 0.3, 0.6)]
    assert led[1] == plain
    assert nearest_tags(space, car[None, :], 1, leading=[[("a", 0.1, 0.9), ("b", 0.2, 0.8)]])[0] == [("a", 0.1, 0.9)]


# -- end to end, on a database made by ingest ----------------------------------------------------
def test_stored_tags_lead_with_each_photos_classes(plugin_photos: dict) -> None:
    with Store.open(plugin_photos["db"]) as s:
        model = semantic_model(s.conn)
        assert model.method == "joint"
        ids, X, probs, labels = training_data(s, None)
        space = word_space(s.conn)
        vectors, classes = collection_semantics(model, X, probs)
        assert classes is not None and classes.shape == (len(ids), TAG_CLASSES)
        leading = class_tags(model, space, vectors, classes)
        want = nearest_tags(space, vectors, 10, leading=leading)
        stored = every_stored_tag(s.conn, 10)
        assert [[w for w, *_ in stored[int(i)]] for i in ids] == [[w for w, *_ in t] for t in want]
        # a photo's label names its first tag, as the user spelled it (lower case)
        first = [stored[int(i)][0][0] for i in ids]
        hits = [f == lab.lower() for f, lab in zip(first, labels)]
        assert np.mean(hits) >= 0.8, list(zip(first, labels))
        assert plugin_photos["evil_label"].lower() in first
        # the distance of a label tag is the photo's cosine distance to the label's vector
        v = space_matrix(s.conn, "semantic")
        n = first.index(labels[0].lower())
        label_vector = model.classifier.label_vectors[model.label_words.index(labels[n])]
        assert stored[int(ids[n])][0][1] == pytest.approx(
            1 - float(v.vector(int(ids[n])) @ label_vector / np.linalg.norm(label_vector)), abs=1e-4
        )


def test_a_label_tag_is_found_by_the_folder_spelling_too(plugin_photos: dict) -> None:
    from semsearch_sqlite.queries.search import images_tagged

    evil = plugin_photos["evil_label"]  # stored as "<script>alert(1)<script> dog"
    with Store.open(plugin_photos["db"]) as s:
        want = {int(i) for (i,) in s.conn.execute("select image_id from tags where word = ?", [evil])}
        assert want
        for spelling in (evil, evil.replace(" ", "_"), evil.upper().replace(" ", "-")):
            assert {h.image_id for h in images_tagged(s.conn, spelling, 50).hits} == want, spelling


def test_more_tags_than_stored_are_the_stored_ones(plugin_photos: dict) -> None:
    # nearest words after a photo's own tags are where the label word's other senses came from
    with Store.open(plugin_photos["db"]) as s:
        image = int(s.conn.execute("select id from images where label = 'cat' order by id").fetchone()[0])
        stored = image_tags(s.conn, image, 10).hits
        more = image_tags(s.conn, image, 16).hits
    assert [h.word for h in more] == [h.word for h in stored] and len(stored) >= 1


@pytest.mark.asyncio
async def test_a_label_tag_is_escaped_on_the_image_page(plugin_photos: dict) -> None:
    evil = plugin_photos["evil_label"]
    with Store.open(plugin_photos["db"]) as s:
        image = int(
            s.conn.execute("select image_id from tags where word = ? and rank = 1", [evil.lower()]).fetchone()[0]
        )
    ds: Any = Datasette([plugin_photos["db"]])
    await ds.invoke_startup()
    r = await ds.client.get(f"/photos/-/semsearch/image/{image}", follow_redirects=True)
    assert r.status_code == 200
    assert str(escape(evil.lower())) in r.text and "<script>alert" not in r.text
