"""Helpers several test modules share (image drawing, vector data, database states,
Datasette requests); fixtures live in conftest.py."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from datasette.app import Datasette
from PIL import Image, ImageDraw

from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL
from semsearch_sqlite.vectors import ivf, matrix

# -- drawn photos in labelled folders, and what an ingest stored -----------------------------------


COLOURS = {"cat": (200, 60, 40), "dog": (40, 160, 60), "car": (40, 60, 200)}
DATED_PHOTOS_PER_LABEL = 5  # the dated_photos_db fixture


def draw(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (96, 80), tuple(int(c * 0.3) for c in colour))
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x, y = rng.integers(0, 70), rng.integers(0, 55)
        d.ellipse([x, y, x + 25, y + 22], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_folder(root: Path, per_class: int = 4) -> Path:
    for label, colour in COLOURS.items():
        for i in range(per_class):
            draw(root / label / f"{label}_{i}.png", colour, hash((label, i)) % 1000)
    return root


def rows(db: Path) -> dict[str, object]:
    """Everything an ingest writes, in comparable form."""
    with Store.open(db) as s:
        c = s.conn
        images = c.execute("select id, path, label, sha256, width, height from images order by id").fetchall()
        visual = s.read_vectors(VEC_VISUAL)
        semantic = s.read_vectors(VEC_SEMANTIC)
        tags = c.execute("select image_id, rank, word from tags order by image_id, rank").fetchall()
        files = c.execute("select image_id, length(display) > 0 from image_files order by image_id").fetchall()
    return {"images": images, "visual": visual, "semantic": semantic, "tags": tags, "files": files}


# -- photos with EXIF ------------------------------------------------------------------------------


def photo(
    path: Path,
    colour: tuple[int, int, int] = (100, 150, 200),
    *,
    make: Any = "Canon",
    model: Any = "Canon EOS 5D",
    original: Any = "2019:07:04 12:30:05",
    offset: Any = "+02:00",
    datetime: Any = "2020:01:02 03:04:05",
    lens: Any = "EF 50mm f/1.8",
    gps: dict[int, Any] | None = None,
) -> Path:
    """A JPEG with real EXIF; ``None`` leaves a tag out."""
    img = Image.new("RGB", (64, 48), colour)
    exif = Image.Exif()
    for tag, value in ((271, make), (272, model), (306, datetime)):
        if value is not None:
            exif[tag] = value
    sub = exif.get_ifd(0x8769)
    for tag, value in ((36867, original), (36881, offset), (42036, lens)):
        if value is not None:
            sub[tag] = value
    g = exif.get_ifd(0x8825)
    for tag, value in (gps if gps is not None else SYDNEY).items():
        g[tag] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif)
    return path


SYDNEY = {1: "S", 2: (33.0, 51.0, 54.0), 3: "E", 4: (151.0, 12.0, 36.0)}


# -- vector data and vector tables -----------------------------------------------------------------


def structured(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Topics, sub-clusters, a low-dimensional continuum and noise (like the benchmark)."""
    rng = np.random.default_rng(seed)
    topics, subs = 12, max(16, n // 150)
    t = rng.standard_normal((topics, d))
    s = 0.9 * rng.standard_normal((subs, d))
    basis = 0.5 * rng.standard_normal((topics, 4, d))
    sub = rng.integers(0, subs, n)
    tp = rng.integers(0, topics, subs)[sub]
    z = rng.standard_normal((n, 4))
    x = t[tp] + s[sub] + np.einsum("nl,nld->nd", z, basis[tp]) + 0.7 * rng.standard_normal((n, d))
    return x.astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def ivf_matrix(x: np.ndarray, ids: np.ndarray | None = None) -> matrix.Matrix:
    """A Matrix with a trained IVF matrix, built in memory as refresh_index does."""
    x = unit(x)
    ids = np.arange(1, len(x) + 1, dtype=np.int64) if ids is None else ids
    trained = ivf.train(x)
    order, offsets = ivf.layout(trained.labels, len(trained.centroids))
    return matrix.Matrix(
        ids[order],
        x[order],
        matrix.Positions(ids[order]),
        ivf.IVF(trained.centroids, offsets, trained.nprobe, trained.config),
    )


def make_db(path: Path, x: np.ndarray, table: str = VEC_VISUAL, ids: np.ndarray | None = None) -> Store:
    store = Store.open(path, create=True)
    ids = np.arange(1, len(x) + 1) if ids is None else ids
    with store.atomic():
        store.ensure_vec_table(table, x.shape[1])
        store.write_vectors(table, ids.tolist(), x)
        store.bump_generation()
    return store


def write(store: Store, table: str, ids: list[int], x: np.ndarray) -> None:
    with store.atomic():
        store.write_vectors(table, ids, x)
        store.bump_generation()


def file_state(path: Path) -> tuple[str, int, int]:
    """The database file's digest and mtime, and how many bytes its WAL holds (a WAL
    reader may create an empty -wal/-shm pair: that is SQLite, not a write)."""
    wal = Path(str(path) + "-wal")
    return (
        hashlib.sha256(path.read_bytes()).hexdigest(),
        os.stat(path).st_mtime_ns,
        wal.stat().st_size if wal.exists() else 0,
    )


# -- a database's consistency after a crash --------------------------------------------------------


def check_consistent(db: Path) -> None:
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.close()
    with Store.open(db) as s:
        c = s.conn
        ids = {i for (i,) in c.execute("select id from images")}
        if s.vec_dim(VEC_VISUAL):
            visual = {i for (i,) in c.execute(f"select image_id from {VEC_VISUAL}")}
            assert visual == ids, "every image row has its visual vector and vice versa"
        files = {i for (i,) in c.execute("select image_id from image_files")}
        assert files == ids
        if s.vec_dim(VEC_SEMANTIC):
            semantic = {i for (i,) in c.execute(f"select image_id from {VEC_SEMANTIC}")}
            assert semantic <= ids


# -- Datasette on 0.65 and 1.0a --------------------------------------------------------------------


IS_1_0 = hasattr(Datasette, "allowed")


def make_ds(db: str, config: dict[str, Any] | None = None, **kwargs: Any) -> Datasette:
    """A Datasette on ``db``; ``config`` (allow blocks) is metadata on 0.65, config on 1.0a."""
    if config is not None:
        kwargs["config" if IS_1_0 else "metadata"] = config
    return Datasette([db], **kwargs)


async def get(ds: Datasette, path: str, **kwargs: Any) -> Any:
    await ds.invoke_startup()
    return await ds.client.get(path, follow_redirects=True, **kwargs)


def root_cookies(ds: Datasette) -> dict[str, str]:
    return {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}


# a private database, a private instance, a private images table
PRIVATE_CONFIGS = [
    {"databases": {"photos": {"allow": False}}},
    {"allow": {"id": "root"}},
    {"databases": {"photos": {"tables": {"images": {"allow": {"id": "root"}}}}}},
]


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def relu_structured(n: int, d: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Non-negative like CNN features (about 70% zeros), times ``scale``."""
    x = structured(n, d, seed)
    return (scale * np.maximum(x - np.quantile(x[:500], 0.7), 0)).astype(np.float32)
