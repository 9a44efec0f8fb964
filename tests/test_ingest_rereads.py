"""What an ingest re-run reads, and that reading it cheaply changes no outcome: the folder
listing as path strings (discover_paths equals discover), the stored rows compared
through the images_file index (m005), moves and prunes decided from that one read, and
a run with nothing to do that writes nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from semsearch_sqlite.media.files import discover, discover_paths, stat_files
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest
from semsearch_sqlite.storage.store import Store, schema_version

from .helpers import make_folder

# the query ingest compares the folder with (pipeline/ingest.py ``_Run._plan``)
PLAN_SQL = "select path, id, size, mtime, label from images"


def _tree(root: Path, outside: Path) -> None:
    """Image files at several depths, hidden and non-image files, upper-case suffixes,
    a folder named like an image, and symlinks inside, outside and broken."""
    for rel in ("b/2.JPG", "a/z.png", "a/sub/1.webp", "top.tiff", "a/.hidden.png", ".dot/x.png", "a/notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "folder.jpg").mkdir()
    (root / "folder.jpg" / "in.gif").write_bytes(b"x")
    (outside / "o").mkdir(parents=True)
    (outside / "o" / "o.png").write_bytes(b"x")
    (outside / "loose.bmp").write_bytes(b"x")
    (root / "linked").symlink_to(outside / "o", target_is_directory=True)
    (root / "b" / "alias").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "loose.bmp").symlink_to(outside / "loose.bmp")
    (root / "a" / "same.png").symlink_to(root / "a" / "z.png")
    (root / "gone.jpg").symlink_to(root / "deleted.jpg")


@pytest.mark.parametrize("follow_links", [False, True])
def test_discover_paths_lists_what_discover_lists(tmp_path: Path, follow_links: bool) -> None:
    root = tmp_path / "root"
    _tree(root, tmp_path / "outside")
    as_paths = discover(root, follow_links=follow_links)
    as_text = discover_paths(root, follow_links=follow_links)
    assert as_text.files == [str(p) for p in as_paths.files]
    assert as_text.problems == as_paths.problems == [(root / "gone.jpg", "broken symlink")]
    assert as_text.outside_links == as_paths.outside_links
    rels = [os.path.relpath(p, root) for p in as_text.files]
    expected = ["a/same.png", "a/sub/1.webp", "a/z.png", "b/2.JPG", "folder.jpg/in.gif", "top.tiff"]
    if follow_links:
        expected = sorted([*expected, "b/loose.bmp", "linked/o.png"])
        assert as_text.outside_links == []
    else:
        assert as_text.outside_links == [root / "b" / "loose.bmp", root / "linked"]
    assert rels == expected


def test_discover_paths_joins_the_root_as_given(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "c.png").write_bytes(b"x")
    assert discover_paths(f"{tmp_path}/").files == [f"{tmp_path}/cats/c.png"]


def test_stat_files_says_what_os_stat_says_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rel, size in (("a/1.png", 3), ("a/b/2.png", 5), ("c/3.png", 7), ("top.png", 11)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    (tmp_path / "c" / "link.png").symlink_to(tmp_path / "a" / "b" / "2.png")
    (tmp_path / "locked").mkdir(mode=0o000)  # opening it fails: its files are stat-ed by path
    monkeypatch.chdir(tmp_path)
    paths = [
        str(tmp_path / "a" / "1.png"),
        str(tmp_path / "a" / "b" / "2.png"),
        str(tmp_path / "a" / "gone.png"),
        str(tmp_path / "a" / "1.png"),  # a folder met again after another
        str(tmp_path / "c" / "link.png"),
        str(tmp_path / "locked" / "x.png"),
        "top.png",  # no folder part: as given
    ]
    got = list(stat_files(paths))
    for path, st in zip(paths, got):
        try:
            want: os.stat_result | OSError = os.stat(path)
        except OSError as e:
            want = e
        if isinstance(want, OSError):
            assert isinstance(st, type(want)) and st.strerror == want.strerror, path
        else:
            assert isinstance(st, os.stat_result), path
            assert (st.st_ino, st.st_size, st.st_mtime) == (want.st_ino, want.st_size, want.st_mtime), path
    assert [getattr(st, "st_size", None) for st in got] == [3, 5, None, 3, 5, None, 11]
    (tmp_path / "locked").chmod(0o755)


def test_an_older_store_gets_the_file_index_and_ingest_reads_it(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with Store.open(db, create=True) as store:
        # the store as schema 4 left it
        store.conn.execute("drop index images_file")
        store.conn.execute("drop index images_unread")
        store.conn.execute("delete from _sqlite_migrations where name = 'm005_file_index'")
        with store.atomic():
            store.set_meta("schema_version", 4)
    with Store.open(db, create=True) as store:
        assert store.get_meta("schema_version") == schema_version()
        plan = " ".join(r[3] for r in store.conn.execute(f"explain query plan {PLAN_SQL}"))
        assert "COVERING INDEX images_file" in plan
        unread = "select id, path from images where metadata_read_at is null order by id"
        assert "INDEX images_unread" in " ".join(r[3] for r in store.conn.execute(f"explain query plan {unread}"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_rerun_with_nothing_changed_writes_nothing(tmp_path: Path, tiny_backbone: str) -> None:
    folder, db = make_folder(tmp_path / "images"), tmp_path / "p.db"
    ingest(folder, db, IngestOptions(backbone=tiny_backbone, batch_size=4))
    before = (_digest(db), db.stat().st_mtime_ns)
    stats = ingest(folder, db, IngestOptions())
    assert (stats.unchanged, stats.added, stats.updated, stats.moved, stats.removed, stats.embedded) == (
        12,
        0,
        0,
        0,
        0,
        0,
    )
    assert (_digest(db), db.stat().st_mtime_ns) == before
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


@pytest.mark.slow
def test_relabelled_unchanged_files_get_their_new_label(tmp_path: Path, tiny_backbone: str) -> None:
    folder, db = make_folder(tmp_path / "images"), tmp_path / "p.db"
    labels = tmp_path / "labels.csv"
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    labels.write_text("".join(f"{n},{n.split('/')[0]}\n" for n in names))
    ingest(folder, db, IngestOptions(backbone=tiny_backbone, batch_size=4, labels_file=str(labels)))
    labels.write_text("".join(f"{n},{'kitten' if n == 'cat/cat_1.png' else n.split('/')[0]}\n" for n in names))
    stats = ingest(folder, db, IngestOptions(labels_file=str(labels)))
    assert (stats.updated, stats.unchanged, stats.embedded) == (1, 12, 0)
    with Store.open(db) as s:
        got = dict(s.conn.execute("select path, label from images"))
    assert got == {n: ("kitten" if n == "cat/cat_1.png" else n.split("/")[0]) for n in names}


@pytest.mark.slow
def test_a_moved_file_whose_bytes_two_gone_rows_share_keeps_the_newer_row(tmp_path: Path, tiny_backbone: str) -> None:
    folder, db = make_folder(tmp_path / "images"), tmp_path / "p.db"
    shutil.copy(folder / "cat" / "cat_0.png", folder / "cat" / "twin.png")  # same bytes, a later row
    ingest(folder, db, IngestOptions(backbone=tiny_backbone, batch_size=4))
    with Store.open(db) as s:
        ids = dict(s.conn.execute("select path, id from images"))
    assert ids["cat/twin.png"] > ids["cat/cat_0.png"]
    (folder / "pets").mkdir()
    shutil.move(folder / "cat" / "twin.png", folder / "pets" / "twin.png")
    (folder / "cat" / "cat_0.png").unlink()
    (folder / "dog" / "dog_0.png").unlink()
    stats = ingest(folder, db, IngestOptions())
    assert (stats.moved, stats.removed, stats.added, stats.embedded) == (1, 2, 0, 0)
    assert stats.removed_paths == ["cat/cat_0.png", "dog/dog_0.png"]
    with Store.open(db) as s:
        now = dict(s.conn.execute("select path, id from images"))
        assert now["pets/twin.png"] == ids["cat/twin.png"]
        assert s.conn.execute("select label from images where path = 'pets/twin.png'").fetchone() == ("pets",)
    assert set(now) == {p for p in ids if p not in ("cat/twin.png", "cat/cat_0.png", "dog/dog_0.png")} | {
        "pets/twin.png"
    }


@pytest.mark.slow
def test_many_missing_files_are_kept_and_reported_from_the_same_read(tmp_path: Path, tiny_backbone: str) -> None:
    folder, db = make_folder(tmp_path / "images"), tmp_path / "p.db"
    ingest(folder, db, IngestOptions(backbone=tiny_backbone, batch_size=4))
    shutil.rmtree(folder / "car")
    (folder / "dog" / "dog_2.png").unlink()
    missing = [f"car/car_{i}.png" for i in range(4)] + ["dog/dog_2.png"]  # 5 of 12: kept unless --prune
    stats = ingest(folder, db, IngestOptions())
    assert (stats.removed, stats.kept_missing) == (0, missing)
    stats = ingest(folder, db, IngestOptions(prune=True))
    assert stats.removed_paths == missing
    with Store.open(db) as s:
        assert s.conn.execute("select count(*) from images").fetchone() == (7,)
