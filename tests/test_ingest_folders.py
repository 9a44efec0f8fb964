"""A collection of several folders (issue #25, 3): ingesting another folder adds to the
collection; only rows under the folder being ingested are ever removed; a run that
would remove a large share keeps them and says how to proceed; every removal is
listed. And a first ingest that fails before any photo is stored leaves no file (#26)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semsearch_sqlite.cli import cli

pytestmark = pytest.mark.slow


def photos(folder: Path, labels: dict[str, int], seed: int = 0) -> Path:
    """Real PNG files: ``labels`` maps a label folder to how many photos it holds."""
    rng = np.random.default_rng(seed)
    for label, n in labels.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{label}_{i}.png")
    return folder


def ingest(folder: Path, db: Path, backbone: str, *extra: str) -> Any:
    return CliRunner().invoke(
        cli,
        ["ingest", str(folder), str(db), "--backbone", backbone, "--vocab-size", "2000", *extra],
        catch_exceptions=False,
    )


def stored(db: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("select path, label from images order by path").fetchall()


def test_two_folders_make_one_collection(tmp_path: Path, tiny_backbone: str) -> None:
    y2023 = photos(tmp_path / "Photos" / "2023", {"cat": 3, "dog": 3})
    y2024 = photos(tmp_path / "Photos" / "2024", {"car": 2}, seed=1)
    db = tmp_path / "photos.db"
    assert ingest(y2023, db, tiny_backbone).exit_code == 0
    second = ingest(y2024, db, tiny_backbone)
    assert second.exit_code == 0, second.output
    assert "0 removed" in second.output and "Removed" not in second.output
    assert stored(db) == sorted(
        [(f"2023/cat/cat_{i}.png", "cat") for i in range(3)]
        + [(f"2023/dog/dog_{i}.png", "dog") for i in range(3)]
        + [(f"2024/car/car_{i}.png", "car") for i in range(2)]
    )
    # a re-run of either folder changes nothing
    again = ingest(y2023, db, tiny_backbone)
    assert "0 added, 0 updated, 0 moved, 6 unchanged, 0 removed" in again.output
    # pruning is limited to the folder ingested, and every removal is listed
    (y2024 / "car" / "car_1.png").unlink()
    pruned = ingest(y2024, db, tiny_backbone)
    assert pruned.exit_code == 0, pruned.output
    assert "Removed 2024/car/car_1.png" in pruned.output and "1 removed" in pruned.output
    assert len(stored(db)) == 7
    # searches and paths work across both folders
    result = CliRunner().invoke(cli, ["similar", str(db), "2024/car/car_0.png", "-k", "7"])
    assert result.exit_code == 0 and "2023/dog/dog_0.png" in result.output


def test_a_sub_folder_keeps_the_rest(tmp_path: Path, tiny_backbone: str) -> None:
    """The issue's repro: `ingest caltech101-dev/pizza dev.db` removed 760 of 800."""
    images = photos(tmp_path / "images", {"pizza": 3, "cat": 4, "dog": 4})
    db = tmp_path / "photos.db"
    assert ingest(images, db, tiny_backbone).exit_code == 0
    before = stored(db)
    result = ingest(images / "pizza", db, tiny_backbone)
    assert result.exit_code == 0, result.output
    assert "0 added, 0 updated, 0 moved, 3 unchanged, 0 removed" in result.output
    assert stored(db) == before  # labels too


def test_removing_a_large_share_asks_for_prune(tmp_path: Path, tiny_backbone: str) -> None:
    images = photos(tmp_path / "images", {"cat": 4, "dog": 4, "car": 4})
    db = tmp_path / "photos.db"
    assert ingest(images, db, tiny_backbone).exit_code == 0
    shutil.rmtree(images / "dog")
    shutil.rmtree(images / "car")
    result = ingest(images, db, tiny_backbone)
    assert result.exit_code == 1
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(f"Error: 8 stored photos under {images} are missing from it (car/car_0.png, ")
    assert "--prune" in error and "--no-prune" in error
    assert len(stored(db)) == 12
    pruned = ingest(images, db, tiny_backbone, "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.count("Removed ") == 8 and "8 removed" in pruned.output
    assert stored(db) == [(f"cat/cat_{i}.png", "cat") for i in range(4)]


def test_failed_first_ingest_leaves_no_file(tmp_path: Path, tiny_backbone: str) -> None:
    images = photos(tmp_path / "images", {"cat": 2})
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a keras file")
    db = tmp_path / "new.db"
    result = ingest(images, db, str(broken))
    assert result.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.keras", "images"]
    # a database that already holds photos keeps them when a later run fails
    good = tmp_path / "good.db"
    assert ingest(images, good, tiny_backbone).exit_code == 0
    photos(images, {"dog": 1})
    assert ingest(images, good, str(broken), "--rebuild").exit_code == 1
    assert good.exists()
