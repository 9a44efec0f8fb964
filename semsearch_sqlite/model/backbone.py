"""The Backbone interface every CNN of the package has: preprocessing (a picklable
:class:`Preprocessor`, so it travels to Ray workers), a batched forward pass to features
and ImageNet class probabilities, and provenance. Builders live in :mod:`.cnn`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

CAFFE_BGR_MEANS = np.array([103.939, 116.779, 123.68], np.float32)


def _caffe(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1] - CAFFE_BGR_MEANS


NORMALISERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "caffe": (_caffe, "RGB->BGR, minus the ImageNet BGR means (keras vgg16.preprocess_input, caffe mode)"),
    "lite": (lambda x: (x - 127.0) / 128.0, "RGB, (x - 127) / 128"),
    "tf": (lambda x: x / 127.5 - 1.0, "RGB, x / 127.5 - 1"),
    "raw": (lambda x: x, "RGB, raw 0..255"),
}


RESAMPLERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessor:
    """A backbone's image preparation without the model: small and picklable, so decode
    workers (threads here, Ray tasks elsewhere) can run it."""

    input_size: tuple[int, int]
    normaliser: str
    resample: str = "bilinear"

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        """Resize and normalise PIL images into a float32 batch ``[n, height, width, 3]`` (thread-safe)."""
        h, w = self.input_size
        resample = RESAMPLERS[self.resample]
        # reducing_gap: a fast integer box-reduce first on big photos, then the real filter
        arrays = [np.asarray(_rgb(im).resize((w, h), resample, reducing_gap=3.0), np.float32) for im in images]
        batch = np.stack(arrays) if arrays else np.zeros((0, h, w, 3), np.float32)
        return np.ascontiguousarray(NORMALISERS[self.normaliser][0](batch), np.float32)


class Backbone:
    """A CNN that maps images to feature vectors (and ImageNet probabilities).

    Attributes:
        name: how to load it again (``vgg16``, ``efficientnet-lite0`` or a model path).
        dim: length of a feature vector.
        input_size: (height, width) the images are resized to.
        layer: the layer or tensor the features come from.
        preprocessing: how images are prepared, in words (for provenance).
        weights_sha256: SHA-256 of the weights file used, if any.
    """

    def __init__(
        self,
        name: str,
        dim: int,
        input_size: tuple[int, int],
        layer: str,
        normaliser: str,
        resample: str = "bilinear",
        weights_sha256: str | None = None,
        weights: str | None = None,
    ):
        self.name, self.dim, self.input_size, self.layer = name, int(dim), tuple(input_size), layer
        self.weights_sha256, self.weights = weights_sha256, weights
        self.preprocessor = Preprocessor(self.input_size, normaliser, resample)  # type: ignore[arg-type]
        h, w = self.input_size
        self.preprocessing = f"{resample} resize of the whole image to {w}x{h}; {NORMALISERS[normaliser][1]}"
        self._lock = threading.Lock()

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        """Resize and normalise PIL images into a float32 batch ``[n, height, width, 3]``.

        Thread-safe (numpy and Pillow only), so images can be prepared in worker threads.
        """
        return self.preprocessor(images)

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Features ``[n, dim]`` and ImageNet probabilities ``[n, 1000]`` (or None) of a batch."""
        raise NotImplementedError

    def classifier_weights(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The ImageNet layer mapping these features to logits: ``(W [dim, 1000], b [1000])``."""
        return None

    def provenance(self) -> dict[str, Any]:
        """What produced the vectors, for the database's provenance table."""
        import importlib.metadata as md

        versions = {}
        for pkg in ("keras", "tensorflow-cpu", "tensorflow"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                pass
        return {
            "name": self.name,
            "dim": self.dim,
            "input_size": list(self.input_size),
            "layer": self.layer,
            "preprocessing": self.preprocessing,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "imagenet_classes": self._has_probs(),
            "versions": versions,
        }

    @property
    def has_probs(self) -> bool:
        """Whether :meth:`predict` gives ImageNet probabilities."""
        return self._has_probs()

    def _has_probs(self) -> bool:
        return False


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    from semsearch_sqlite.media.images import to_rgb

    return to_rgb(img)
