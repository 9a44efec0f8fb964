"""The Python front door: ``semsearch_sqlite.open("photos.db")`` gives a :class:`Collection`
whose methods are the query functions the CLI, the SQL functions and the pages call."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from semsearch_sqlite.errors import NotFoundError, UnknownWordsError
from semsearch_sqlite.queries import hints, search
from semsearch_sqlite.queries.search import Results
from semsearch_sqlite.storage.store import Store


class Collection:
    """A semsearch database opened for queries (read-only unless ``writable=True``).

    Example::

        import semsearch_sqlite
        with semsearch_sqlite.open("photos.db") as photos:
            for hit in photos.search("cat sofa", k=5).hits:
                print(hit.rank, hit.path, hit.distance)

    ``image`` arguments are an image id, a stored path, or (for :meth:`similar` and
    :meth:`tags`) the path of a new image file, which is embedded with the database's
    backbone (that needs ``pip install 'semsearch-sqlite[ingest]'``).
    """

    def __init__(self, store: Store):
        self.store = store

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (sqlite-vec loaded), for SQL of your own."""
        return self.store.conn

    @property
    def path(self) -> str:
        return self.store.path

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        allow_unknown: bool = False,
        where: str | None = None,
        like: Any = None,
        unlike: Any = None,
    ) -> Results:
        """Images nearest to a text query such as ``"cat sofa"`` or ``"2:cat -dog"``.

        Unknown words raise :class:`~semsearch_sqlite.errors.UnknownWordsError` (its
        ``suggestions``: known words spelt like them), or with ``allow_unknown=True`` are
        left out and listed in ``Results.unknown``, with ``Results.suggestions``. ``where``
        (SQL over the ``images`` columns, e.g. ``"label = 'dog' and taken_at >= '2020'"``)
        picks the candidates before the top ``k``. ``like`` / ``unlike`` (image ids) refine
        the query by relevance feedback (Rocchio): "more like these, less like those".
        ``Results.strong`` counts the strong matches, which come first; each hit's
        ``score`` (0..1) says how sure it is and falls down the list.
        """
        try:
            found = search.similar_images(
                self.conn, query, k, allow_unknown=allow_unknown, where=where, like=like, unlike=unlike
            )
        except UnknownWordsError as e:
            raise hints.explained(self.conn, e) from None
        return hints.with_suggestions(self.conn, found)

    def similar(
        self,
        image: Any,
        k: int = 10,
        space: str = "visual",
        *,
        where: str | None = None,
        like: Any = None,
        unlike: Any = None,
    ) -> Results:
        """Images similar to ``image`` in the ``visual`` (CNN) or ``semantic`` (word) space."""
        try:
            return search.similar_to_image(self.conn, image, k, space, where=where, like=like, unlike=unlike)
        except NotFoundError:
            if not _new_file(image):
                raise
        from semsearch_sqlite.queries.new_image import search_file

        return search_file(self.store, str(image), k, space, where=where)

    def tags(self, image: Any, k: int = 10) -> Results:
        """The tags of ``image`` (a new file is embedded first): its most probable classes,
        then the kinds WordNet says they are, each hit with its ``confidence`` (0..1)."""
        try:
            return search.image_tags(self.conn, image, k)
        except NotFoundError:
            if not _new_file(image):
                raise
        from semsearch_sqlite.queries.new_image import tag_file

        return tag_file(self.store, str(image), k)

    def words(self, query: str, k: int = 10, *, allow_unknown: bool = False) -> Results:
        """The vocabulary words nearest to ``query`` (unknown words: as for :meth:`search`)."""
        try:
            found = search.similar_words(self.conn, query, k, allow_unknown=allow_unknown)
        except UnknownWordsError as e:
            raise hints.explained(self.conn, e) from None
        return hints.with_suggestions(self.conn, found)

    def focus(self, image: Any, word: str, k: int = 10, *, where: str | None = None) -> Results:
        """Images similar to ``image`` as far as the ImageNet class nearest to ``word`` goes."""
        return search.focused_search(self.conn, image, word, k, where=where)

    def tagged(self, word: str, k: int = 10) -> Results:
        """Images whose stored tags include ``word``."""
        return search.images_tagged(self.conn, word, k)

    def duplicates(self, threshold: float | None = None) -> Results:
        """Groups of near-identical photos (hits numbered by ``group``, the suggested keeper
        first with ``keeper=True`` and ``why``; ``distance`` to the keeper). ``threshold``
        is a cosine distance in the visual space."""
        from semsearch_sqlite.queries.duplicates import duplicate_images

        return duplicate_images(self.conn, threshold)

    def duplicates_of(self, image: Any, threshold: float | None = None) -> Results:
        """The near-duplicates of one stored image."""
        from semsearch_sqlite.queries.duplicates import duplicates_of

        return duplicates_of(self.conn, image, threshold)

    @property
    def images_root(self) -> str | None:
        """The folder the images were ingested from (stored paths are relative to it)."""
        from semsearch_sqlite.queries.export import images_root

        return images_root(self.conn)

    def export(self, results: Results, fmt: str = "csv") -> str:
        """``results`` as CSV or JSON text: every hit, with ``abs_path`` when the ingested
        folder is known and the photos' EXIF fields, e.g.
        ``Path("cats.csv").write_text(photos.export(photos.search("cat", k=500)))``."""
        from semsearch_sqlite.queries.export import export_text

        records = results.as_records(self.images_root, self.conn)
        return export_text(records, fmt, unknown=results.unknown, note=results.note)

    def close(self) -> None:
        """Close the database."""
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Collection {self.path}>"


def _new_file(image: Any) -> bool:
    """Whether ``image`` names an image file on disk (to embed, since it isn't stored)."""
    return isinstance(image, (str, os.PathLike)) and Path(image).expanduser().is_file()


def open(path: str | os.PathLike[str], *, writable: bool = False) -> Collection:  # noqa: A001 - the API's name
    """Open the semsearch database at ``path`` for queries."""
    return Collection(Store.open(path, readonly=not writable))
