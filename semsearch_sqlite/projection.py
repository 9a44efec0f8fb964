"""Image features -> word space (interim ridge + ConSE; being replaced by the measured design)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ProjectionError
from .words import unit, unit_rows


def class_word_vectors(class_names: list[str], wv: Any) -> tuple[np.ndarray, np.ndarray]:
    """Unit word vector of each class name (mean over its synonyms) and a known mask."""
    dim = wv.dim if hasattr(wv, "dim") else len(next(iter([wv.get("the")])))
    out = np.zeros((len(class_names), dim), np.float32)
    known = np.zeros(len(class_names), bool)
    for i, name in enumerate(class_names):
        vecs = [v for v, _ in (wv.phrase(s) for s in name.split(",")) if v is not None]
        if vecs:
            out[i] = unit(np.mean(vecs, axis=0))
            known[i] = True
    return out, known


def conse_vectors(probs: np.ndarray, class_vectors: np.ndarray, top: int = 10) -> np.ndarray:
    """ConSE: probability-weighted mean of the top classes' word vectors."""
    p = np.asarray(probs, np.float32)
    idx = np.argsort(-p, axis=1)[:, :top]
    w = np.take_along_axis(p, idx, axis=1)
    return unit_rows(np.einsum("nt,ntd->nd", w, class_vectors[idx]))


@dataclass
class SemanticModel:
    method: str
    arrays: dict[str, np.ndarray]
    config: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)

    def image_vectors(self, X: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
        a = self.arrays
        parts = []
        if "W" in a:
            Z = (np.asarray(X, np.float32) - a["mean"]) / a["std"]
            parts.append(unit_rows(Z @ a["W"] + a["b"]))
        if probs is not None and "class_vectors" in a:
            parts.append(conse_vectors(probs, a["class_vectors"]))
        if not parts:
            raise ProjectionError("this model needs class probabilities")
        return unit_rows(sum(parts))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return self.arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> "SemanticModel":
        return cls(config.get("method", "auto"), arrays, config)


def fit_semantic(X: np.ndarray, probs: np.ndarray | None, labels: list[str | None], wv: Any,
                 class_vectors: np.ndarray, method: str = "auto", seed: int = 0, **_: Any) -> SemanticModel:
    arrays: dict[str, np.ndarray] = {}
    rows, targets = [], []
    for i, lab in enumerate(labels):
        if lab:
            v, _u = wv.phrase(lab)
            if v is not None:
                rows.append(i)
                targets.append(v)
    if rows and method != "conse":
        Xs = np.asarray(X, np.float32)[rows]
        mean, std = Xs.mean(0), Xs.std(0) + 1e-6
        Z = (Xs - mean) / std
        Y = np.vstack(targets)
        W = np.linalg.solve(Z.T @ Z + 10.0 * np.eye(Z.shape[1]), Z.T @ (Y - Y.mean(0)))
        arrays.update(W=W.astype(np.float32), b=Y.mean(0).astype(np.float32), mean=mean, std=std)
    if probs is not None:
        arrays["class_vectors"] = np.asarray(class_vectors, np.float32)
    if not arrays:
        raise ProjectionError("no labelled images with known label words and no class probabilities")
    return SemanticModel("ridge+conse", arrays, {"method": "ridge+conse"}, {"train_images": len(rows)})
