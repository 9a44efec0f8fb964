"""Tags in the photo's sense (issue 24): a photo's classes, then the WordNet kinds they
belong to, never the label word's other senses; each tag with a confidence, shown alike
in the tags table, SQL, the CLI, Python and the image page; files from before the
confidence column still open."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.app import Datasette

import semsearch_sqlite
from semsearch_sqlite.cli import cli
from semsearch_sqlite.model.conse import imagenet_class_names
from semsearch_sqlite.model.sense_tags import ancestor_words, label_kind, sense_tags
from semsearch_sqlite.queries.search import image_tags
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.vocabulary import word_space
from semsearch_sqlite.text.wordnet import kinship

NAMES = ["butterfly", "cup", "chair"] + imagenet_class_names()


def _tags_of_label(space: Any, label: str, k: int = 8) -> list[tuple[str, float, float]]:
    """The tags of a photo that is surely ``label`` (its vector on the label's word)."""
    vectors = np.vstack([space.vector(w) for w in NAMES[:3]]).astype(np.float32)
    row = NAMES.index(label)
    classes = np.array([[row, -1, -1]], np.int32)
    return sense_tags(NAMES, 3, vectors, space, vectors[row][None, :], classes, k)[0]


@pytest.fixture(scope="module")
def space(plugin_photos: dict[str, Any]) -> Any:
    with Store.open(plugin_photos["db"]) as s:
        return word_space(s.conn)


@pytest.mark.parametrize(
    "label, kind, other_senses",
    [
        ("butterfly", {"insect", "arthropod"}, {"breaststroke", "backstroke", "medley", "freestyle"}),
        ("cup", {"container"}, {"champions", "championship", "tournament"}),
        ("chair", {"seat", "furniture"}, {"head", "sitting", "heads"}),
    ],
)
def test_tags_name_the_photos_kind_not_the_label_words_other_senses(
    space: Any, label: str, kind: set[str], other_senses: set[str]
) -> None:
    tags = _tags_of_label(space, label)
    words = [w for w, _, _ in tags]
    assert words[0] == label
    assert kind <= set(words), words
    assert not other_senses & set(words), words
    confidences = [c for _, _, c in tags]
    assert all(0 < c <= 1 for c in confidences)
    assert confidences[1:] == sorted(confidences[1:], reverse=True)  # the kinds, most confident first
    assert confidences[0] == pytest.approx(1.0, abs=1e-3)  # the photo's vector is its label's word


def test_kinds_come_from_wordnet_hypernyms(space: Any) -> None:
    assert {r for r, _ in label_kind("rooster")} == {7, 8}  # cock, hen
    assert {r for r, _ in label_kind("flamingo_head")} == {130}  # the word nearest a class, not "head"
    assert label_kind("yin_yang") == []
    chains = ancestor_words(space)
    assert "bird" in [w for _, w in chains[7]]
    assert [d for d, _ in chains[7]] == sorted(d for d, _ in chains[7])
    assert kinship().similarity("flamingo") == 1.0 and kinship().similarity("qqxzy") == 0.0


def test_a_labels_kind_is_what_its_kin_classes_share(space: Any) -> None:
    from semsearch_sqlite.model.sense_tags import HYPERNYM_DECAY, kind_support

    support = kind_support(label_kind("cup"), ancestor_words(space))  # cassette, envelope, flowerpot, thimble
    assert support["container"] > 0 and "cap" not in support  # only the thimble is a cap
    assert kind_support([(7, 1.0)], ancestor_words(space))["bird"] == pytest.approx(HYPERNYM_DECAY)  # cock: one step up


def test_a_label_without_a_wordnet_kind_keeps_its_own_tag_only(space: Any) -> None:
    v = space.vector("cat")[None, :].astype(np.float32)
    tags = sense_tags(["qqxzy"] + imagenet_class_names(), 1, v, space, v, np.array([[0, -1, -1]]), 5)[0]
    assert [w for w, _, _ in tags] == ["qqxzy"]


def test_stored_tags_have_confidences_everywhere(plugin_photos: dict[str, Any]) -> None:
    db = plugin_photos["db"]
    conn = sqlite3.connect(db)
    stored = conn.execute("select image_id, rank, word, confidence from tags order by image_id, rank").fetchall()
    conn.close()
    assert stored and all(c is not None and 0 <= c <= 1 for *_, c in stored)
    first = [r for r in stored if r[0] == stored[0][0]]
    with semsearch_sqlite.open(db) as photos:
        hits = photos.tags(first[0][0], 10).hits
    assert [(h.word, h.confidence) for h in hits] == [(w, pytest.approx(c, abs=1e-4)) for _, _, w, c in first]
    r = CliRunner().invoke(cli, ["tags", db, str(first[0][0]), "--json"])
    assert r.exit_code == 0, r.output
    assert [h["confidence"] for h in json.loads(r.output)["hits"]] == [h.confidence for h in hits]
    r = CliRunner().invoke(cli, ["tags", db, str(first[0][0])])
    assert r.exit_code == 0 and "confidence" in r.output.splitlines()[0] and "distance" not in r.output


@pytest.mark.asyncio
async def test_sql_and_the_image_page_show_the_confidence(plugin_photos: dict[str, Any]) -> None:
    ds = Datasette([plugin_photos["db"]])
    await ds.invoke_startup()
    r = await ds.client.get("/photos.json?sql=select+*+from+image_tags(1)&_shape=array")
    assert r.status_code == 200, r.text
    rows = r.json()
    assert rows and all(0 <= row["confidence"] <= 1 for row in rows)
    page = await ds.client.get("/photos/-/semsearch/image/1")
    assert page.status_code == 200
    assert f"{round(100 * rows[0]['confidence'])}%</span>" in page.text


def _old_file(src: str, dest: Path) -> str:
    """A copy of ``src`` as semsearch-sqlite wrote it before tags had a confidence (schema 3)."""
    shutil.copy(src, dest)
    conn = sqlite3.connect(dest)
    conn.execute("alter table tags drop column confidence")
    conn.execute("delete from _sqlite_migrations where name = 'm004_tag_confidence'")
    conn.execute("update semsearch_meta set value = '3' where key = 'schema_version'")
    conn.commit()
    conn.close()
    return str(dest)


def test_a_file_from_before_the_confidence_column_still_opens(plugin_photos: dict[str, Any], tmp_path: Path) -> None:
    old = _old_file(plugin_photos["db"], tmp_path / "old.db")
    with Store.open(old, readonly=True) as s:
        hits = image_tags(s.conn, 1, 5).hits
    # the word's cosine stands in for the confidence it never stored
    assert hits and all(h.confidence == pytest.approx(max(0.0, 1 - h.distance), abs=1e-4) for h in hits)
    with Store.open(old, create=True) as s:  # a writer upgrades it
        assert "confidence" in {c.name for c in s.db.table("tags").columns}
        assert [h.word for h in image_tags(s.conn, 1, 5).hits] == [h.word for h in hits]
