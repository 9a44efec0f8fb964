"""Typed errors. The CLI prints ``Error: <message>`` and exits 1; messages name the
file or value at fault and the fix."""

from __future__ import annotations


class SemsearchError(Exception):
    """Base class of every error this package raises on purpose."""


class ExtensionError(SemsearchError):
    """sqlite-vec (or a table-valued function) could not be loaded on a connection."""


class StoreError(SemsearchError):
    """The database file is missing, not SQLite, not ours, or locked."""


class SchemaVersionError(StoreError):
    """The database was written by a newer version of semsearch-sqlite."""


class WordsError(SemsearchError):
    """A word-vector source is missing or malformed."""


class QueryError(SemsearchError):
    """A query string or parameter is invalid."""


class UnknownWordsError(QueryError):
    """Every word of a query is outside the stored vocabulary; ``suggestions`` holds, for
    each, the known words spelt like it (filled in where a database is at hand)."""

    def __init__(self, words: list[str], suggestions: dict[str, list[str]] | None = None):
        self.words = list(words)
        self.suggestions = {w: list(near) for w, near in (suggestions or {}).items()}
        listed = ", ".join(repr(w) for w in self.words)
        near = [(w, n[:3]) for w, n in self.suggestions.items() if n]
        if len(near) == 1:
            hint = f"; did you mean {', '.join(near[0][1])}?"
        elif near:
            hint = "; did you mean " + "; ".join(f"{', '.join(n)} (for {w!r})" for w, n in near) + "?"
        else:
            hint = (
                " (none of them is in the stored vocabulary; try another word, or re-run ingest "
                "with --vocab-file to add words)"
            )
        super().__init__(f"no known words in query: {listed}{hint}")


class FocusError(QueryError):
    """A focus word names no ImageNet class or group of classes."""


class ImageError(SemsearchError):
    """An image file could not be read."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class BackboneError(SemsearchError):
    """A CNN backbone could not be built or its weights could not be had."""


class ProjectionError(SemsearchError):
    """The image->word projection cannot be trained or is missing."""


class NotFoundError(SemsearchError):
    """An image id or path is not in the database."""


class MissingExtraError(SemsearchError):
    """Something needs the ``[ingest]`` extra (TensorFlow, Keras, Pillow, GloVe files),
    which a reader-only install (``pip install semsearch-sqlite``) leaves out."""
