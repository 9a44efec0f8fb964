"""Importing TensorFlow and Keras quietly and only when needed: the one place that does."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from semsearch_sqlite.errors import MissingExtraError
from semsearch_sqlite.extras import INSTALL_INGEST, require_ingest


def import_tf(what: str = "embedding images") -> Any:
    """TensorFlow, imported quietly; ``what`` names the job in the error of a reader-only install."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    require_ingest(what, {"tensorflow": "TensorFlow"})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        # TF's C++ logging prints oneDNN/absl notices to fd 2 before any setting applies;
        # they'd land in the middle of the progress output, so the import runs with fd 2
        # pointed at /dev/null (Python-level errors are still raised normally).
        with quiet_fd2():
            import tensorflow as tf
    except ImportError as e:  # found but broken (a half-removed install, a missing shared library)
        raise MissingExtraError(
            f"{what} needs TensorFlow, which fails to import here ({e}): {INSTALL_INGEST}"
        ) from None
    return tf


@contextlib.contextmanager
def quiet_fd2() -> Any:
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras(what: str = "embedding images") -> Any:
    """Keras (on TensorFlow), imported quietly; ``what`` as for :func:`import_tf`."""
    require_ingest(what, {"tensorflow": "TensorFlow", "keras": "Keras"})
    import_tf(what)
    import keras

    return keras
