"""The built-in backbones run by LiteRT: features equal to the Keras model's on real
photos, the converted model cached and reused, and Keras kept whenever LiteRT can't be
had (asked not to, random weights, a conversion that fails)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semsearch_sqlite.model.cnn import KerasBackbone, build_keras_backbone, load_backbone
from semsearch_sqlite.model.litert import CACHE_ENV, RUNTIME_ENV, cache_dir

PHOTOS = Path("/work/shared/data/caltech101-dev")


def real_photos(n: int = 6) -> list[Image.Image]:
    files = sorted(p for p in PHOTOS.rglob("*.jpg"))
    if not files:
        pytest.skip(f"no photos in {PHOTOS}")
    step = max(1, len(files) // n)  # spread over the labels
    return [Image.open(p) for p in files[::step][:n]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for the module: EfficientNet-Lite0 is converted once (~15 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("litert") / "cache"))
        mp.delenv(RUNTIME_ENV, raising=False)
        yield cache_dir()


@pytest.mark.slow
def test_efficientnet_features_from_litert_equal_keras_on_real_photos(cache: Path, monkeypatch) -> None:
    lite = load_backbone("efficientnet-lite0")
    assert isinstance(lite, KerasBackbone) and lite.runtime == "litert"
    assert lite.provenance()["runtime"] == "litert"
    cached = sorted(cache.glob("*.tflite"))
    assert len(cached) == 1 and cached[0].stat().st_size > 10_000_000  # 4.7M float32 weights
    monkeypatch.setenv(RUNTIME_ENV, "keras")
    ref = load_backbone("efficientnet-lite0")
    assert ref.runtime == "keras"  # type: ignore[attr-defined]
    batch = ref.preprocess(real_photos())
    want_f, want_p = ref.predict(batch)
    got_f, got_p = lite.predict(batch)
    assert got_f.shape == want_f.shape == (len(batch), 1280) and got_p is not None and want_p is not None
    # float32 rounding: the two runtimes sum in different orders
    scale = float(np.abs(want_f).max())
    assert np.abs(got_f - want_f).max() <= 1e-5 * scale
    assert np.abs(got_p - want_p).max() <= 1e-5
    assert (got_p.argmax(axis=1) == want_p.argmax(axis=1)).all()
    # a short batch and an empty one, as ingest's last batch may be
    assert np.allclose(lite.predict(batch[:1])[0], got_f[:1], atol=1e-6 * scale)
    assert lite.predict(batch[:0])[0].shape == (0, 1280)


@pytest.mark.slow
def test_the_converted_model_is_cached_and_a_broken_cache_file_is_replaced(cache: Path) -> None:
    first = load_backbone("efficientnet-lite0")
    (path,) = cache.glob("*.tflite")
    stamp = path.stat().st_mtime_ns
    again = load_backbone("efficientnet-lite0")
    assert again.runtime == "litert" and path.stat().st_mtime_ns == stamp  # type: ignore[attr-defined]
    x = first.preprocess(real_photos(2))
    want = first.predict(x)[0]
    assert np.allclose(again.predict(x)[0], want, rtol=0, atol=1e-6 * float(np.abs(want).max()))
    path.write_bytes(b"not a flatbuffer")  # a half-written or foreign file
    healed = load_backbone("efficientnet-lite0")
    assert healed.runtime == "litert" and path.stat().st_size > 10_000_000  # type: ignore[attr-defined]
    assert np.allclose(healed.predict(x)[0], want, rtol=0, atol=1e-6 * float(np.abs(want).max()))


@pytest.mark.slow
def test_keras_is_kept_when_asked_and_for_random_weights(cache: Path, monkeypatch) -> None:
    before = sorted(cache.glob("*")) if cache.exists() else []
    assert load_backbone("efficientnet-lite0", weights="none").runtime == "keras"  # type: ignore[attr-defined]
    monkeypatch.setenv(RUNTIME_ENV, "keras")
    assert load_backbone("efficientnet-lite0").runtime == "keras"  # type: ignore[attr-defined]
    assert (sorted(cache.glob("*")) if cache.exists() else []) == before  # nothing converted


@pytest.mark.slow
def test_a_model_litert_cannot_convert_stays_on_keras(cache: Path, monkeypatch) -> None:
    import keras

    monkeypatch.setenv(RUNTIME_ENV, "litert")  # convert even without a weights hash
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # an op outside TFLite's builtin set: the conversion fails
    x = keras.layers.Lambda(lambda t: keras.ops.linalg.svd(keras.ops.reshape(t, (-1, 2, 2)))[1], name="svd")(x)
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, keras.layers.Dense(1000, activation="softmax", name="predictions")(x))
    backbone = build_keras_backbone(model, "flat")
    assert backbone.use_litert() is False and backbone.runtime == "keras"
    features, probs = backbone.predict(np.zeros((2, 16, 16, 3), np.float32))
    assert features.shape == (2, 2) and probs is not None and probs.shape == (2, 1000)
