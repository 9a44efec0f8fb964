"""Backbones on real weights and real photos: EfficientNet-Lite0 against PyTorch reference
logits, VGG16's architecture (random weights; ImageNet ones can't be downloaded here),
TFLite ImageNet models, and small Keras models built in the test."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from semsearch_sqlite.errors import BackboneError
from semsearch_sqlite.model.cnn import OFFLINE_ENV, Backbone, build_keras_backbone, load_backbone, vgg16_cached_weights

pytestmark = pytest.mark.slow

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat

# Top-5 (class, logit) of efficientnet-lite0 in PyTorch (efficientnet-lite-pytorch 0.1.0,
# torch 2.13.0 CPU, the same .pth) on this module's preprocessing of each photo: bicubic
# resize of the whole image to 224x224, (x - 127) / 128. Computed once outside the tests.
TORCH_TOP5 = {
    "chelsea": [(285, 10.4701), (282, 8.4424), (281, 8.1629), (287, 6.2624), (728, 4.1418)],
    "coffee": [(967, 10.8158), (968, 7.5732), (504, 6.5631), (925, 6.2197), (809, 5.7076)],
    "astronaut": [(450, 6.7813), (560, 6.6142), (573, 5.3631), (422, 4.7827), (830, 4.7672)],
}


def _photo(name: str) -> Image.Image:
    """A real photo bundled with scikit-image (a test dependency)."""
    skdata = pytest.importorskip("skimage.data")
    return Image.fromarray(getattr(skdata, name)())


def _logits(backbone: Backbone, features: np.ndarray) -> np.ndarray:
    head = backbone.classifier_weights()
    assert head is not None
    return features @ head[0] + head[1]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="session")
def effnet() -> Backbone:
    return load_backbone("efficientnet-lite0")


@pytest.fixture(scope="module")
def effnet_outputs(effnet: Backbone) -> tuple[np.ndarray, np.ndarray]:
    return effnet.predict(effnet.preprocess([_photo(n) for n in TORCH_TOP5]))


def test_efficientnet_lite0_describes_itself(effnet: Backbone) -> None:
    assert (effnet.name, effnet.dim, effnet.input_size, effnet.layer) == (
        "efficientnet-lite0",
        1280,
        (224, 224),
        "avg_pool",
    )
    assert effnet.weights_sha256 == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert "(x - 127) / 128" in effnet.preprocessing and "bicubic" in effnet.preprocessing
    prov = effnet.provenance()
    assert prov["weights_sha256"] == effnet.weights_sha256 and prov["imagenet_classes"] is True
    batch = effnet.preprocess([Image.new("RGB", (10, 30), (255, 127, 0)), Image.new("L", (5, 5), 0)])
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.float32
    assert batch[0, 100, 100].tolist() == [1.0, 0.0, -127 / 128]
    assert np.all(batch[1] == -127 / 128)


def test_efficientnet_lite0_finds_the_cat(effnet_outputs: tuple[np.ndarray, np.ndarray]) -> None:
    features, probs = effnet_outputs
    assert features.shape == (3, 1280) and probs.shape == (3, 1000)
    assert features.dtype == np.float32 and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(np.argsort(-probs[0])[:3].tolist()) & CAT_CLASSES
    assert int(np.argmax(probs[1])) == 967  # espresso


def test_efficientnet_lite0_matches_pytorch(effnet: Backbone, effnet_outputs: tuple[np.ndarray, np.ndarray]) -> None:
    features, probs = effnet_outputs
    logits = _logits(effnet, features)
    for row, expected in zip(logits, TORCH_TOP5.values()):
        assert np.argsort(-row)[:5].tolist() == [c for c, _ in expected]
        assert np.allclose(row[[c for c, _ in expected]], [v for _, v in expected], atol=2e-3)
    # the classifier maps the returned features to the returned probabilities
    assert np.allclose(_softmax(logits), probs, atol=1e-5)


def test_efficientnet_lite0_random_weights_and_bad_weights(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="no such weights file"):
        load_backbone("efficientnet-lite0", weights=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(BackboneError, match="junk.pth"):
        load_backbone("efficientnet-lite0", weights=str(junk))


# ---------------------------------------------------------------- VGG16


@pytest.fixture(scope="module")
def vgg16_random() -> Backbone:
    return load_backbone("vgg16", weights="none")


def test_vgg16_architecture_with_random_weights(vgg16_random: Backbone) -> None:
    import keras

    bb = vgg16_random
    assert (bb.name, bb.dim, bb.layer, bb.input_size, bb.weights_sha256) == ("vgg16", 4096, "fc2", (224, 224), None)
    images = [_photo("chelsea"), Image.new("RGBA", (40, 90), (0, 0, 0, 0))]
    batch = bb.preprocess(images)
    resized = np.stack(
        [
            np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR), np.float32)
            for im in [images[0], Image.new("RGB", (40, 90), (255, 255, 255))]
        ]
    )
    assert np.allclose(batch, keras.applications.vgg16.preprocess_input(resized), atol=1e-4)
    features, probs = bb.predict(batch)
    assert features.shape == (2, 4096) and features.min() >= 0.0  # fc2 is post-ReLU
    assert probs is not None and probs.shape == (2, 1000)
    kernel, bias = bb.classifier_weights() or (None, None)
    assert kernel.shape == (4096, 1000) and bias.shape == (1000,)
    assert np.allclose(_softmax(features @ kernel + bias), probs, atol=1e-5)


def test_vgg16_imagenet_offline_names_the_fixes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_ENV, "1")
    if vgg16_cached_weights() is not None:
        pytest.skip("VGG16 weights are cached in /tmp/.keras")
    with pytest.raises(BackboneError) as info:
        load_backbone("vgg16")
    message = str(info.value)
    assert "--weights PATH" in message and "--backbone efficientnet-lite0" in message and "\n" not in message


def test_vgg16_imagenet_download_failure_is_a_backbone_error() -> None:
    if vgg16_cached_weights() is not None:
        pytest.skip("VGG16 weights are cached here")
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
    except OSError:
        pass
    else:
        pytest.skip("this machine is online; the test would download 528 MB")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        with pytest.raises(BackboneError, match=r"cannot download .*--weights PATH.*efficientnet-lite0"):
            load_backbone("vgg16", weights="imagenet")
    finally:
        socket.setdefaulttimeout(old)


def test_unknown_backbones_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="unknown backbone 'resnet9'"):
        load_backbone("resnet9")
    with pytest.raises(BackboneError, match="no such weights file"):
        load_backbone("vgg16", weights=str(tmp_path / "nope.h5"))
    with pytest.raises(BackboneError, match="no such Keras model file"):
        load_backbone(str(tmp_path / "nope.keras"))
    with pytest.raises(BackboneError, match="no such TFLite model file"):
        load_backbone(str(tmp_path / "nope.tflite"))


# ---------------------------------------------------------------- TFLite


def test_tflite_tiny_mobilenet_features_and_probs() -> None:
    bb = load_backbone(str(MODELS / "mobilenet_v1_0.25_128_quant.tflite"))
    assert bb.input_size == (128, 128) and bb.dim == 256
    assert bb.layer == "MobilenetV1/Logits/AvgPool_1a/AvgPool"
    assert bb.classifier_weights() is None and bb.weights_sha256 and len(bb.weights_sha256) == 64
    batch = bb.preprocess([_photo("coffee"), _photo("rocket")])
    assert batch.shape == (2, 128, 128, 3) and batch.max() > 200  # raw pixels for a uint8 model
    features, probs = bb.predict(batch)
    assert features.shape == (2, 256) and features.min() >= 0.0 and features.std() > 0
    assert probs is not None and probs.shape == (2, 1000)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    named = load_backbone(str(MODELS / "mobilenet_v1_0.25_128_quant.tflite"), layer=bb.layer)
    assert np.allclose(named.predict(batch)[0], features)
    with pytest.raises(BackboneError, match="no tensor named 'nope'"):
        load_backbone(str(MODELS / "mobilenet_v1_0.25_128_quant.tflite"), layer="nope")


def test_tflite_mobilenet_v2_sees_the_cat() -> None:
    bb = load_backbone(str(MODELS / "mobilenet_v2_1.0_224_quant.tflite"))
    assert bb.dim == 1280
    features, probs = bb.predict(bb.preprocess([_photo("chelsea")]))
    assert probs is not None
    assert set(np.argsort(-probs[0])[:5].tolist()) & CAT_CLASSES


def test_tflite_embedding_extractor_has_no_probs() -> None:
    bb = load_backbone(str(MODELS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    features, probs = bb.predict(bb.preprocess([_photo("camera")]))
    assert features.shape == (1, 1024) and probs is None


# ---------------------------------------------------------------- Keras models


def _small_model(classes: int = 1000, softmax: bool = True) -> Any:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(classes, activation="softmax" if softmax else None, name="head")(x)
    return keras.Model(inputs, x, name="small")


def test_build_keras_backbone_defaults_to_the_classifier_input() -> None:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(1)
    bb = build_keras_backbone(_small_model())
    assert (bb.layer, bb.dim, bb.input_size) == ("pool", 8, (32, 32))
    batch = bb.preprocess([_photo("astronaut"), _photo("coffee")])
    features, probs = bb.predict(batch)
    assert features.shape == (2, 8) and probs is not None and probs.shape == (2, 1000)
    assert np.allclose(_softmax(_logits(bb, features)), probs, atol=1e-5)
    conv = build_keras_backbone(_small_model(), layer="conv")  # feature maps are pooled
    assert conv.dim == 8 and conv.classifier_weights() is None
    with pytest.raises(BackboneError, match="no layer 'nope'"):
        build_keras_backbone(_small_model(), layer="nope")


def test_keras_file_with_1001_logits_drops_the_background(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(2)
    path = tmp_path / "m.keras"
    _small_model(1001, softmax=False).save(path)
    bb = load_backbone(str(path))
    assert bb.name == str(path.resolve()) and bb.weights_sha256 and bb.layer == "pool"
    features, probs = bb.predict(bb.preprocess([_photo("chelsea")]))
    kernel, bias = bb.classifier_weights() or (None, None)
    assert kernel.shape == (8, 1000) and probs is not None and probs.shape == (1, 1000)
    assert np.allclose(_softmax(features @ kernel + bias), probs, atol=1e-5)
    empty_features, empty_probs = bb.predict(np.zeros((0, 32, 32, 3), np.float32))
    assert empty_features.shape == (0, 8) and empty_probs is not None and empty_probs.shape == (0, 1000)
    (tmp_path / "weights.h5").write_bytes(b"junk")
    with pytest.raises(BackboneError, match="not a whole Keras model"):
        load_backbone(str(tmp_path / "weights.h5"))
