"""Shared fixtures: real GloVe vectors, real SQLite files with sqlite-vec."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from semsearch_sqlite.pipeline.train import refresh_vocabulary
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.text.glove import WordVectors, load_word_vectors


@pytest.fixture(scope="session", autouse=True)
def litert_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted LiteRT models go to a folder of this test session, not the user's cache
    (subprocesses of the tests inherit it)."""
    folder = Path(os.environ.get("SEMSEARCH_CACHE_DIR") or tmp_path_factory.mktemp("litert-cache"))
    os.environ["SEMSEARCH_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def glove() -> WordVectors:
    """All 400,000 words of the bundled glove.6B.50d."""
    return load_word_vectors()


@pytest.fixture(scope="session")
def words_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database holding only the default vocabulary (50,000 words)."""
    path = tmp_path_factory.mktemp("words") / "words.db"
    with Store.open(path, create=True) as store:
        refresh_vocabulary(store)
    return str(path)


# -- a real photo database for the Datasette plugin (tests/test_plugin.py, test_browser.py) --

# label folder -> (background colour, shape colour); the label words are real GloVe words
PLUGIN_PHOTO_LABELS = {
    "cat": ((214, 140, 60), (90, 50, 20)),
    "dog": ((70, 90, 200), (230, 230, 240)),
    "car": ((200, 30, 40), (30, 30, 30)),
    "sofa": ((40, 150, 70), (240, 220, 120)),
    "<script>alert(1)<script> dog": ((110, 110, 110), (250, 250, 250)),
}
PLUGIN_PHOTOS_PER_LABEL = 3
# file names that must come out HTML-escaped on every page
PLUGIN_EVIL_FILE = "<script>alert(1)<script>.png"
PLUGIN_EVIL_LABEL = "<script>alert(1)<script> dog"


def _plugin_photo(background: tuple[int, int, int], ink: tuple[int, int, int], n: int) -> Any:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (160 + 20 * n, 120), background)
    draw = ImageDraw.Draw(img)
    draw.ellipse((20 + 10 * n, 15, 110 + 10 * n, 105), fill=ink)
    draw.rectangle((5, 5, 25 + 8 * n, 20), fill=tuple(255 - c for c in ink))
    return img


def _plugin_backbone(path: Path) -> None:
    """A tiny real Keras CNN with a 1000-class softmax head (random, seeded weights)."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((48, 48, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
    keras.Model(inputs, x, name="tiny_cnn").save(path)


@pytest.fixture(scope="session")
def plugin_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A database made by the real ingest pipeline: 15 drawn photos in 5 labelled
    folders (one label and one file name contain ``<script>``), embedded with a tiny
    real Keras CNN saved as a .keras file.

    Returns ``{"db": path, "images": folder, "backbone": .keras path, "labels": {...},
    "evil_file": ..., "evil_label": ...}``.
    """
    from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest

    root = tmp_path_factory.mktemp("plugin")
    images = root / "images"
    for label, (background, ink) in PLUGIN_PHOTO_LABELS.items():
        folder = images / label
        folder.mkdir(parents=True)
        for n in range(PLUGIN_PHOTOS_PER_LABEL):
            name = PLUGIN_EVIL_FILE if (label == "cat" and n == 0) else f"{label.split()[-1]}{n}.png"
            _plugin_photo(background, ink, n).save(folder / name)
    backbone = root / "tiny_cnn.keras"
    _plugin_backbone(backbone)
    db = root / "photos.db"
    stats = ingest(images, db, IngestOptions(backbone=str(backbone), vocab_size=20000, workers=1))
    assert stats.added == len(PLUGIN_PHOTO_LABELS) * PLUGIN_PHOTOS_PER_LABEL, stats.problems
    return {
        "db": str(db),
        "images": str(images),
        "backbone": str(backbone),
        "labels": PLUGIN_PHOTO_LABELS,
        "evil_file": PLUGIN_EVIL_FILE,
        "evil_label": PLUGIN_EVIL_LABEL,
    }


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real, small Keras CNN (random weights, fixed seed) saved as a .keras file:
    32x32 input, 32-d post-ReLU features ("fc"), 1000-class softmax head."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
    path = tmp_path_factory.mktemp("backbone") / "tiny.keras"
    keras.Model(inputs, outputs, name="tiny").save(path)
    return str(path)


@pytest.fixture
def photos_copy(plugin_photos: dict[str, Any], tmp_path: Path) -> Path:
    """A private copy of the plugin's photo database (tests that change it)."""
    target = tmp_path / "photos.db"
    with closing(sqlite3.connect(plugin_photos["db"])) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


@pytest.fixture
def datasette() -> Any:
    """Makes real Datasette instances; their SQL threads, and so their connections, end
    with the test (not at some later garbage collection, mid-way through another test)."""
    from datasette.app import Datasette

    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        made.append(Datasette(*args, **kwargs))
        return made[-1]

    yield make
    for ds in made:
        if ds.executor is not None:
            ds.executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def dated_photos_db(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: str) -> Path:
    """A database from the real ingest of 15 JPEGs with EXIF dates (2016 to 2020), five
    shades each of the three COLOURS labels (one per test module: some modules write to it)."""
    from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest

    from .helpers import COLOURS, DATED_PHOTOS_PER_LABEL, photo

    root = tmp_path_factory.mktemp("filters")
    for label, colour in COLOURS.items():
        for i in range(DATED_PHOTOS_PER_LABEL):
            shade = tuple(max(0, min(255, c + 25 * i - 50)) for c in colour)
            photo(root / "images" / label / f"{label}_{i}.jpg", shade, original=f"{2016 + i}:06:01 10:00:00")
    path = root / "f.db"
    ingest(root / "images", path, IngestOptions(backbone=tiny_backbone, workers=1))
    return path


@pytest.fixture
def fresh_matrix_cache() -> Any:
    """An empty process cache of search matrices before and after the test."""
    from semsearch_sqlite.vectors import matrix

    matrix.clear_cache()
    yield
    matrix.clear_cache()
