"""Near-duplicates: groups of resized/recompressed/cropped copies, from Python, the CLI
and SQL, checked against all pairwise distances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import semsearch_sqlite
from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.queries.duplicates import duplicate_groups, duplicates_of
from semsearch_sqlite.queries.search import space_matrix
from semsearch_sqlite.queries.sqlfuncs import register_functions
from semsearch_sqlite.storage.store import Store

from .helpers import COLOURS, draw

pytestmark = pytest.mark.slow
THRESHOLD = 0.02


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: str) -> Path:
    root = tmp_path_factory.mktemp("dups")
    images = root / "images"
    for label, colour in COLOURS.items():
        for i in range(3):
            draw(images / label / f"{label}_{i}.png", colour, 100 * i + len(label))
        original = Image.open(images / label / f"{label}_0.png")
        original.resize((48, 40)).save(images / label / f"{label}_0_small.png")
        original.save(images / label / f"{label}_0_q30.jpg", quality=30)
    path = root / "d.db"
    ingest(images, path, IngestOptions(backbone=tiny_backbone, workers=1))
    return path


def components(db: Path, threshold: float) -> set[frozenset[int]]:
    """The oracle: every pair's distance, then connected components of size 2+."""
    with Store.open(db) as s:
        m = space_matrix(s.conn, "visual")
        close = 1.0 - m.vectors @ m.vectors.T <= threshold
    n = len(m.ids)
    seen, out = set(), set()
    for start in range(n):
        if start in seen:
            continue
        stack, comp = [start], set()
        while stack:
            i = stack.pop()
            if i in comp:
                continue
            comp.add(i)
            stack.extend(np.flatnonzero(close[i]).tolist())
        seen |= comp
        if len(comp) > 1:
            out.add(frozenset(int(m.ids[i]) for i in comp))
    return out


@pytest.mark.parametrize("threshold", [THRESHOLD, 0.1, 0.3])
def test_groups_are_the_connected_components(db: Path, threshold: float) -> None:
    with Store.open(db) as s:
        groups = duplicate_groups(s.conn, threshold)
    assert {frozenset(i for i, _ in g) for g in groups} == components(db, threshold)
    assert [len(g) for g in groups] == sorted((len(g) for g in groups), reverse=True)
    assert all(g[0][1] == 0 and g[0][0] == min(i for i, _ in g) for g in groups)


def test_copies_group_with_their_original(db: Path) -> None:
    with Store.open(db) as s:
        paths = {i: p for i, p in s.conn.execute("select id, path from images")}
        groups = duplicate_groups(s.conn, THRESHOLD)
        for label in COLOURS:
            copies = {f"{label}/{label}_0.png", f"{label}/{label}_0_small.png", f"{label}/{label}_0_q30.jpg"}
            assert any(copies <= {paths[i] for i, _ in g} for g in groups), label
        one = next(i for i, p in paths.items() if p == "dog/dog_0.png")
        assert {h.path for h in duplicates_of(s.conn, one, THRESHOLD).hits} >= {
            "dog/dog_0_small.png",
            "dog/dog_0_q30.jpg",
        }


def test_cli_json_and_sql(db: Path) -> None:
    r = CliRunner().invoke(cli, ["duplicates", str(db), "--threshold", str(THRESHOLD), "--json"])
    assert r.exit_code == 0, r.output
    groups = json.loads(r.stdout)["groups"]
    with Store.open(db) as s:
        want = duplicate_groups(s.conn, THRESHOLD)
        # the same members as the raw groups; the keeper first (distance 0), the others by distance to it
        assert [{x["image_id"] for x in g["images"]} for g in groups] == [{i for i, _ in g} for g in want]
        assert all(g["images"][0]["keeper"] and g["images"][0]["distance"] == 0 for g in groups)
        assert {"image_id", "path", "label", "distance", "keeper"} <= set(groups[0]["images"][0])
        listed = [[(x["image_id"], x["distance"]) for x in g["images"]] for g in groups]
        register_functions(s.conn)
        rows = s.conn.execute(f"select group_id, image_id, distance from duplicate_images({THRESHOLD})").fetchall()
        assert [[(i, d) for g, i, d in rows if g == n] for n in range(1, len(want) + 1)] == listed
        assert len(s.conn.execute("select * from duplicate_images()").fetchall()) >= len(rows)
        with pytest.raises(Exception, match="threshold must be between 0 and 1"):
            s.conn.execute("select * from duplicate_images(2)").fetchall()
    with semsearch_sqlite.open(db) as photos:
        assert [(h.group, h.image_id, h.distance) for h in photos.duplicates(THRESHOLD).hits] == rows
        with pytest.raises(QueryError, match="threshold must be between 0 and 1"):
            photos.duplicates(0)
    r = CliRunner().invoke(cli, ["duplicates", str(db), "--threshold", "1.5"])
    assert r.exit_code == 2 and "1.5" in r.stderr
