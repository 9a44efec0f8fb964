"""The DeViSE-style projection: image features -> word space, as a stack of numpy ops
trained by Keras (the talk's MLP with cosine loss) or in closed form (ridge), with a
numpy forward pass so stored models need no TensorFlow (the methods: ``model/semantic.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semsearch_sqlite.errors import ProjectionError
from semsearch_sqlite.vectors.maths import unit_rows

PROJECTION_METHODS = ("ridge", "mlp")
DEFAULT_PROJECTION = "ridge"

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
# ridge: alpha (times the number of rows) chosen on the validation rows
RIDGE_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
RIDGE_DEFAULT_ALPHA = 1.0


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
    def from_arrays(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> Projection:
        """Rebuild from :meth:`to_arrays` and :attr:`config` (no TensorFlow needed)."""
        ops = config.get("ops")
        missing = [k for k in _expected_keys(ops or []) if k not in arrays]
        if not ops or missing or "input_dim" not in config:
            raise ProjectionError(
                f"the stored projection is incomplete (missing {missing or 'its layer list'}); re-run train"
            )
        return cls(
            str(config.get("method", "?")),
            {k: np.asarray(v, np.float32) for k, v in arrays.items()},
            dict(config),
            dict(config.get("report", {})),
        )

    def keras_model(self) -> Any:
        """The Keras model computing the same map (the trained one, else rebuilt from the arrays)."""
        if self._keras is None:
            self._keras = _build_keras(import_keras(), list(self.config["ops"]), self.input_dim, self.arrays)
        return self._keras


def _expected_keys(ops: list[str]) -> list[str]:
    names = {
        "standardise": ("mean", "std"),
        "dense": ("kernel", "bias"),
        "batchnorm": ("gamma", "beta", "mean", "variance"),
    }
    return [f"{i}.{n}" for i, op in enumerate(ops) for n in names.get(op, ())]


def import_keras(what: str = "an mlp projection") -> Any:
    from semsearch_sqlite.model import keras_env

    return keras_env.import_keras(what)


def _build_keras(
    keras: Any,
    ops: list[str],
    input_dim: int,
    arrays: dict[str, np.ndarray],
    *,
    trained: bool = True,
    output_dim: int | None = None,
) -> Any:
    """A Keras model for ``ops`` with unit-normalised output.

    ``arrays`` always holds the standardisation and, when ``trained``, every weight;
    otherwise the layers start fresh, with Dropout after each relu.
    """
    inputs = keras.Input((input_dim,), name="features")
    h = inputs
    dense_seen, n_dense = 0, ops.count("dense")
    for i, op in enumerate(ops):
        if op == "standardise":
            h = keras.layers.Normalization(
                mean=arrays[f"{i}.mean"], variance=np.square(arrays[f"{i}.std"]), name=f"l{i}_standardise"
            )(h)
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
                    [arrays[f"{i}.gamma"], arrays[f"{i}.beta"], arrays[f"{i}.mean"], arrays[f"{i}.variance"]]
                )
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
        method: ``ridge`` (closed form) or ``mlp`` (the talk's network, cosine loss).
        seed: seeds the validation split and Keras.
        val_split: share of the rows (per label) held out for early stopping / alpha.
        epochs: most epochs for ``mlp`` (early stopping usually ends sooner).
        word_vectors: unused (kept for callers of the dropped hinge loss).
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
    config = {
        "method": "ridge",
        "ops": ["standardise", "dense"],
        "input_dim": int(X.shape[1]),
        "output_dim": int(Y.shape[1]),
        "alpha": best,
    }
    report = {
        "alpha": best,
        "epochs": None,
        "val_cosine_by_alpha": {str(a): round(float(c), 4) for a, c in zip(RIDGE_ALPHAS, scores)},
    }
    return Projection("ridge", arrays, config, report)


def _fit_keras(
    X: np.ndarray,
    Y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    method: str,
    seed: int,
    epochs: int,
    word_vectors: Any,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> Projection:
    keras = import_keras(f"the {method} projection")
    keras.utils.set_random_seed(seed)
    mean, std = _standardiser(X[train])
    ops = list(MLP_OPS)
    model = _build_keras(keras, ops, X.shape[1], {"0.mean": mean, "0.std": std}, trained=False, output_dim=Y.shape[1])
    loss: Any = keras.losses.CosineSimilarity()
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=loss)
    callbacks: list[Any] = []
    if len(val):
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=PATIENCE, min_delta=MIN_DELTA, restore_best_weights=True
            )
        )
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e + 1, dict(logs or {}))))
    started = time.perf_counter()
    batch_size = min(BATCH_SIZE, max(16, len(train) // 8))
    history = model.fit(
        X[train],
        Y[train],
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        shuffle=True,
        validation_data=(X[val], Y[val]) if len(val) else None,
        callbacks=callbacks,
    ).history
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
