"""evaluate: figures in range, stored as one row, nothing else written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import ProjectionError
from semsearch_sqlite.pipeline.evaluate import evaluate
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.storage.store import Store

from .helpers import make_folder, rows

pytestmark = pytest.mark.slow


def test_evaluate_figures_and_record(tmp_path: Path, tiny_backbone: str) -> None:
    folder = make_folder(tmp_path / "images", per_class=6)
    db = tmp_path / "e.db"
    ingest(folder, db, IngestOptions(backbone=tiny_backbone))
    before = rows(db)
    with Store.open(db) as s:
        figures = evaluate(s, zero_shot=0.34, seed=1)
    assert figures["images"] == 18 and figures["classes"] == 3
    zs = figures["zero_shot"]
    assert len(zs["held_out"]) == 1
    methods = zs["methods"]
    assert set(methods) == {"auto", "conse", "chance"}
    for m in methods.values():
        for key in ("seen_p_at_10", "zero_shot_p_at_10"):
            assert 0.0 <= m[key] <= 1.0
    # chance is the share of each class in the scored pool
    assert methods["chance"]["zero_shot_p_at_10"] == pytest.approx(6 / zs["pool_images"])
    # colour classes drawn distinctly: each image's 5 same-class others fill half its top 10
    assert figures["visual_p_at_10"] == {"car": 0.5, "cat": 0.5, "dog": 0.5}
    after = rows(db)
    assert after["images"] == before["images"] and after["tags"] == before["tags"]
    with Store.open(db) as s:
        stored = s.conn.execute("select settings, figures from evaluations").fetchall()
    assert len(stored) == 1
    assert json.loads(stored[0][0])["zero_shot"] == 0.34
    assert json.loads(stored[0][1])["zero_shot"]["held_out"] == zs["held_out"]


def test_evaluate_cli_table_and_unlabelled_error(tmp_path: Path, tiny_backbone: str) -> None:
    folder = make_folder(tmp_path / "images", per_class=4)
    db = tmp_path / "e.db"
    ingest(folder, db, IngestOptions(backbone=tiny_backbone))
    result = CliRunner().invoke(cli, ["evaluate", str(db), "--no-save"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "12 labelled images, 3 classes"
    assert any(line.startswith("chance") for line in lines)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in folder.rglob("*.png"):
        p.rename(flat / p.name)
    db2 = tmp_path / "u.db"
    ingest(flat, db2, IngestOptions(backbone=tiny_backbone))
    with Store.open(db2) as s, pytest.raises(ProjectionError, match="needs labelled images of at least 2 classes"):
        evaluate(s)
