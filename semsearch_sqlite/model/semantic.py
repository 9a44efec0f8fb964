"""Image features -> word space: the models a collection's photos are placed in GloVe
space with, and the strong/weak cue of text hits.

Four methods (``model/methods.py``):

* ``joint`` (the default): the user's labels become extra classes of one softmax beside the
  backbone head's 1000 ImageNet classes (a logistic regression of the labels on the
  standardised features, against the head's fixed logits); a photo's vector is the ConSE
  mean over the top classes of that joint distribution. A photo of a labelled kind lands
  on its label's word; a photo of another kind is left to the ImageNet classes;
* ``mlp``, the talk's model, and ``ridge``: a projection regressed onto the labels' word
  vectors (``model/projection.py``);
* ``conse`` (Norouzi et al. 2014), no labels needed: the probability-weighted mean word
  vector of the backbone's top ImageNet classes.

The stored vectors are smoothed over each photo's visual neighbours
(:func:`collection_semantics`), tags start with each photo's most probable classes
(:func:`class_tags`), and the fit records each label's WordNet kinds and class evidence
for search (``model/relations.py``). Arrays are numpy plus JSON (``to_arrays`` /
``from_arrays``), so new photos need no TensorFlow. Measured by ``benchmarks/semantic.py``;
what was tried and not kept is in docs/research.md.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semsearch_sqlite.errors import ProjectionError
from semsearch_sqlite.model.conse import CONSE_TOP, conse_vectors, imagenet_class_names
from semsearch_sqlite.model.methods import METHODS
from semsearch_sqlite.model.projection import Projection, fit_projection
from semsearch_sqlite.model.relations import label_evidence, label_kinds
from semsearch_sqlite.model.smoothing import (
    SMOOTH_NEIGHBOURS,
    TAG_CLASSES,
    fit_smoothing,
    smooth_rows,
    smoothed_top_classes,
    top_classes,
)
from semsearch_sqlite.storage.models import CLASS_METHODS, CLASSIFIER_MODEL, SEMANTIC_MODEL, load_model
from semsearch_sqlite.text.wordnet import anchored
from semsearch_sqlite.vectors.maths import unit, unit_rows
from semsearch_sqlite.vectors.neighbours import nearest_rows

MODEL_VERSION = 1
# the joint classifier (labels beside the ImageNet classes): L2 weight and gradient steps
JOINT_L2 = 1e-2
JOINT_STEPS = 300


# -- the joint classifier: the user's labels as extra classes beside ImageNet's ----------------
@dataclass
class LabelClassifier:
    """Softmax over the user's labels and the ImageNet classes at once.

    The labels' logits are a linear map of the standardised features; the ImageNet
    classes enter with the backbone head's own logits, fixed. Trained on the labelled
    images only, the labels win on photos like their training photos and leave everything
    else to the ImageNet classes, so no separate novelty gate is needed. The head's
    absolute logits matter: their log-sum-exp says how much a photo looks like anything
    ImageNet knows (with log-probabilities instead, every photo brings the same ImageNet
    mass and zero-shot P@10 falls from 0.61 to 0.11 on the 50-label protocol).
    """

    mean: np.ndarray  # [D]
    std: np.ndarray  # [D]
    kernel: np.ndarray  # [D, L]
    bias: np.ndarray  # [L]
    label_vectors: np.ndarray  # [L, W] unit word vectors of the labels

    def probabilities(self, X: np.ndarray, imagenet_logits: np.ndarray) -> np.ndarray:
        """[n, L + C]: the labels' probabilities, then the ImageNet classes'."""
        z = ((np.asarray(X, np.float32) - self.mean) / self.std) @ self.kernel + self.bias
        return _softmax(np.hstack([z, np.asarray(imagenet_logits, np.float32)]))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _largest_eigenvalue(Z: np.ndarray, iterations: int = 50) -> float:
    """The largest eigenvalue of Z'Z by power iteration (a full SVD of 10k x 4096 VGG16
    features takes minutes), with 10% to spare: it bounds the gradient step."""
    v = np.full(Z.shape[1], 1 / np.sqrt(Z.shape[1]), np.float32)
    value = 0.0
    for _ in range(iterations):
        w = Z.T @ (Z @ v)
        value = float(np.linalg.norm(w))
        if value == 0:
            return 1.0
        v = w / value
    return 1.1 * value


def fit_label_classifier(
    X: np.ndarray, label_index: np.ndarray, label_vectors: np.ndarray, imagenet_logits: np.ndarray
) -> tuple[LabelClassifier, dict[str, Any]]:
    """Multinomial logistic regression of the labels against the fixed ImageNet classes.

    L2 weight JOINT_L2 on standardised features, JOINT_STEPS steps of Nesterov's
    accelerated gradient from zero (step 1/L, L the loss's smoothness bound): plain
    numpy, deterministic, about a second for 450 labelled images. The fixed step budget
    regularises too; on the 50-label protocol (5 seeds, seen P@10 / zero-shot P@10 /
    tag@5 seen) 300 steps at L2 0.01 give 0.904 / 0.602 / 0.907, 1000 steps 0.906 / 0.580 /
    0.921, L2 0.001 0.906 / 0.593 / 0.926: trades within noise, none kept over the first.
    """
    mean = X.mean(0).astype(np.float32)
    std = X.std(0)
    std = np.maximum(std, 1e-3 * max(float(std.max()), 1e-6)).astype(np.float32)
    Z = ((X - mean) / std).astype(np.float32)
    n, d = Z.shape
    n_labels = int(label_index.max()) + 1
    offset = np.asarray(imagenet_logits, np.float32)
    Y = np.eye(n_labels, dtype=np.float32)[label_index]
    W = np.zeros((d, n_labels), np.float32)
    b = np.zeros(n_labels, np.float32)
    Wv, bv, t = W.copy(), b.copy(), 1.0
    step = 1.0 / (0.5 * _largest_eigenvalue(Z) / n + JOINT_L2)
    # the ImageNet classes only ever enter through their log-sum-exp: one column, not C
    top = offset.max(axis=1, keepdims=True)
    imagenet = top + np.log(np.exp(offset - top).sum(axis=1, keepdims=True))
    for _ in range(JOINT_STEPS):
        p = _softmax(np.hstack([Z @ Wv + bv, imagenet]))[:, :n_labels]
        g = (p - Y) / n
        W2 = Wv - step * (Z.T @ g + JOINT_L2 * Wv)
        b2 = bv - step * g.sum(0)
        t2 = (1 + np.sqrt(1 + 4 * t * t)) / 2
        Wv, bv = W2 + (t - 1) / t2 * (W2 - W), b2 + (t - 1) / t2 * (b2 - b)
        W, b, t = W2, b2, t2
    clf = LabelClassifier(mean, std, W.astype(np.float32), b.astype(np.float32), np.asarray(label_vectors, np.float32))
    P = clf.probabilities(X, offset)
    report = {
        "train_label_probability": round(float(P[np.arange(n), label_index].mean()), 4),
        "train_accuracy": round(float((P.argmax(1) == label_index).mean()), 4),
    }
    return clf, report


# -- the combination -------------------------------------------------------------------------
@dataclass
class SemanticModel:
    """What turns an image's features (and class probabilities) into its word-space vector.

    ``method`` is one of :data:`METHODS`. Everything lives in numpy arrays + a JSON config.
    """

    method: str
    projection: Projection | None = None
    class_vectors: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    classifier: LabelClassifier | None = None
    # the backbone's ImageNet head (kernel [D, C], bias [C]); the joint model needs its logits.
    # Not part of to_arrays: the database stores it once, as the `classifier` model.
    head: tuple[np.ndarray, np.ndarray] | None = None

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
        if self.classifier is not None:
            if X is None:
                raise ProjectionError(f"the {self.method} word-space model needs the images' features")
            if self.head is None:
                raise ProjectionError(
                    "the joint word-space model needs the backbone's classifier weights; re-run ingest"
                )
            assert self.class_vectors is not None
            logits = np.asarray(X, np.float32) @ self.head[0] + self.head[1]
            return self.vectors_from_classes(self.classifier.probabilities(X, logits))
        if self.projection is None:
            return self.vectors_from_classes(probs)
        if X is None:
            raise ProjectionError(f"the {self.method} word-space model needs the images' features")
        return self.projection.project(X)

    def vectors_from_classes(self, probabilities: np.ndarray) -> np.ndarray:
        """Unit ConSE vectors [n, W] of a class distribution (:meth:`class_probabilities`'
        columns; ImageNet's alone for the models without labels as classes)."""
        assert self.class_vectors is not None
        classes = self.class_vectors
        if self.classifier is not None:
            classes = np.vstack([self.classifier.label_vectors, self.class_vectors])
        return conse_vectors(probabilities, classes, int(self.config.get("conse_top", CONSE_TOP)))

    def class_probabilities(self, X: np.ndarray | None, probs: np.ndarray | None) -> np.ndarray | None:
        """[n, len(class_names)] the class distribution whose ConSE mean is each image's
        vector (``joint``: the labels', then ImageNet's; ``conse``: ImageNet's); None for
        models whose vectors are not made of classes."""
        if self.classifier is not None and X is not None and self.head is not None:
            X = np.asarray(X, np.float32)
            return self.classifier.probabilities(X, X @ self.head[0] + self.head[1])
        if self.method == "conse" and probs is not None and self.class_vectors is not None:
            return np.asarray(probs, np.float32)
        return None

    def class_names(self) -> list[str]:
        """The names of :meth:`class_probabilities`' columns: the labels, then the
        ImageNet class names ("great white shark, white shark, ...")."""
        if self.classifier is not None:
            return self.label_words + imagenet_class_names()
        return imagenet_class_names() if self.method == "conse" else []

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every array needed at query/ingest time, for :meth:`from_arrays`."""
        arrays: dict[str, np.ndarray] = {}
        if self.projection is not None:
            arrays.update({f"projection.{k}": v for k, v in self.projection.to_arrays().items()})
        if self.class_vectors is not None:
            arrays["class_vectors"] = np.asarray(self.class_vectors, np.float32)
        if self.classifier is not None:
            for name in ("mean", "std", "kernel", "bias", "label_vectors"):
                arrays[f"joint.{name}"] = np.asarray(getattr(self.classifier, name), np.float32)
        return arrays

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], config: dict[str, Any], head: tuple[np.ndarray, np.ndarray] | None = None
    ) -> SemanticModel:
        """Rebuild a stored model (numpy only; ``head`` the backbone's classifier for
        ``joint``). Extra config keys are ignored."""
        method = str(config.get("method", ""))
        if int(config.get("model_version", MODEL_VERSION)) > MODEL_VERSION:
            raise ProjectionError(
                "the stored word-space model was written by a newer semsearch-sqlite; upgrade it or re-run train"
            )
        projection = None
        if "projection" in config and isinstance(config["projection"], dict):
            prefix = "projection."
            projection = Projection.from_arrays(
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}, config["projection"]
            )
        class_vectors = np.asarray(arrays["class_vectors"], np.float32) if "class_vectors" in arrays else None
        if method not in METHODS:  # gated, blend, hinge: research methods this version dropped
            raise ProjectionError(
                f"the stored word-space model ({method or 'unknown'}) is no longer offered; re-run train"
            )
        classifier = None
        if method == "joint":
            names = ("mean", "std", "kernel", "bias", "label_vectors")
            if class_vectors is None or any(f"joint.{n}" not in arrays for n in names):
                raise ProjectionError("the stored joint model lacks its classifier arrays; re-run train")
            classifier = LabelClassifier(*(np.asarray(arrays[f"joint.{n}"], np.float32) for n in names))
        if projection is None and class_vectors is None:
            raise ProjectionError(
                "the stored word-space model has neither a projection nor class vectors; re-run train"
            )
        return cls(
            method, projection, class_vectors, dict(config), dict(config.get("fit_report", {})), classifier, head
        )


def fit_semantic(
    X: np.ndarray,
    probs: np.ndarray | None,
    labels: list[str | None],
    wv: Any,
    class_vectors: np.ndarray | None,
    method: str = "auto",
    seed: int = 0,
    *,
    epochs: int | None = None,
    val_split: float = 0.1,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> SemanticModel:
    """Fit the word-space model of a collection: the entry point of ingest, train and evaluate.

    Args:
        X: backbone features [n, D] of every image.
        probs: their ImageNet class probabilities [n, C], or None (backbone without a head).
        labels: each image's label (folder name) or None; only labelled images train.
        wv: word lookup with ``phrase(text)`` (and ``get``); labels map through ``phrase``.
        class_vectors: :func:`class_word_vectors` of the ImageNet classes [C, W].
        method: ``auto`` (``joint`` given ``head``, labels and probabilities; else ``conse``
            without labels, ``ridge`` without probabilities or head) or one of :data:`METHODS`.
        seed: seeds the validation split and Keras.
        epochs: most epochs for ``mlp``.
        head: the backbone's ImageNet classifier (kernel [D, C], bias [C]); ``joint`` needs it.

    A label GloVe lacks ("gerenuk") is the mean vector of its WordNet kin classes; labels
    none of whose words are known are skipped (``report["skipped_labels"]``).

    Raises:
        ProjectionError: the method can't be fitted on this data (the message says why and what to use).
    """
    started = time.perf_counter()
    X, probs = _checked_inputs(X, probs, labels, method)
    have_conse = probs is not None and class_vectors is not None
    rows, targets, label_names, label_ids, skipped = _label_targets(labels, wv, class_vectors)
    chosen = _choose_method(method, bool(rows), len(label_names), have_conse, head is not None, skipped)
    report, config = _fit_records(chosen, len(rows), label_names, skipped)
    ids = np.array(label_ids, np.int64)
    label_vectors = np.vstack([targets[label_ids.index(k)] for k in range(len(label_names))]) if rows else None
    clf, proj, head = _fit_mapping(
        chosen,
        X[rows],
        ids,
        label_vectors,
        targets,
        head,
        report,
        config,
        seed=seed,
        val_split=val_split,
        epochs=epochs,
        wv=wv,
        on_epoch=on_epoch,
    )
    smoothing = fit_smoothing(X[rows], ids, seed) if chosen in CLASS_METHODS and rows else None
    if smoothing is not None:
        config["smoothing"] = report["smoothing"] = smoothing
    if label_names:  # the senses each label's photos show, for search (model/relations.py)
        config.update(_label_relations(label_names, None if probs is None else probs[rows], ids))
    cv = np.asarray(class_vectors, np.float32) if have_conse and chosen in CLASS_METHODS else None
    model = SemanticModel(chosen, proj, cv, config, report, clf, head if chosen == "joint" else None)
    if rows and have_conse:
        assert probs is not None and label_vectors is not None
        report[MATCH_META] = calibrate_match(
            conse_vectors(probs[rows], np.asarray(class_vectors, np.float32), CONSE_TOP), ids, label_vectors
        )
    report["fit_seconds"] = round(time.perf_counter() - started, 3)
    config["fit_report"] = dict(report)
    return model


def _fit_records(
    chosen: str, n_rows: int, label_names: list[str], skipped: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fit's report and the config stored with its model, as they start out."""
    report = {"train_images": n_rows, "label_count": len(label_names), "skipped_labels": sorted(skipped)}
    config = {"method": chosen, "model_version": MODEL_VERSION, "conse_top": CONSE_TOP, "labels": label_names}
    return report, config


def _checked_inputs(
    X: np.ndarray, probs: np.ndarray | None, labels: list[str | None], method: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` and ``probs`` as float32, after checking the method and that the rows agree."""
    if method != "auto" and method not in METHODS:
        raise ProjectionError(f"unknown word-space method {method!r}; use one of {', '.join(METHODS)}")
    X = np.asarray(X, np.float32)
    probs = None if probs is None else np.asarray(probs, np.float32)
    if (probs is not None and len(probs) != len(X)) or len(labels) != len(X):
        raise ProjectionError(
            f"{len(X)} feature rows but {len(labels)} labels and "
            f"{'no' if probs is None else len(probs)} probability rows"
        )
    return X, probs


def _fit_mapping(
    chosen: str,
    X: np.ndarray,
    ids: np.ndarray,
    label_vectors: np.ndarray | None,
    targets: list[np.ndarray],
    head: tuple[np.ndarray, np.ndarray] | None,
    report: dict[str, Any],
    config: dict[str, Any],
    **projection: Any,
) -> tuple[LabelClassifier | None, Any, tuple[np.ndarray, np.ndarray] | None]:
    """The learned part of ``chosen`` on the labelled rows ``X``: the joint classifier or a
    projection (ConSE learns nothing). Fills ``report`` and ``config``; returns
    ``(classifier, projection, head)``, head as float32 arrays for ``joint``."""
    if chosen == "joint":
        assert head is not None and label_vectors is not None
        head = (np.asarray(head[0], np.float32), np.asarray(head[1], np.float32))
        clf, clf_report = fit_label_classifier(X, ids, label_vectors, X @ head[0] + head[1])
        config["joint"] = {"l2": JOINT_L2, "steps": JOINT_STEPS}
        report.update(clf_report)
        return clf, None, head
    if chosen == "conse":
        return None, None, head
    proj = fit_projection(
        X,
        np.vstack(targets),
        chosen,
        seed=projection["seed"],
        val_split=projection["val_split"],
        epochs=projection["epochs"],
        word_vectors=projection["wv"],
        on_epoch=projection["on_epoch"],
    )
    config["projection"] = proj.config
    report["projection_report"] = proj.report
    return None, proj, head


def _label_relations(names: list[str], probs: np.ndarray | None, ids: np.ndarray) -> dict[str, Any]:
    """The config entries search relates queries to labels with: each label's WordNet kinds
    and its photos' most probable ImageNet classes."""
    evidence = label_evidence(probs, ids, len(names)) if probs is not None else [[] for _ in names]
    return {"label_kinds": label_kinds(names, evidence), "label_evidence": dict(zip(names, evidence))}


def _label_targets(
    labels: list[str | None], wv: Any, class_vectors: np.ndarray | None
) -> tuple[list[int], list[np.ndarray], list[str], list[int], set[str]]:
    """The labelled rows, their unit label vectors, the distinct labels (labels with the
    same vector are one), each row's label index, and the labels no word vector answers."""
    rows: list[int] = []
    targets: list[np.ndarray] = []
    names: list[str] = []
    label_ids: list[int] = []
    skipped: set[str] = set()
    by_vector: dict[bytes, int] = {}
    for i, lab in enumerate(labels):
        if not lab:
            continue
        v = wv.phrase(lab)[0]
        if v is None and class_vectors is not None:  # "gerenuk": not in GloVe, kin to the impala
            v = anchored(lab, None, np.asarray(class_vectors, np.float32))
        if v is None:
            skipped.add(lab)
            continue
        v = unit(v)
        key = np.round(v, 5).tobytes()
        if key not in by_vector:
            by_vector[key] = len(names)
            names.append(lab)
        rows.append(i)
        targets.append(v)
        label_ids.append(by_vector[key])
    return rows, targets, names, label_ids, skipped


def _choose_method(
    method: str, labelled: bool, n_labels: int, have_conse: bool, have_head: bool, skipped: set[str]
) -> str:
    """The method to fit (``auto`` resolved), or a ProjectionError saying what to use instead."""
    chosen = method
    if method == "auto":
        if not labelled and not have_conse:
            raise ProjectionError(
                "nothing to fit the word space on: no image has a known label word and the backbone gives no "
                "ImageNet class probabilities; label images by folder, or use a backbone with a classifier head"
            )
        if not labelled or (n_labels < 2 and have_conse):
            chosen = "conse"
        else:
            chosen = "joint" if have_conse and have_head else "ridge"
    if chosen in CLASS_METHODS and not have_conse:
        raise ProjectionError(
            f"--method {chosen} needs ImageNet class probabilities; this backbone has none, use ridge or mlp"
        )
    if chosen == "joint" and not have_head:
        raise ProjectionError("--method joint needs the backbone's ImageNet classifier weights; use ridge or conse")
    if chosen != "conse" and not labelled:
        listed = f" (unknown label words: {', '.join(sorted(skipped))})" if skipped else ""
        raise ProjectionError(f"--method {chosen} needs labelled images with a known label word{listed}; use conse")
    return chosen


def semantic_model(conn: sqlite3.Connection) -> Any:
    """The stored word-space model (numpy only), or None."""
    stored = load_model(conn, SEMANTIC_MODEL)
    if stored is None:
        return None
    head = None
    if stored[1].get("method") == "joint":
        classifier = load_model(conn, CLASSIFIER_MODEL)
        head = None if classifier is None else (classifier[0]["kernel"], classifier[0]["bias"])
    return SemanticModel.from_arrays(*stored, head=head)


def class_tags(
    model: SemanticModel, space: Any, vectors: np.ndarray, classes: np.ndarray | None, k: int = 10
) -> list[list[tuple[str, float, float]]] | None:
    """Each image's tags in its own sense (:func:`semsearch_sqlite.model.sense_tags.sense_tags`):
    the names of its ``classes`` (:func:`collection_semantics`), then the WordNet kinds
    they belong to, as ``(word, cosine distance, confidence)``. A label is named as it is
    stored (lower case) with its label vector; an ImageNet class by its head noun. None
    when ``classes`` is None."""
    from semsearch_sqlite.model.sense_tags import sense_tags

    if classes is None:
        return None
    n_labels = len(model.label_words) if model.classifier is not None else 0
    label_vectors = model.classifier.label_vectors if model.classifier is not None else None
    return sense_tags(model.class_names(), n_labels, label_vectors, space, vectors, classes, k)


def image_semantics(
    model: SemanticModel, X: np.ndarray, probs: np.ndarray | None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None, int]:
    """Unsmoothed: the images' vectors (:meth:`SemanticModel.image_vectors`), the
    :func:`top_classes` of their class distribution (None for models without classes) and
    the number of classes. The distribution is computed once per block of rows, for both:
    whole, it is [n, 1000+] floats (2 GB at 500k images) of which only the top few are kept."""
    vectors, parts, n_classes = [], [], 0
    for s in range(0, len(X), 8192):
        block = model.class_probabilities(X[s : s + 8192], None if probs is None else probs[s : s + 8192])
        if block is None:
            return model.image_vectors(X, probs), None, 0
        n_classes = block.shape[1]
        vectors.append(model.vectors_from_classes(block))
        parts.append(top_classes(block))
    if not parts:
        return model.image_vectors(X, probs), None, 0
    return np.vstack(vectors), (np.vstack([i for i, _ in parts]), np.vstack([v for _, v in parts])), n_classes


def collection_semantics(
    model: SemanticModel, X: np.ndarray, probs: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """What a collection stores: its semantic vectors (:meth:`SemanticModel.image_vectors`,
    smoothed over each image's SMOOTH_NEIGHBOURS nearest images by backbone features when
    the model is calibrated for it: class-based models fitted on >= 2 labels), and the
    TAG_CLASSES most probable classes of each image, smoothed alike (indices into
    :meth:`SemanticModel.class_names`; None for models without classes)."""
    vectors, own, n_classes = image_semantics(model, X, probs)
    smoothing = model.config.get("smoothing")
    if not smoothing or len(vectors) < 2:
        return vectors, None if own is None else smoothed_top_classes(own, None, None, n_classes)
    near = nearest_rows(X, SMOOTH_NEIGHBOURS)
    F = unit_rows(np.asarray(X, np.float32))
    out = np.empty(vectors.shape, np.float32)
    classes = None if own is None else np.empty((len(vectors), min(TAG_CLASSES, n_classes)), np.int32)
    for s in range(0, len(F), 2048):  # in blocks: F[near] whole is n x k x D floats (5 GB for 100k x 1280)
        rows, block = slice(s, s + 2048), near[s : s + 2048]
        sims = np.einsum("nd,nkd->nk", F[rows], F[block])
        out[rows], top = smooth_rows(
            vectors[rows],
            vectors[block],
            sims,
            smoothing,
            None if own is None else ((own[0][rows], own[1][rows]), (own[0][block], own[1][block])),
            n_classes,
        )
        if classes is not None and top is not None:
            classes[rows] = top
    return out, classes


# -- the relevance cue ------------------------------------------------------------------------
MATCH_META = "match_strong_distance"
# with no labelled images to calibrate on: the value calibrate_match gives on the 50 labels
# of the two Caltech-101 dev sets (EfficientNet-Lite0)
DEFAULT_STRONG_DISTANCE = 0.3
# strong: at least as close as this share of true matches (of never-trained words) are
MATCH_TRUE_QUANTILE = 0.5


def calibrate_match(conse: np.ndarray, label_index: np.ndarray, label_vectors: np.ndarray) -> float | None:
    """The cosine distance up to which a text-query hit is a "strong" match.

    Calibrated on the labelled images as a query for a word never used in training
    sees them: the distances of their ConSE vectors (no label classifier) to their own
    label's word. The threshold is the MATCH_TRUE_QUANTILE quantile of these true-match
    distances: a strong hit is at least as close as half the true matches are. It
    depends only on true matches, not on which other labels the database has (the
    distance that 1% of false pairs beat, tried first, let "crocodile" call kangaroos
    strong on a 5-label database whose labels are far apart). On the two dev sets it is
    0.31, where 1% of false pairs are closer. None without labelled images.
    """
    if len(conse) == 0 or len(label_vectors) == 0:
        return None
    own = unit_rows(np.asarray(label_vectors, np.float32))[np.asarray(label_index)]
    d = 1.0 - np.sum(unit_rows(conse) * own, axis=1)
    return round(float(np.quantile(d, MATCH_TRUE_QUANTILE)), 4)


def match_strength(distance: float, strong: float | None) -> str:
    """``strong`` or ``weak`` for a text-query hit at cosine ``distance``."""
    return "strong" if distance <= (DEFAULT_STRONG_DISTANCE if strong is None else strong) else "weak"
