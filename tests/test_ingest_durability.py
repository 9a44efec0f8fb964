"""Ingest durability: kill -9 at several points, readers during writes, foreign databases,
a full disk. Nothing stored may be lost; a rerun converges."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from semsearch_sqlite.errors import StoreError
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.queries.search import similar_images
from semsearch_sqlite.storage.store import Store

from .helpers import check_consistent, make_folder, rows

pytestmark = pytest.mark.slow

# Runs ingest in a child process that SIGKILLs itself at a chosen point.
CHILD = r"""
import os, signal, sys
from semsearch_sqlite.pipeline import ingest, train
from semsearch_sqlite.storage import store
images, db, backbone, point, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
calls = [0]

def die_on(owner, name, after):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        if not after:
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if after:
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(owner, name, wrapper)

if point == "after_batch":      # batch n committed
    die_on(ingest._Run, "_write_batch", after=True)
elif point == "mid_commit":     # inside batch n's transaction, its vectors written, not committed
    die_on(store.Store, "delete_vectors", after=False)
elif point == "tagging":        # while the word-space refit writes tags
    die_on(train, "write_tags", after=False)
elif point == "words":          # while the vocabulary is written
    die_on(store.Store, "write_vectors", after=True)
ingest.ingest(images, db, ingest.IngestOptions(backbone=backbone, batch_size=3))
print("finished without being killed")
"""

KILL_POINTS = [("words", 2), ("after_batch", 1), ("after_batch", 3), ("mid_commit", 2), ("tagging", 1)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: str) -> tuple[Path, dict[str, object]]:
    folder = make_folder(tmp_path_factory.mktemp("ref") / "images")
    db = folder.parent / "ref.db"
    ingest(folder, db, IngestOptions(backbone=tiny_backbone, batch_size=3))
    return folder, rows(db)


@pytest.mark.parametrize("point, n", KILL_POINTS)
def test_kill_9_then_rerun_converges(
    point: str, n: int, tmp_path: Path, tiny_backbone: str, reference: tuple[Path, dict[str, object]]
) -> None:
    folder, expected = reference
    db = tmp_path / "k.db"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(db), tiny_backbone, point, str(n)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    check_consistent(db)
    ingest(folder, db, IngestOptions(backbone=tiny_backbone, batch_size=3))  # the same command again
    check_consistent(db)
    got = rows(db)
    assert got["images"] == expected["images"]
    assert got["files"] == expected["files"]
    for space in ("visual", "semantic"):
        assert np.array_equal(got[space][0], expected[space][0])
        assert np.allclose(got[space][1], expected[space][1], atol=1e-4)
    assert got["tags"] == expected["tags"]


def test_readers_keep_answering_while_ingest_writes(tmp_path: Path, tiny_backbone: str) -> None:
    folder = make_folder(tmp_path / "images", per_class=8)
    db = tmp_path / "c.db"
    small = make_folder(tmp_path / "small", per_class=1)
    ingest(small, db, IngestOptions(backbone=tiny_backbone))
    errors: list[BaseException] = []
    answers = [0]
    done = threading.Event()

    def reader() -> None:
        with Store.open(db, readonly=True) as s:
            while not done.is_set():
                try:
                    similar_images(s.conn, "cat", 3)
                    answers[0] += 1
                except BaseException as e:  # noqa: BLE001 - collected, asserted below
                    errors.append(e)
                    return

    t = threading.Thread(target=reader)
    t.start()
    try:
        ingest(folder, db, IngestOptions(batch_size=2))
    finally:
        done.set()
        t.join()
    assert errors == []
    assert answers[0] > 0
    check_consistent(db)


def test_plain_sqlite_and_non_sqlite_files_are_untouched(tmp_path: Path, tiny_backbone: str) -> None:
    folder = make_folder(tmp_path / "images", per_class=1)
    plain = tmp_path / "plain.db"
    conn = sqlite3.connect(plain)
    conn.execute("create table t (x)")
    conn.commit()
    conn.close()
    text = tmp_path / "notes.db"
    text.write_bytes(b"just some bytes\n" * 10)
    for path in (plain, text):
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(StoreError):
            ingest(folder, path, IngestOptions(backbone=tiny_backbone))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_disk_full_is_a_clear_error_and_keeps_what_was_stored(
    tmp_path: Path, tiny_backbone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semsearch_sqlite.storage import store

    folder = make_folder(tmp_path / "images", per_class=1)
    db = tmp_path / "full.db"
    ingest(folder, db, IngestOptions(backbone=tiny_backbone))
    before = rows(db)
    make_folder(tmp_path / "images", per_class=12)
    connect = store.connect

    def capped(path: object, **kw: object) -> sqlite3.Connection:
        conn = connect(path, **kw)  # type: ignore[arg-type]
        pages = conn.execute("pragma page_count").fetchone()[0]
        conn.execute(f"pragma max_page_count = {pages + 1}")  # SQLite's own "disk is full"
        return conn

    monkeypatch.setattr(store, "connect", capped)
    with pytest.raises(StoreError, match=r"full.db: database or disk is full; free some disk space and run the same"):
        ingest(folder, db, IngestOptions(batch_size=2))
    monkeypatch.undo()
    check_consistent(db)
    after = rows(db)
    assert set(after["images"]) >= set(before["images"])
