"""The forward pass of a Keras backbone run by LiteRT (TFLite with XNNPACK).

Keras stays the model definition and the way weights arrive; the built model is
converted once with TensorFlow's own converter (no new dependency) and the ``.tflite``
file is cached under :func:`cache_dir`, keyed by the weights' SHA-256, the layer and
the TensorFlow version, so later loads skip the conversion (~15 s). On 2 cores LiteRT
embeds EfficientNet-Lite0 2-4x faster than Keras' ``predict_on_batch``, features equal
to float32 rounding; VGG16 it runs no faster, so VGG16 stays on Keras
(benchmarks/runtimes.py). Whatever fails here (conversion, a broken cache file, an
interpreter that won't load) leaves the Keras path in place: :func:`litert_runner`
returns None and says why in the log.

``SEMSEARCH_RUNTIME=keras`` keeps Keras; ``=litert`` converts even when the weights
have no hash to cache under (random weights: the conversion is paid on every load).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.model.keras_env import import_keras, import_tf, quiet_fd2

log = logging.getLogger("semsearch_sqlite")

RUNTIME_ENV = "SEMSEARCH_RUNTIME"  # "keras" | "litert" | unset (LiteRT when cacheable)
CACHE_ENV = "SEMSEARCH_CACHE_DIR"
CACHE_FORMAT = 1  # bump when the conversion changes, so stale cached files are not reused
OUTPUTS = ("features", "probs")


def cache_dir() -> Path:
    """Where converted models are kept: ``$SEMSEARCH_CACHE_DIR`` or ``~/.cache/semsearch-sqlite/litert``."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "semsearch-sqlite"
    )
    return Path(base) / "litert"


def runtime_choice() -> str:
    """``keras``, ``litert`` or ``auto`` from :data:`RUNTIME_ENV`."""
    value = os.environ.get(RUNTIME_ENV, "").strip().lower()
    return value if value in ("keras", "litert") else "auto"


def convert_to_tflite(model: Any) -> bytes:
    """A float32 ``.tflite`` of a Keras model with one or two outputs, named ``features``
    (and ``probs``) in its ``serving_default`` signature; builtin ops only."""
    tf, keras = import_tf(), import_keras()
    shape = [None, *model.input_shape[1:]]
    names = OUTPUTS[: len(model.outputs)]

    def serve(x: Any) -> dict[str, Any]:
        out = model(x, training=False)
        return dict(zip(names, out if isinstance(out, (list, tuple)) else [out]))

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), quiet_fd2():
        warnings.simplefilter("ignore")
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


def tflite_interpreter(model: str | Path | bytes, threads: int | None = None) -> Any:
    """A LiteRT interpreter with its default (XNNPACK) delegate on ``threads`` threads
    (default: the CPUs this process may use): ``ai_edge_litert`` when installed, else
    TensorFlow's own ``tf.lite.Interpreter``."""
    threads = threads or len(os.sched_getaffinity(0))
    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    with warnings.catch_warnings():  # tf.lite's deprecation notice on every load
        warnings.simplefilter("ignore")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = import_tf().lite.Interpreter  # noqa: N806 - a class
        with quiet_fd2():  # "Created TensorFlow Lite XNNPACK delegate" on fd 2
            interp = Interpreter(num_threads=threads, **source)
            interp.allocate_tensors()
    return interp


class LiteRTRunner:
    """``predict(batch) -> (features, probs or None)`` through a LiteRT signature runner."""

    def __init__(self, interp: Any):
        self._interp = interp
        self._run = interp.get_signature_runner("serving_default")
        self._lock = threading.Lock()
        self.has_probs = "probs" in interp.get_signature_list()["serving_default"]["outputs"]

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # One image per invoke: on 2 cores XNNPACK is no faster on whole batches (and
        # resizing the input re-plans the graph).
        feats, probs = [], []
        x = np.ascontiguousarray(batch, np.float32)
        with self._lock:  # one interpreter, one image at a time
            for i in range(len(x)):
                out = self._run(image=x[i : i + 1])
                feats.append(np.array(out["features"], np.float32).reshape(-1))
                if self.has_probs:
                    probs.append(np.array(out["probs"], np.float32).reshape(-1))
        return np.stack(feats), (np.stack(probs) if self.has_probs else None)


def litert_runner(model: Any, key: str | None) -> LiteRTRunner | None:
    """The LiteRT runner of a built Keras ``model`` whose weights hash to ``key`` (None:
    random weights), from the cache or converted now; None to keep Keras."""
    choice = runtime_choice()
    if choice == "keras" or (key is None and choice != "litert"):
        return None
    path = _cache_path(model, key) if key else None
    try:
        if path is not None and path.is_file():
            try:
                return _runner(tflite_interpreter(path), model)
            except (ValueError, RuntimeError) as e:  # a truncated or foreign file: convert again
                log.warning("semsearch: %s: unusable cached LiteRT model (%s); converting again", path, e)
        data = convert_to_tflite(model)
        runner = _runner(tflite_interpreter(data), model)
        if path is not None:
            _write_atomic(path, data)
        return runner
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds; Keras still works
        log.warning("semsearch: LiteRT conversion of %s failed (%s); embedding with Keras", model.name, e)
        return None


def _runner(interp: Any, model: Any) -> LiteRTRunner:
    runner = LiteRTRunner(interp)
    if runner.has_probs != (len(model.outputs) > 1):
        raise ValueError("outputs differ from the Keras model's")
    return runner


def _cache_path(model: Any, key: str) -> Path:
    tf = import_tf()
    spec = f"{CACHE_FORMAT}|{model.name}|{key}|{[tuple(o.shape) for o in model.outputs]}|{tf.__version__}"
    return cache_dir() / f"{model.name}-{hashlib.sha256(spec.encode()).hexdigest()[:24]}.tflite"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file (readers never see half a model);
    a cache that can't be written is only a slower next load."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("semsearch: cannot cache the LiteRT model in %s (%s)", path.parent, e)
