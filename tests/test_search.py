"""The query functions through the CLI: tags, focus, similar by id/path/new file, train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import FocusError, NotFoundError, QueryError
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.queries.search import focus_class, focused_search, similar_to_image
from semsearch_sqlite.storage.store import Store

from .helpers import COLOURS, draw, make_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: str) -> Path:
    root = tmp_path_factory.mktemp("search")
    folder = make_folder(root / "images")
    path = root / "s.db"
    ingest(folder, path, IngestOptions(backbone=tiny_backbone))
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_tags_by_path_and_id(db: Path) -> None:
    code, out, _ = invoke("tags", str(db), "cat/cat_0.png", "-k", "5", "--json")
    assert code == 0
    words = [h["word"] for h in json.loads(out)["hits"]]
    assert len(words) == 5 and all(w.isalpha() for w in words)
    code, out2, _ = invoke("tags", str(db), "1", "-k", "5", "--json")
    assert code == 0
    code, _, err = invoke("tags", str(db), "nope/none.png")
    assert code == 1
    assert err == "Error: no image stored with path 'nope/none.png'; list them with: select id, path from images\n"


def test_similar_by_id_path_and_new_file(db: Path, tmp_path: Path) -> None:
    code, out, _ = invoke("similar", str(db), "cat/cat_0.png", "-k", "3", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and len(hits) == 3
    assert all(h["path"] != "cat/cat_0.png" for h in hits)
    assert hits[0]["label"] == "cat"
    code, out, _ = invoke("similar", str(db), "cat/cat_0.png", "--space", "semantic", "-k", "3", "--json")
    assert code == 0 and json.loads(out)["hits"][0]["label"] == "cat"
    new = tmp_path / "new_dog.png"
    draw(new, COLOURS["dog"], 12345)
    for space in ("visual", "semantic"):
        code, out, err = invoke("similar", str(db), str(new), "--space", space, "-k", "3", "--json")
        assert code == 0, err
        assert json.loads(out)["hits"][0]["label"] == "dog"


def test_focus(db: Path) -> None:
    with Store.open(db) as s:
        target = focus_class(s.conn, "cat")
        # "cat" is a WordNet group: tabby, Persian cat, ... (not the nearest word vector)
        assert target.how == "group" and target.name == "cat" and len(target.classes) > 5
        assert focus_class(s.conn, "tabby").how == "class"
        assert focus_class(s.conn, "birds").name == "bird"
        with pytest.raises(FocusError, match="no ImageNet class is near 'sky'"):
            focus_class(s.conn, "sky")
        results = focused_search(s.conn, "dog/dog_0.png", "cat", 4)
        assert results.note == target.describe() == f"focus: cat ({len(target.classes)} ImageNet classes)"
        assert len(results.hits) == 4
        assert all(h.path != "dog/dog_0.png" for h in results.hits)
    code, out, err = invoke("focus", str(db), "dog/dog_0.png", "cat", "-k", "2")
    assert code == 0
    assert err.startswith("focus: cat (")
    code, out, err = invoke("focus", str(db), "dog/dog_0.png", "sky")
    assert code == 1 and "Error: no ImageNet class is near 'sky'" in err


def test_query_errors(db: Path) -> None:
    with Store.open(db) as s:
        with pytest.raises(NotFoundError, match="no image with id 999"):
            similar_to_image(s.conn, 999)
        with pytest.raises(QueryError, match="space must be one of visual, semantic"):
            similar_to_image(s.conn, 1, 3, "colour")
        with pytest.raises(QueryError, match="k must be at least 1"):
            similar_to_image(s.conn, 1, -5)
        assert len(similar_to_image(s.conn, 1, 10**9).hits) == 11  # clamped, all others


def test_train_refits_in_place(db: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    rows = ["path,label"] + [
        f"{c}/{c}_{i}.png,{'animal' if c != 'car' else 'vehicle'}" for c in COLOURS for i in range(4)
    ]
    labels.write_text("\n".join(rows) + "\n")
    code, _, err = invoke("train", str(db), "--labels", str(labels))
    assert code == 0, err
    assert err.startswith("word space: ")
    with Store.open(db) as s:
        # every image tagged anew, up to 10 tags (as many as its classes and their kinds support)
        tagged, most = s.conn.execute("select count(distinct image_id), max(rank) from tags").fetchone()
        assert tagged == 12 and 1 <= most <= 10
    code, out, _ = invoke("search", str(db), "vehicle", "-k", "4", "--json")
    assert [h["label"] for h in json.loads(out)["hits"]].count("car") >= 3
