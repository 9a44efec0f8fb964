"""Image features -> word space: the DeViSE-style projection, ConSE, and the gated
combination of the two that every database uses by default.

Two ways put an image into GloVe space, and each fails where the other works:

* a **projection** trained on the labelled images (the talk's MLP with cosine loss,
  DeViSE's hinge rank loss, or closed-form ridge) maps an image of a *seen* label right
  onto that label's word, but maps an image of any other kind onto the nearest seen label
  as well, so words never used as a label find almost nothing;
* **ConSE** (Norouzi et al. 2014) needs no training: the probability-weighted mean of the
  word vectors of the backbone's top ImageNet classes. It reaches any word near an
  ImageNet class, but is blurrier on the user's own labels.

The default, ``gated``, keeps each where it is right. A novelty gate (the idea of Socher
et al. 2013, "Zero-shot learning through cross-modal transfer") asks of every image how
much it looks like the labelled training images: the cosine of its centred features to
the nearest label's centroid, through a logistic calibrated on the training images
themselves (leave-one-out similarity to the image's own label centroid against the best
similarity to any other label's centroid; the threshold is the midpoint of the two
medians). The image's vector is ``unit(g * projection + (1 - g) * ConSE)``. Query vectors
stay plain word vectors, so queries, tags and the Datasette plugin need nothing beyond
the stored image vectors; the gate, centroids, projection weights and class vectors are
numpy arrays plus JSON (``to_arrays``/``from_arrays``) for recomputing new images
without TensorFlow.

Measured by ``benchmarks/semantic.py``: 800 Caltech-101 photos of 20 labels; 5 seeds,
each holding out 5 labels (zero-shot) and splitting the seen labels' images 70/30 into
train/test; P@10 of each label's name as a text query among all test images; tag@5 over
the 50k most frequent GloVe words. EfficientNet-Lite0 features (MobileNetV2 in brackets):

===================================  ==============  ==============  =============  =============  =======
method                               seen P@10       zero-shot P@10  tag@5 seen     tag@5 z-s      fit
===================================  ==============  ==============  =============  =============  =======
the talk's MLP, cosine loss          0.977 (0.957)   0.252 (0.276)   0.992 (0.991)  0.019 (0.023)  9 s
DeViSE hinge rank loss               0.809 (0.741)   0.312 (0.348)   0.944 (0.943)  0.007 (0.007)  11 s
ridge (closed form)                  0.984 (0.973)   0.244 (0.280)   0.991 (0.984)  0.013 (0.019)  0.15 s
ConSE (no training)                  0.789 (0.752)   0.916 (0.908)   0.628 (0.561)  0.530 (0.482)  0.03 s
blend 0.4 ridge + 0.6 ConSE          0.955 (0.948)   0.916 (0.916)   0.923 (0.868)  0.458 (0.458)  0.14 s
gated MLP / ConSE                    0.981 (0.973)   0.928 (0.908)   0.959 (0.931)  0.491 (0.446)  9 s
**gated ridge / ConSE (default)**    0.981 (0.973)   0.944 (0.912)   0.952 (0.924)  0.491 (0.446)  0.25 s
===================================  ==============  ==============  =============  =============  =======

So the gate keeps the projection's seen-label precision and ConSE's zero-shot precision
at once (worst seed: 0.98 seen, 0.86 zero-shot), and tags zero-shot images nearly as
well as ConSE while tagging seen images far better. A fixed blend has to trade one for
the other (at 0.4 it loses 2-3 points of seen P@10 and 3-6 of seen tags, and gains
nothing on zero-shot queries). Most of these 20 labels are close to ImageNet classes, which
flatters ConSE (0.49 zero-shot P@10 was reported on a 56/20-label Caltech split); the gate
hands unseen images to ConSE whatever its quality, so it tracks it there too. The hinge
loss ranks words per image, so its scores are not comparable across images and
text -> image retrieval suffers.
Other gates measured and not kept: k-nearest training images instead of centroids
(the same within a point, more to store), the projection's own confidence (worse:
a projection is confident about everything), raw/standardised/probability spaces for the
similarity (within a point). The projection inside the gate is ridge: as good as the
talk's MLP here, deterministic, and a fraction of a second (``projection="mlp"`` to use
the network instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ProjectionError
from .words import tokenize, unit, unit_rows

METHODS = ("auto", "gated", "blend", "ridge", "mlp", "hinge", "conse")
PROJECTION_METHODS = ("ridge", "mlp", "hinge")
DEFAULT_PROJECTION = "ridge"
MODEL_VERSION = 1

# the talk's network: Dense -> BatchNorm -> relu -> Dropout(0.5) -> Dense -> BatchNorm, cosine loss
HIDDEN = 512
DROPOUT = 0.5
BATCH_SIZE = 128  # at most; small sets use n/8 (at least 16) so each epoch has ~8 steps
MAX_EPOCHS = 50
PATIENCE = 5
MIN_DELTA = 1e-3
LEARNING_RATE = 1e-2
BN_EPSILON = 1e-3
MLP_OPS = ("standardise", "dense", "batchnorm", "relu", "dense", "batchnorm")
# DeViSE hinge rank loss
HINGE_MARGIN = 0.1
HINGE_VOCAB_NEGATIVES = 256
# ridge: alpha (times the number of rows) chosen on the validation rows
RIDGE_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
RIDGE_DEFAULT_ALPHA = 1.0
# ConSE
CONSE_TOP = 10
# class names: synonyms holding a word rarer than this GloVe rank (Latin names) are skipped
CLASS_WORD_MAX_RANK = 100_000
# the novelty gate: logistic width as a share of the (own - other) median gap
GATE_WIDTH = 0.15
# blend: fixed weight of the projection
BLEND_ALPHA = 0.4


# -- the projection: a stack of numpy ops, trained by Keras or in closed form ----------------
@dataclass
class Projection:
    """A fitted image-features -> word-space map, evaluated with numpy.

    ``config["ops"]`` lists the layers in order (``standardise``, ``dense``, ``batchnorm``,
    ``relu``); their weights are ``arrays["<i>.<name>"]``. Output rows are unit vectors.
    """

    method: str
    arrays: dict[str, np.ndarray]
    config: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)
    _keras: Any = field(default=None, repr=False, compare=False)

    @property
    def input_dim(self) -> int:
        return int(self.config["input_dim"])

    @property
    def output_dim(self) -> int:
        return int(self.config["output_dim"])

    def project(self, X: np.ndarray) -> np.ndarray:
        """Unit word-space vectors of the feature rows ``X`` [n, D] -> [n, W]."""
        h = np.asarray(X, np.float32)
        if h.ndim != 2 or h.shape[1] != self.input_dim:
            raise ProjectionError(
                f"the projection expects features of shape [n, {self.input_dim}], got {list(h.shape)}; "
                "was it trained on another backbone? Re-run train"
            )
        a = self.arrays
        for i, op in enumerate(self.config["ops"]):
            if op == "standardise":
                h = (h - a[f"{i}.mean"]) / a[f"{i}.std"]
            elif op == "dense":
                h = h @ a[f"{i}.kernel"] + a[f"{i}.bias"]
            elif op == "batchnorm":
                scale = a[f"{i}.gamma"] / np.sqrt(a[f"{i}.variance"] + BN_EPSILON)
                h = (h - a[f"{i}.mean"]) * scale + a[f"{i}.beta"]
            elif op == "relu":
                h = np.maximum(h, 0)
            else:
                raise ProjectionError(f"unknown projection layer {op!r}; was it written by a newer version?")
        return unit_rows(h)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The weights as float32 arrays (stored as BLOBs)."""
        return {k: np.asarray(v, np.float32) for k, v in self.arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> "Projection":
        """Rebuild from :meth:`to_arrays` and :attr:`config` (no TensorFlow needed)."""
        ops = config.get("ops")
        missing = [k for k in _expected_keys(ops or []) if k not in arrays]
        if not ops or missing or "input_dim" not in config:
            raise ProjectionError(f"the stored projection is incomplete (missing {missing or 'its layer list'}); re-run train")
        return cls(str(config.get("method", "?")), {k: np.asarray(v, np.float32) for k, v in arrays.items()},
                   dict(config), dict(config.get("report", {})))

    def keras_model(self) -> Any:
        """The Keras model computing the same map (the trained one, else rebuilt from the arrays)."""
        if self._keras is None:
            self._keras = _build_keras(_import_keras(), list(self.config["ops"]), self.input_dim, self.arrays)
        return self._keras


def _expected_keys(ops: list[str]) -> list[str]:
    names = {"standardise": ("mean", "std"), "dense": ("kernel", "bias"),
             "batchnorm": ("gamma", "beta", "mean", "variance")}
    return [f"{i}.{n}" for i, op in enumerate(ops) for n in names.get(op, ())]


def _import_keras() -> Any:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
    except ImportError as e:  # pragma: no cover - a dependency
        raise ProjectionError("training an mlp or hinge projection needs Keras: pip install keras tensorflow-cpu") from e
    return keras


def _build_keras(keras: Any, ops: list[str], input_dim: int, arrays: dict[str, np.ndarray], *,
                 trained: bool = True, output_dim: int | None = None) -> Any:
    """A Keras model for ``ops`` with unit-normalised output.

    ``arrays`` always holds the standardisation and, when ``trained``, every weight;
    otherwise the layers start fresh, with Dropout after each relu.
    """
    inputs = keras.Input((input_dim,), name="features")
    h = inputs
    dense_seen, n_dense = 0, ops.count("dense")
    for i, op in enumerate(ops):
        if op == "standardise":
            h = keras.layers.Normalization(mean=arrays[f"{i}.mean"], variance=np.square(arrays[f"{i}.std"]),
                                           name=f"l{i}_standardise")(h)
        elif op == "dense":
            dense_seen += 1
            units = arrays[f"{i}.kernel"].shape[1] if trained else (output_dim if dense_seen == n_dense else HIDDEN)
            h = keras.layers.Dense(units, name=f"l{i}_dense")(h)
        elif op == "batchnorm":
            h = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"l{i}_batchnorm")(h)
        elif op == "relu":
            h = keras.layers.Activation("relu", name=f"l{i}_relu")(h)
            if not trained and DROPOUT:
                h = keras.layers.Dropout(DROPOUT, name=f"l{i}_dropout")(h)
    outputs = keras.layers.UnitNormalization(name="unit")(h)
    model = keras.Model(inputs, outputs, name="projection")
    if trained:
        for i, op in enumerate(ops):
            if op == "dense":
                model.get_layer(f"l{i}_dense").set_weights([arrays[f"{i}.kernel"], arrays[f"{i}.bias"]])
            elif op == "batchnorm":
                model.get_layer(f"l{i}_batchnorm").set_weights(
                    [arrays[f"{i}.gamma"], arrays[f"{i}.beta"], arrays[f"{i}.mean"], arrays[f"{i}.variance"]])
    return model


def fit_projection(
    X: np.ndarray,
    Y: np.ndarray,
    method: str = DEFAULT_PROJECTION,
    *,
    seed: int = 0,
    val_split: float = 0.1,
    epochs: int | None = None,
    word_vectors: Any = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> Projection:
    """Fit a map from features to label word vectors.

    Args:
        X: backbone features of the labelled images [n, D].
        Y: the unit word vector of each image's label [n, W].
        method: ``ridge`` (closed form), ``mlp`` (the talk's network, cosine loss) or
            ``hinge`` (the same network, DeViSE hinge rank loss, margin 0.1).
        seed: seeds the validation split and Keras.
        val_split: share of the rows (per label) held out for early stopping / alpha.
        epochs: most epochs for ``mlp``/``hinge`` (early stopping usually ends sooner).
        word_vectors: for ``hinge``, adds frequent words as negatives besides the other labels.
        on_epoch: called with (epoch, logs) after each Keras epoch.

    Raises:
        ProjectionError: bad shapes, fewer than 2 rows, or an unknown method.
    """
    X = np.asarray(X, np.float32)
    Y = unit_rows(np.asarray(Y, np.float32))
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ProjectionError(
            f"features and targets must be [n, D] and [n, W] with the same n; got {list(X.shape)} and {list(Y.shape)}"
        )
    if len(X) < 2:
        raise ProjectionError(f"a projection needs at least 2 labelled images, got {len(X)}")
    if method not in PROJECTION_METHODS:
        raise ProjectionError(f"unknown projection method {method!r}; use one of {', '.join(PROJECTION_METHODS)}")
    strata = np.unique(np.round(Y, 5), axis=0, return_inverse=True)[1].reshape(-1)
    train, val = _split(len(X), val_split, seed, strata)
    started = time.perf_counter()
    if method == "ridge":
        proj = _fit_ridge(X, Y, train, val)
    else:
        proj = _fit_keras(X, Y, train, val, method, seed, epochs or MAX_EPOCHS, word_vectors, on_epoch)
    P = proj.project(X)
    proj.report.update(
        train_cosine=_mean_cos(P[train], Y[train]),
        val_cosine=_mean_cos(P[val], Y[val]) if len(val) else None,
        train_images=int(len(train)),
        val_images=int(len(val)),
        seconds=round(time.perf_counter() - started, 3),
    )
    proj.config["report"] = dict(proj.report)
    return proj


def _split(n: int, val_split: float, seed: int, strata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/val row indices, the same share of each stratum in val."""
    if val_split <= 0 or n < 4:
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for s in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == s))
        val.extend(rows[: int(round(val_split * len(rows)))].tolist())
    if not val:  # every stratum too small: a plain random share
        val = rng.permutation(n)[: max(1, int(round(val_split * n)))].tolist()
    val_rows = np.array(sorted(val), dtype=int)
    return np.setdiff1d(np.arange(n), val_rows), val_rows


def _mean_cos(P: np.ndarray, Y: np.ndarray) -> float:
    return float(np.mean(np.sum(unit_rows(P) * unit_rows(Y), axis=1)))


def _standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = X.std(0)
    std = np.maximum(std, 1e-3 * max(float(std.max()), 1e-6))
    return X.mean(0).astype(np.float32), std.astype(np.float32)


def _fit_ridge(X: np.ndarray, Y: np.ndarray, train: np.ndarray, val: np.ndarray) -> Projection:
    """Closed-form ridge on standardised features; alpha chosen on the val rows.

    Solved through the eigendecomposition of the smaller Gram matrix (n x n or D x D),
    so every alpha costs one decomposition.
    """
    mean, std = _standardiser(X[train])
    Z = ((X - mean) / std).astype(np.float64)
    ymean = Y[train].mean(0).astype(np.float64)

    def solve(rows: np.ndarray, alphas: tuple[float, ...]) -> list[np.ndarray]:
        A, T = Z[rows], Y[rows] - ymean
        n, d = A.shape
        if n < d:  # dual form: W = A^T (A A^T + l I)^-1 T
            lam, Q = np.linalg.eigh(A @ A.T)
            QtT, AtQ = Q.T @ T, A.T @ Q
            return [AtQ @ (QtT / (lam + a * n)[:, None]) for a in alphas]
        lam, Q = np.linalg.eigh(A.T @ A)
        QtAtT = Q.T @ (A.T @ T)
        return [Q @ (QtAtT / (lam + a * n)[:, None]) for a in alphas]

    scores: list[float] = []
    if len(val):
        scores = [_mean_cos(Z[val] @ W + ymean, Y[val]) for W in solve(train, RIDGE_ALPHAS)]
        best = RIDGE_ALPHAS[int(np.nanargmax(scores))]
        rows = np.concatenate([train, val])
    else:
        best, rows = RIDGE_DEFAULT_ALPHA, train
    W = solve(rows, (best,))[0]
    arrays = {"0.mean": mean, "0.std": std, "1.kernel": W.astype(np.float32), "1.bias": ymean.astype(np.float32)}
    config = {"method": "ridge", "ops": ["standardise", "dense"], "input_dim": int(X.shape[1]),
              "output_dim": int(Y.shape[1]), "alpha": best}
    report = {"alpha": best, "epochs": None,
              "val_cosine_by_alpha": {str(a): round(float(c), 4) for a, c in zip(RIDGE_ALPHAS, scores)}}
    return Projection("ridge", arrays, config, report)


def _fit_keras(X: np.ndarray, Y: np.ndarray, train: np.ndarray, val: np.ndarray, method: str, seed: int,
               epochs: int, word_vectors: Any, on_epoch: Callable[[int, dict[str, float]], None] | None) -> Projection:
    keras = _import_keras()
    keras.utils.set_random_seed(seed)
    mean, std = _standardiser(X[train])
    ops = list(MLP_OPS)
    model = _build_keras(keras, ops, X.shape[1], {"0.mean": mean, "0.std": std}, trained=False, output_dim=Y.shape[1])
    loss: Any = keras.losses.CosineSimilarity() if method == "mlp" else _hinge_loss(keras, Y[train], word_vectors, seed)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=loss)
    callbacks: list[Any] = []
    if len(val):
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, min_delta=MIN_DELTA,
                                                       restore_best_weights=True))
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e + 1, dict(logs or {}))))
    started = time.perf_counter()
    batch_size = min(BATCH_SIZE, max(16, len(train) // 8))
    history = model.fit(X[train], Y[train], batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
                        validation_data=(X[val], Y[val]) if len(val) else None, callbacks=callbacks).history
    arrays: dict[str, np.ndarray] = {"0.mean": mean, "0.std": std}
    for i, op in enumerate(ops):
        if op == "dense":
            arrays[f"{i}.kernel"], arrays[f"{i}.bias"] = model.get_layer(f"l{i}_dense").get_weights()
        elif op == "batchnorm":
            g, b, m, v = model.get_layer(f"l{i}_batchnorm").get_weights()
            arrays.update({f"{i}.gamma": g, f"{i}.beta": b, f"{i}.mean": m, f"{i}.variance": v})
    losses = [float(x) for x in history.get("loss", [])]
    val_losses = [float(x) for x in history.get("val_loss", [])]
    config = {"method": method, "ops": ops, "input_dim": int(X.shape[1]), "output_dim": int(Y.shape[1])}
    report = {
        "epochs": len(losses),
        "first_loss": losses[0] if losses else None,
        "train_loss": losses[-1] if losses else None,
        "val_loss": min(val_losses) if val_losses else None,
        "batch_size": batch_size,
        "keras_seconds": round(time.perf_counter() - started, 3),
    }
    proj = Projection(method, {k: np.asarray(v, np.float32) for k, v in arrays.items()}, config, report)
    proj._keras = model
    return proj


def _hinge_loss(keras: Any, Ytrain: np.ndarray, word_vectors: Any, seed: int) -> Callable[[Any, Any], Any]:
    """DeViSE hinge rank loss: sum_j max(0, margin - t_label.v + t_j.v) over negative words t_j
    (the other labels, plus frequent words when ``word_vectors`` has a word list)."""
    ops = keras.ops
    negatives = [np.unique(np.round(Ytrain, 6), axis=0)]
    words = getattr(word_vectors, "words", None)
    if words is not None:
        pool = [w for w in list(words[:20000]) if w.isalpha() and len(w) > 2]
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(pool), size=min(HINGE_VOCAB_NEGATIVES, len(pool)), replace=False) if pool else []
        vecs = [word_vectors.get(pool[i]) for i in picked]
        vecs = [v for v in vecs if v is not None]
        if vecs:
            negatives.append(np.vstack(vecs))
    L = ops.convert_to_tensor(unit_rows(np.vstack(negatives)).astype(np.float32))

    def hinge_rank(y_true: Any, y_pred: Any) -> Any:
        positive = ops.sum(y_true * y_pred, axis=-1, keepdims=True)
        scores = ops.matmul(y_pred, ops.transpose(L))
        is_label = ops.cast(ops.matmul(y_true, ops.transpose(L)) > 0.9999, "float32")
        return ops.sum(ops.relu(HINGE_MARGIN - positive + scores) * (1.0 - is_label), axis=-1)

    return hinge_rank


# -- ConSE -----------------------------------------------------------------------------------
def class_word_vectors(class_names: list[str], wv: Any) -> tuple[np.ndarray, np.ndarray]:
    """The unit word vector of each ImageNet class, and which classes have one.

    A class is the mean over its synonyms ("tabby, tabby cat") of each synonym's vector,
    and a synonym's vector is the unit mean of its phrase vector and of its last word,
    the head noun of an English compound ("monkey dog" is a dog, "coffee mug" a mug).
    Synonyms with a word rarer than GloVe rank 100,000 (mostly Latin names such as
    "Tinca tinca") are skipped when ``wv`` knows word ranks, unless nothing else is left.

    Measured (benchmarks/semantic.py, ConSE on every image, both backbones): within a
    point or two of the plain mean of synonyms on retrieval, ahead of the first synonym
    alone, and the nearest class to a word is right more often (with the plain mean,
    "cat" is nearest to "affenpinscher, monkey pinscher, monkey dog").

    Args:
        class_names: one "name, synonym, ..." string per class.
        wv: WordVectors (or anything with ``phrase(text)`` and ``get(word)``; ``index``
            in frequency order gives ranks).
    """
    ranks = getattr(wv, "index", None)
    dim = _lookup_dim(wv)
    out = np.zeros((len(class_names), dim), np.float32)
    known = np.zeros(len(class_names), bool)
    for i, name in enumerate(class_names):
        synonyms = [s.strip() for s in name.split(",") if s.strip()]
        common = synonyms
        if ranks is not None:
            common = [s for s in synonyms
                      if all(ranks.get(t, CLASS_WORD_MAX_RANK) < CLASS_WORD_MAX_RANK for t in tokenize(s))]
        vecs = [v for v in (_synonym_vector(s, wv) for s in common) if v is not None]
        if not vecs:
            vecs = [v for v in (_synonym_vector(s, wv) for s in synonyms) if v is not None]
        if vecs:
            out[i] = unit(np.mean(vecs, axis=0))
            known[i] = True
    return out, known


def _synonym_vector(text: str, wv: Any) -> np.ndarray | None:
    phrase = wv.phrase(text)[0]
    if phrase is None:
        return None
    tokens = tokenize(text)
    head = wv.get(tokens[-1]) if len(tokens) > 1 else None
    return unit(unit(phrase) + unit(head)) if head is not None else unit(phrase)


def _lookup_dim(wv: Any) -> int:
    dim = getattr(wv, "dim", None)
    if dim:
        return int(dim)
    for word in ("the", "a", "of", "and"):
        v = wv.get(word)
        if v is not None:
            return int(len(v))
    raise ProjectionError("cannot tell the word vectors' dimension (not even 'the' is known)")


def conse_vectors(probs: np.ndarray, class_vectors: np.ndarray, top: int = CONSE_TOP) -> np.ndarray:
    """ConSE image vectors: the probability-weighted mean of the top classes' word vectors.

    Args:
        probs: ImageNet class probabilities [n, C].
        class_vectors: unit word vector per class [C, W] (zero rows for unknown classes).
        top: how many of the most probable classes to mix (T in the paper).

    Returns:
        Unit rows [n, W].
    """
    p = np.asarray(probs, np.float32)
    cv = np.asarray(class_vectors, np.float32)
    if p.ndim != 2 or p.shape[1] != cv.shape[0]:
        raise ProjectionError(f"class probabilities must be [n, {cv.shape[0]}], got {list(p.shape)}")
    t = max(1, min(int(top), p.shape[1]))
    idx = np.argpartition(-p, t - 1, axis=1)[:, :t]
    w = np.take_along_axis(p, idx, axis=1)
    return unit_rows(np.einsum("nt,ntd->nd", w, cv[idx]))


# -- the novelty gate ------------------------------------------------------------------------
@dataclass
class NoveltyGate:
    """How much an image looks like the labelled training images (1) or like none (0)."""

    mean: np.ndarray  # [D] training-feature mean (centring)
    centroids: np.ndarray  # [C, D] unit centroids of the centred, unit features per label
    threshold: float
    width: float

    def similarity(self, X: np.ndarray) -> np.ndarray:
        """Cosine of each image's centred features to the nearest label centroid."""
        F = unit_rows(np.asarray(X, np.float32) - self.mean)
        return (F @ self.centroids.T).max(axis=1)

    def seen_probability(self, X: np.ndarray) -> np.ndarray:
        """The gate g in [0, 1] per image."""
        z = (self.similarity(X) - self.threshold) / self.width
        return (1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))).astype(np.float32)


def fit_gate(X: np.ndarray, label_index: np.ndarray) -> tuple[NoveltyGate, dict[str, Any]]:
    """Calibrate the gate on the training images alone.

    "Seen" similarities: each image to its own label's centroid, leaving itself out;
    "unseen" stand-ins: each image to the best centroid of another label. The threshold
    is the midpoint of their medians, the logistic width GATE_WIDTH of their gap.

    Raises:
        ProjectionError: fewer than 2 labels (no "other label" to calibrate against).
    """
    X = np.asarray(X, np.float32)
    own = np.asarray(label_index)
    n_labels = int(own.max()) + 1 if len(own) else 0
    if n_labels < 2:
        raise ProjectionError("the gated model needs images of at least 2 different labels; use --method conse or ridge")
    mean = X.mean(0)
    F = unit_rows(X - mean)
    sums = np.eye(n_labels, dtype=np.float32)[own].T @ F  # per-label sums of the unit rows
    counts = np.bincount(own, minlength=n_labels)
    centroids = unit_rows(sums)
    others = F @ centroids.T
    others[np.arange(len(F)), own] = -np.inf
    negative = others.max(1)
    several = counts[own] > 1
    positive = np.sum(F[several] * unit_rows(sums[own[several]] - F[several]), axis=1)
    neg_med = float(np.median(negative))
    pos_med = float(np.median(positive)) if len(positive) else (1.0 + neg_med) / 2
    gap = max(pos_med - neg_med, 1e-3)
    gate = NoveltyGate(mean.astype(np.float32), centroids.astype(np.float32), neg_med + gap / 2, GATE_WIDTH * gap)
    report = {"gate_own_median": round(pos_med, 4), "gate_other_median": round(neg_med, 4),
              "gate_threshold": round(gate.threshold, 4)}
    return gate, report


# -- the combination -------------------------------------------------------------------------
@dataclass
class SemanticModel:
    """What turns an image's features (and class probabilities) into its word-space vector.

    ``method`` is one of ``gated`` (the default), ``blend``, ``ridge``, ``mlp``, ``hinge``
    or ``conse``. Everything lives in numpy arrays + a JSON config.
    """

    method: str
    projection: Projection | None = None
    class_vectors: np.ndarray | None = None
    gate: NoveltyGate | None = None
    config: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_probs(self) -> bool:
        """Whether :meth:`image_vectors` needs class probabilities."""
        return self.class_vectors is not None

    @property
    def label_words(self) -> list[str]:
        """The labels the projection was trained on."""
        return list(self.config.get("labels", []))

    def image_vectors(self, X: np.ndarray | None, probs: np.ndarray | None) -> np.ndarray:
        """Unit word-space vectors of images [n, W] (what goes into the semantic table).

        Args:
            X: backbone features [n, D] (may be None for a ConSE-only model).
            probs: ImageNet class probabilities [n, 1000] (may be None for a projection-only model).
        """
        if self.needs_probs and probs is None:
            raise ProjectionError(
                f"the {self.method} word-space model needs ImageNet class probabilities; "
                "use a backbone with a classifier head, or re-run train --method ridge"
            )
        conse = conse_vectors(probs, self.class_vectors, int(self.config.get("conse_top", CONSE_TOP))) \
            if self.class_vectors is not None else None
        if self.projection is None:
            assert conse is not None
            return conse
        if X is None:
            raise ProjectionError(f"the {self.method} word-space model needs the images' features")
        projected = self.projection.project(X)
        if conse is None:
            return projected
        if self.gate is not None:
            g = self.gate.seen_probability(X)[:, None]
        else:
            g = np.full((len(projected), 1), float(self.config.get("blend_alpha", BLEND_ALPHA)), np.float32)
        return unit_rows(g * projected + (1 - g) * conse)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every array needed at query/ingest time, for :meth:`from_arrays`."""
        arrays: dict[str, np.ndarray] = {}
        if self.projection is not None:
            arrays.update({f"projection.{k}": v for k, v in self.projection.to_arrays().items()})
        if self.class_vectors is not None:
            arrays["class_vectors"] = np.asarray(self.class_vectors, np.float32)
        if self.gate is not None:
            arrays["gate.mean"] = self.gate.mean
            arrays["gate.centroids"] = self.gate.centroids
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> "SemanticModel":
        """Rebuild a stored model (numpy only). Extra config keys are ignored."""
        method = str(config.get("method", ""))
        if int(config.get("model_version", MODEL_VERSION)) > MODEL_VERSION:
            raise ProjectionError("the stored word-space model was written by a newer semsearch-sqlite; upgrade it or re-run train")
        projection = None
        if "projection" in config and isinstance(config["projection"], dict):
            prefix = "projection."
            projection = Projection.from_arrays(
                {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, config["projection"])
        class_vectors = np.asarray(arrays["class_vectors"], np.float32) if "class_vectors" in arrays else None
        gate = None
        if isinstance(config.get("gate"), dict):
            if "gate.mean" not in arrays or "gate.centroids" not in arrays:
                raise ProjectionError("the stored gated model lacks its gate arrays; re-run train")
            g = config["gate"]
            gate = NoveltyGate(np.asarray(arrays["gate.mean"], np.float32), np.asarray(arrays["gate.centroids"], np.float32),
                               float(g["threshold"]), float(g["width"]))
        if projection is None and class_vectors is None:
            raise ProjectionError("the stored word-space model has neither a projection nor class vectors; re-run train")
        return cls(method or ("conse" if projection is None else projection.method), projection, class_vectors, gate,
                   dict(config), dict(config.get("fit_report", {})))


def fit_semantic(
    X: np.ndarray,
    probs: np.ndarray | None,
    labels: list[str | None],
    wv: Any,
    class_vectors: np.ndarray | None,
    method: str = "auto",
    seed: int = 0,
    *,
    projection: str = DEFAULT_PROJECTION,
    epochs: int | None = None,
    val_split: float = 0.1,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> SemanticModel:
    """Fit the word-space model of a collection: the entry point of ingest, train and evaluate.

    Args:
        X: backbone features [n, D] of every image.
        probs: their ImageNet class probabilities [n, C], or None (backbone without a head).
        labels: each image's label (folder name) or None; only labelled images train.
        wv: word lookup with ``phrase(text)`` (and ``get``); labels map through ``phrase``.
        class_vectors: :func:`class_word_vectors` of the ImageNet classes [C, W].
        method: ``auto`` (``gated`` when there are >= 2 label words and probabilities,
            else what the data allow), ``gated``, ``blend``, ``ridge``, ``mlp``, ``hinge``, ``conse``.
        seed: seeds the validation split and Keras.
        projection: the projection inside ``gated``/``blend``: ``ridge``, ``mlp`` or ``hinge``.
        epochs: most epochs for ``mlp``/``hinge``.

    Labels none of whose words are known are skipped (listed in ``report["skipped_labels"]``);
    if no label is left, ``auto`` falls back to ConSE and the other projection methods raise.

    Raises:
        ProjectionError: the method can't be fitted on this data (the message says why and what to use).
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise ProjectionError(f"unknown word-space method {method!r}; use one of {', '.join(METHODS)}")
    if projection not in PROJECTION_METHODS:
        raise ProjectionError(f"unknown projection {projection!r}; use one of {', '.join(PROJECTION_METHODS)}")
    X = np.asarray(X, np.float32)
    if probs is not None:
        probs = np.asarray(probs, np.float32)
        if len(probs) != len(X):
            raise ProjectionError(f"{len(X)} feature rows but {len(probs)} probability rows")
    if len(labels) != len(X):
        raise ProjectionError(f"{len(X)} feature rows but {len(labels)} labels")
    have_conse = probs is not None and class_vectors is not None

    rows: list[int] = []
    targets: list[np.ndarray] = []
    label_names: list[str] = []
    label_ids: list[int] = []
    skipped: set[str] = set()
    by_vector: dict[bytes, int] = {}
    for i, lab in enumerate(labels):
        if not lab:
            continue
        v = wv.phrase(lab)[0]
        if v is None:
            skipped.add(lab)
            continue
        v = unit(v)
        key = np.round(v, 5).tobytes()  # labels that map to the same vector are one label
        if key not in by_vector:
            by_vector[key] = len(label_names)
            label_names.append(lab)
        rows.append(i)
        targets.append(v)
        label_ids.append(by_vector[key])
    report: dict[str, Any] = {"train_images": len(rows), "label_count": len(label_names),
                              "skipped_labels": sorted(skipped)}

    chosen = method
    if method == "auto":
        if not rows or (len(label_names) < 2 and have_conse):
            chosen = "conse"
        elif have_conse:
            chosen = "gated"
        else:
            chosen = projection
        if not rows and not have_conse:
            raise ProjectionError(
                "nothing to fit the word space on: no image has a known label word and the backbone gives no "
                "ImageNet class probabilities; label images by folder, or use a backbone with a classifier head"
            )
    if chosen in ("conse", "gated", "blend") and not have_conse:
        raise ProjectionError(f"--method {chosen} needs ImageNet class probabilities; this backbone has none, use ridge or mlp")
    if chosen != "conse" and not rows:
        listed = f" (unknown label words: {', '.join(sorted(skipped))})" if skipped else ""
        raise ProjectionError(f"--method {chosen} needs labelled images with a known label word{listed}; use conse")

    config: dict[str, Any] = {"method": chosen, "model_version": MODEL_VERSION, "conse_top": CONSE_TOP,
                              "labels": label_names}
    proj = gate = None
    if chosen != "conse":
        kind = chosen if chosen in PROJECTION_METHODS else projection
        proj = fit_projection(X[rows], np.vstack(targets), kind, seed=seed, val_split=val_split, epochs=epochs,
                              word_vectors=wv, on_epoch=on_epoch)
        config["projection"] = proj.config
        report["projection_method"] = kind
        report["projection_report"] = proj.report
    if chosen == "gated":
        gate, gate_report = fit_gate(X[rows], np.array(label_ids))
        config["gate"] = {"threshold": gate.threshold, "width": gate.width}
        report.update(gate_report)
    if chosen == "blend":
        config["blend_alpha"] = BLEND_ALPHA
    cv = np.asarray(class_vectors, np.float32) if have_conse and chosen in ("conse", "gated", "blend") else None
    model = SemanticModel(chosen, proj, cv, gate, config, report)
    if gate is not None:
        report["seen_share"] = round(float((gate.seen_probability(X) > 0.5).mean()), 4)
    report["fit_seconds"] = round(time.perf_counter() - started, 3)
    config["fit_report"] = dict(report)
    return model
