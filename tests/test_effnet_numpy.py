"""The numpy EfficientNet-Lite0 (new-image queries) against the Keras one (ingest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from semsearch_sqlite.errors import BackboneError
from semsearch_sqlite.model.cnn import load_backbone, load_query_backbone
from semsearch_sqlite.model.effnet_numpy import NumpyEfficientNetLite0, load_numpy_efficientnet_lite0


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    noise = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    drawn = Image.new("RGB", (240, 180), (30, 90, 200))
    ImageDraw.Draw(drawn).ellipse((40, 30, 200, 150), fill=(240, 200, 40))
    return [noise, drawn]


@pytest.mark.slow
def test_numpy_forward_pass_equals_the_keras_model() -> None:
    keras_net = load_backbone("efficientnet-lite0")
    numpy_net = load_numpy_efficientnet_lite0()
    batch = keras_net.preprocess(_pictures())
    assert np.array_equal(batch, numpy_net.preprocess(_pictures()))
    want_f, want_p = keras_net.predict(batch)
    got_f, got_p = numpy_net.predict(batch)
    assert got_f.shape == want_f.shape == (2, 1280)
    assert np.allclose(got_f, want_f, rtol=1e-4, atol=1e-4 * float(np.abs(want_f).max()))
    assert np.allclose(got_p, want_p, atol=1e-5)
    assert numpy_net.weights_sha256 == keras_net.weights_sha256
    assert numpy_net.provenance()["preprocessing"] == keras_net.provenance()["preprocessing"]
    kernel, bias = numpy_net.classifier_weights()  # type: ignore[misc]
    k2, b2 = keras_net.classifier_weights()  # type: ignore[misc]
    assert np.allclose(kernel, k2) and np.allclose(bias, b2)


def test_query_backbone_for_efficientnet_never_imports_tensorflow() -> None:
    code = (
        "import sys, numpy as np\n"
        "from semsearch_sqlite.model.cnn import load_query_backbone\n"
        "b = load_query_backbone('efficientnet-lite0')\n"
        "f, p = b.predict(np.zeros((1, 224, 224, 3), np.float32))\n"
        "print(type(b).__name__, f.shape, p.shape, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "NumpyEfficientNetLite0 (1, 1280) (1, 1000) False", out.stderr


@pytest.mark.slow
def test_query_backbone_keeps_keras_where_numpy_cannot_reproduce_it() -> None:
    # random weights (tests) and other layers are only defined by the Keras model
    assert not isinstance(load_query_backbone("efficientnet-lite0", weights="none"), NumpyEfficientNetLite0)


def test_bad_weights_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="no such weights file"):
        load_numpy_efficientnet_lite0(str(tmp_path / "missing.pth"))
