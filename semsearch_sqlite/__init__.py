"""semsearch-sqlite: semantic image search in one SQLite file.

The front door::

    import semsearch_sqlite

    semsearch_sqlite.ingest("images/", "photos.db")          # needs the [ingest] extra
    with semsearch_sqlite.open("photos.db") as photos:       # the reader: numpy + SQLite
        photos.search("cat sofa", k=5)                       # -> Results(hits, unknown, note)
        photos.similar(12), photos.tags(12), photos.words("ocean"), photos.focus(12, "dog")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semsearch_sqlite._version import __version__

# Resolved on first use, so that ``import semsearch_sqlite`` (the CLI's --help, the
# Datasette plugin) doesn't pay for numpy, sqlite-utils or the ingest pipeline.
_EXPORTS = {
    "open": "semsearch_sqlite.collection",
    "Collection": "semsearch_sqlite.collection",
    "Results": "semsearch_sqlite.queries.search",
    "ImageHit": "semsearch_sqlite.queries.search",
    "WordHit": "semsearch_sqlite.queries.search",
    "ingest": "semsearch_sqlite.pipeline.ingest",
    "IngestOptions": "semsearch_sqlite.pipeline.ingest",
    "IngestStats": "semsearch_sqlite.pipeline.ingest",
    "SemsearchError": "semsearch_sqlite.errors",
}
__all__ = [
    "Collection",
    "ImageHit",
    "IngestOptions",
    "IngestStats",
    "Results",
    "SemsearchError",
    "WordHit",
    "__version__",
    "ingest",
    "open",
]

if TYPE_CHECKING:
    from semsearch_sqlite.collection import Collection, open
    from semsearch_sqlite.errors import SemsearchError
    from semsearch_sqlite.pipeline.ingest import IngestOptions, IngestStats, ingest
    from semsearch_sqlite.queries.search import ImageHit, Results, WordHit


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'semsearch_sqlite' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
