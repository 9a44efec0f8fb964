"""Tags and similar for any file: stored files given by absolute or cwd-relative paths
resolve to their row; new files are embedded with the database's backbone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import semsearch_sqlite
from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import NotFoundError
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.queries.new_image import describe_bytes
from semsearch_sqlite.queries.search import image_tags, resolve_image
from semsearch_sqlite.storage.store import Store

from .helpers import COLOURS, draw, make_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: str) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("anyfile")
    folder = make_folder(root / "images")
    db = root / "p.db"
    ingest(folder, db, IngestOptions(backbone=tiny_backbone, workers=1))
    return db, folder


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_absolute_and_relative_paths_resolve_to_the_stored_row(
    photos: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, folder = photos
    with Store.open(db) as s:
        stored = resolve_image(s.conn, "dog/dog_1.png")
        assert resolve_image(s.conn, str(folder / "dog" / "dog_1.png")) == stored
        assert resolve_image(s.conn, folder / "dog" / "dog_1.png") == stored
        monkeypatch.chdir(folder / "dog")
        assert resolve_image(s.conn, "dog_1.png") == stored
        assert resolve_image(s.conn, os.path.join("..", "dog", "dog_1.png")) == stored
    code, out, err = invoke("tags", str(db), str(folder / "dog" / "dog_1.png"), "-k", "4", "--json")
    assert code == 0, err
    with Store.open(db) as s:
        assert json.loads(out)["hits"] == [h.as_dict() for h in image_tags(s.conn, stored, 4).hits]


def test_a_copy_elsewhere_resolves_by_its_bytes(photos: tuple[Path, Path], tmp_path: Path) -> None:
    db, folder = photos
    copy = tmp_path / "renamed.png"
    shutil.copy(folder / "car" / "car_2.png", copy)
    with Store.open(db) as s:
        assert resolve_image(s.conn, str(copy)) == resolve_image(s.conn, "car/car_2.png")


def test_tags_of_a_new_file_are_embedded(photos: tuple[Path, Path], tmp_path: Path) -> None:
    db, _ = photos
    new = tmp_path / "new_cat.png"
    draw(new, COLOURS["cat"], 4242)
    with Store.open(db) as s:
        with pytest.raises(NotFoundError):
            resolve_image(s.conn, str(new))
    with semsearch_sqlite.open(db) as p:
        tags = p.tags(str(new), 6)
    assert len(tags.hits) == 6
    assert [h.rank for h in tags.hits] == [1, 2, 3, 4, 5, 6]
    assert all(h.word.isalpha() for h in tags.hits)
    # the new photo's most probable class leads (its label), then its kinds (model/sense_tags.py)
    from semsearch_sqlite.media.images import load_image
    from semsearch_sqlite.queries.new_image import embed_image, semantic_vector

    with Store.open(db) as s:
        leading = semantic_vector(s.conn, *embed_image(s.conn, load_image(new))).leading
    assert leading and leading[0][0] == "cat" and tags.hits[0].word == "cat"
    assert [h.word for h in tags.hits] == [w for w, *_ in leading][:6]
    code, out, err = invoke("tags", str(db), str(new), "-k", "6", "--json")
    assert code == 0, err
    assert [h["word"] for h in json.loads(out)["hits"]] == [h.word for h in tags.hits]


def test_upload_gives_neighbours_and_tags(photos: tuple[Path, Path], tmp_path: Path) -> None:
    db, _ = photos
    new = tmp_path / "new_dog.png"
    draw(new, COLOURS["dog"], 777)
    with Store.open(db) as s:
        found = describe_bytes(s.conn, new.read_bytes(), 3, "visual", name="new_dog.png", n_tags=5)
    assert found.similar.hits[0].label == "dog"
    assert found.tags is not None and len(found.tags.hits) == 5


def test_missing_file_still_fails_clearly(photos: tuple[Path, Path]) -> None:
    db, _ = photos
    code, _, err = invoke("tags", str(db), "/nowhere/x.png")
    assert code == 1
    assert err == "Error: no image stored with path '/nowhere/x.png'; list them with: select id, path from images\n"
