"""The word-space methods a user chooses among (``train --method``, ``ingest --method``),
each with the line ``--help`` shows; no imports, so the CLI lists them without numpy."""

from __future__ import annotations

METHOD_HELP = {
    "joint": "the default: your labels beside ImageNet's classes (needs a backbone with a classifier head)",
    "mlp": "the talk's model: a Keras MLP from image features to label words (needs TensorFlow)",
    "ridge": "a closed-form linear map to label words, for backbones without ImageNet classes",
    "conse": "no labels needed: each photo is the mean word of its most probable ImageNet classes",
}
# what --method offers; without it ("auto") joint, or what the data allow
METHODS = tuple(METHOD_HELP)


def methods_help() -> str:
    """One ``name: when to use it`` line per method."""
    return "Word-space model. " + " ".join(f"{name}: {line}." for name, line in METHOD_HELP.items())
