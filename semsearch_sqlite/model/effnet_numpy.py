"""EfficientNet-Lite0's forward pass in numpy, for queries by a new image.

Importing TensorFlow takes about 5 s here and building + tracing the Keras model 2-4 s
more, so a one-off ``similar db new.jpg`` used to spend 10-30 s before its first result.
This pass reads the same .pth, folds each batch norm into its convolution, and embeds
one image in about 0.3 s with nothing but numpy: the features equal the Keras model's
to float32 rounding (tests/test_effnet_numpy.py), so they search the vectors ingest
stored. Ingest keeps the Keras model: batched, it is several times faster.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.errors import BackboneError
from semsearch_sqlite.model.backbone import Backbone
from semsearch_sqlite.model.efficientnet import EFFNET_LITE0_STAGES, efficientnet_lite0_weights_file

BN_EPSILON = 1e-3  # build_efficientnet_lite0's batch norms
FEATURE_LAYER = "avg_pool"
# (kind, weights, bias, stride, kernel, relu6): kind "conv" (weights [k*k*cin, cout]) or "dw" ([k, k, c])
_Layer = tuple[str, np.ndarray, np.ndarray, int, int, bool]


class NumpyEfficientNetLite0(Backbone):
    """EfficientNet-Lite0 (features of ``avg_pool``, ImageNet probabilities) without TensorFlow."""

    def __init__(self, state: dict[str, np.ndarray], weights: str, weights_sha256: str | None):
        super().__init__(
            name="efficientnet-lite0",
            dim=1280,
            input_size=(224, 224),
            layer=FEATURE_LAYER,
            normaliser="lite",
            resample="bicubic",
            weights_sha256=weights_sha256,
            weights=weights,
        )
        try:
            self._stem = _conv(state, "_conv_stem.weight", "_bn0.", 2, 3, True)
            self._blocks: list[tuple[list[_Layer], bool]] = []
            block, cin = 0, 32
            for repeats, kernel, stride, expand, cout in EFFNET_LITE0_STAGES:
                for r in range(repeats):
                    t = f"_blocks.{block}."
                    layers = [_conv(state, t + "_expand_conv.weight", t + "_bn0.", 1, 1, True)] if expand != 1 else []
                    layers.append(
                        _conv(
                            state,
                            t + "_depthwise_conv.weight",
                            t + "_bn1.",
                            stride if r == 0 else 1,
                            kernel,
                            True,
                            depthwise=True,
                        )
                    )
                    layers.append(_conv(state, t + "_project_conv.weight", t + "_bn2.", 1, 1, False))
                    self._blocks.append((layers, r > 0 and cin == cout))
                    cin, block = cout, block + 1
            self._head = _conv(state, "_conv_head.weight", "_bn1.", 1, 1, True)
            self._fc = (np.ascontiguousarray(state["_fc.weight"].T, np.float32), state["_fc.bias"].astype(np.float32))
        except (KeyError, ValueError) as e:
            raise BackboneError(f"{weights}: not an EfficientNet-Lite0 state dict ({e})") from None

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(batch, np.float32)
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 1000), np.float32)
        # These matrices are small: OpenBLAS threads cost more than they give, and on a
        # busy machine 7x more (measured: 0.13 s an image on one thread, 0.97 s on two).
        set_threads = _blas_thread_setter()
        before = set_threads(1) if set_threads else None
        try:
            return self._forward(x)
        finally:
            if set_threads and before:
                set_threads(before)

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = _run(x, self._stem)
        for layers, residual in self._blocks:
            y = x
            for layer in layers:
                y = _run(y, layer)
            x = y + x if residual else y
        features = _run(x, self._head).mean(axis=(1, 2))
        logits = features @ self._fc[0] + self._fc[1]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return features, (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def classifier_weights(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._fc

    def _has_probs(self) -> bool:
        return True


def load_numpy_efficientnet_lite0(weights: str | None = None) -> NumpyEfficientNetLite0:
    """The numpy EfficientNet-Lite0 with the packaged ImageNet weights or a .pth file.

    Raises:
        BackboneError: no such weights file, or not an EfficientNet-Lite0 state dict.
    """
    from semsearch_sqlite.media.files import sha256_file
    from semsearch_sqlite.model.torchpth import load_state_dict

    choice = (weights or "imagenet").strip()
    path = efficientnet_lite0_weights_file() if choice.lower() == "imagenet" else Path(choice)
    if not path.is_file():
        raise BackboneError(f"{path}: no such weights file; pass --weights PATH to an EfficientNet-Lite0 .pth")
    return NumpyEfficientNetLite0(load_state_dict(path), str(path), sha256_file(path))


@functools.cache
def _blas_thread_setter() -> Callable[[int], int] | None:
    """OpenBLAS's per-thread thread count setter (numpy's bundled OpenBLAS >= 0.3.27), if any."""
    folder = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for lib in sorted(folder.glob("*openblas*")):
        try:
            fn = ctypes.CDLL(str(lib)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn  # type: ignore[no-any-return]
    return None


def _conv(
    state: dict[str, np.ndarray], key: str, bn: str, stride: int, kernel: int, relu: bool, depthwise: bool = False
) -> _Layer:
    w = state[key].astype(np.float64)  # torch layout: OIHW, depthwise (C, 1, k, k)
    gamma, beta, mean, var = (
        state[bn + s].astype(np.float64) for s in ("weight", "bias", "running_mean", "running_var")
    )
    scale = gamma / np.sqrt(var + BN_EPSILON)
    bias = beta - mean * scale
    if depthwise:
        folded = (w[:, 0] * scale[:, None, None]).transpose(1, 2, 0)
    else:
        folded = (w * scale[:, None, None, None]).transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
    kind = "dw" if depthwise else "conv"
    return kind, np.ascontiguousarray(folded, np.float32), bias.astype(np.float32), stride, kernel, relu


def _pad_same(x: np.ndarray, k: int, s: int) -> tuple[np.ndarray, int, int]:
    """TensorFlow's 'same' padding (the extra pixel goes after, not before)."""

    def amounts(size: int) -> tuple[int, int]:
        total = max((-(-size // s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2

    h, w = x.shape[1:3]
    return np.pad(x, ((0, 0), amounts(h), amounts(w), (0, 0))), -(-h // s), -(-w // s)


def _run(x: np.ndarray, layer: _Layer) -> np.ndarray:
    kind, w, bias, s, k, relu = layer
    n = x.shape[0]
    if kind == "dw":
        xp, ho, wo = _pad_same(x, k, s)
        out = np.zeros((n, ho, wo, x.shape[3]), np.float32)
        for a in range(k):
            for b in range(k):
                out += xp[:, a : a + s * ho : s, b : b + s * wo : s, :] * w[a, b]
        out += bias
    elif k == 1:
        out = (x.reshape(-1, x.shape[3]) @ w + bias).reshape(n, x.shape[1], x.shape[2], -1)
    else:
        xp, ho, wo = _pad_same(x, k, s)
        cols: Any = np.concatenate(
            [xp[:, a : a + s * ho : s, b : b + s * wo : s, :] for a in range(k) for b in range(k)], axis=-1
        )
        out = cols @ w + bias
    if relu:
        np.clip(out, 0.0, 6.0, out=out)
    return out
