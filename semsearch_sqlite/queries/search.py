"""The queries, written once: the CLI, the Python API, the SQL functions and the
Datasette pages all call these.

Every function takes a ``sqlite3`` connection with sqlite-vec loaded (a
:class:`~semsearch_sqlite.storage.store.Store`'s ``conn``, or one of Datasette's).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.errors import NotFoundError, QueryError, StoreError, UnknownWordsError
from semsearch_sqlite.media.files import normalise_label, sha256_file
from semsearch_sqlite.model.conse import FocusTarget, resolve_focus
from semsearch_sqlite.model.relations import LabelSet, label_set, rank_photos, rank_query
from semsearch_sqlite.model.semantic import DEFAULT_STRONG_DISTANCE, MATCH_META
from semsearch_sqlite.queries.filters import Filter, allowed_ids
from semsearch_sqlite.storage import rows
from semsearch_sqlite.storage.cache import ProcessCache
from semsearch_sqlite.storage.changes import cache_version
from semsearch_sqlite.storage.models import CLASSES_MODEL, CLASSIFIER_MODEL, SEMANTIC_MODEL, load_model, model_config
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL, read_float_rows, vec_table_dim
from semsearch_sqlite.text.query import parse_query
from semsearch_sqlite.text.related import related_space
from semsearch_sqlite.text.tags import is_display_word, nearest_tags
from semsearch_sqlite.text.vocabulary import word_ranks, word_space
from semsearch_sqlite.vectors import matrix
from semsearch_sqlite.vectors.maths import unit, unit_rows
from semsearch_sqlite.vectors.matrix import MAX_K  # the largest k a query answers; the plugin pages up to it
from semsearch_sqlite.vectors.rerank import FEEDBACK_SHORTLIST, FEEDBACK_TOP, feedback_order

SPACES = ("visual", "semantic")
_INT64 = (-(2**63), 2**63 - 1)
_SPACE_TABLES = {"visual": VEC_VISUAL, "semantic": VEC_SEMANTIC}


@dataclass
class ImageHit:
    """One image in a result list."""

    image_id: int
    path: str
    label: str | None
    distance: float
    rank: int
    # text queries: "strong" or "weak" (see model/relations.py)
    match: str | None = None
    # text queries: a 0..1 match confidence that explains the rank (it decreases down the
    # list; strong hits from 0.5 up)
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WordHit:
    """One word in a result list."""

    word: str
    distance: float
    rank: int
    # tags: how sure the tag is (0..1); None for word neighbours
    confidence: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Results:
    """Hits plus what the query was understood as."""

    hits: list[Any]
    unknown: list[str] = field(default_factory=list)
    note: str | None = None
    # text queries: how many hits are strong matches (they come first)
    strong: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "hits": [h.as_dict() for h in self.hits],
            "unknown": self.unknown,
            "note": self.note,
            "strong": self.strong,
        }

    def as_records(self, root: str | None = None, conn: sqlite3.Connection | None = None) -> list[dict[str, Any]]:
        """The hits as flat rows for CSV/JSON export (``abs_path`` beside ``path`` under
        ``root``, the ingested folder; with ``conn``, the photos' EXIF fields too)."""
        from semsearch_sqlite.queries.export import records

        return records(self.hits, root, conn)


def resolve_image(conn: sqlite3.Connection, image: Any, *, files: bool = True) -> int:
    """The id of ``image``: an id (int, whole float or ASCII digits), a stored path
    (relative to the ingested folder), or the path of a stored file given as absolute or
    relative to the current directory (matched through the ingested folder, else by its
    SHA-256). ``files=False`` (SQL) never looks at the file system."""
    if isinstance(image, bool) or image is None:
        raise QueryError("give an image id or stored path")
    if isinstance(image, (float, np.floating)):
        if not np.isfinite(image) or float(image) != int(image):
            raise QueryError(f"an image id is a whole number, not {float(image)!r}")
        image = int(image)
    if isinstance(image, str) and image.strip().isascii() and image.strip().isdigit():
        image = int(image.strip())
    if isinstance(image, (int, np.integer)):
        image_id = int(image)
        if not _INT64[0] <= image_id <= _INT64[1] or not rows.image_id_exists(conn, image_id):
            raise NotFoundError(f"no image with id {image_id}; list them with: select id, path from images")
        return image_id
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        found = rows.image_id_for_path(conn, text)
        if found is None and files:
            found = _stored_file(conn, text)
        if found is None:
            raise NotFoundError(f"no image stored with path {text!r}; list them with: select id, path from images")
        return found
    raise QueryError(f"an image is an id or a path, not {type(image).__name__}")


def _word(value: Any, what: str) -> str:
    """A text argument, or a QueryError naming it."""
    if not isinstance(value, str):
        raise QueryError(f"{what} must be text, not {'null' if value is None else type(value).__name__}")
    if not value.strip():
        raise QueryError(f"{what} is empty; give a word such as 'cat'")
    return value


def _stored_file(conn: sqlite3.Connection, text: str) -> int | None:
    """The row of a file on this machine that is stored: by its place under the ingested
    folder, else (the folder moved, or a copy) by its bytes."""
    path = Path(text).expanduser()
    if not path.is_file():
        return None
    try:
        resolved = path.resolve()
    except OSError:
        return None
    root = rows.read_meta(conn, "images_root")
    if root:
        try:
            rel = resolved.relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            rel = None
        if rel is not None:
            found = rows.image_id_for_path(conn, rel)
            if found is not None:
                return found
    try:
        return rows.image_id_for_sha256(conn, sha256_file(resolved))
    except OSError:
        return None


def _hits(conn: sqlite3.Connection, pairs: list[tuple[int, float]]) -> list[ImageHit]:
    if not pairs:
        return []
    found = rows.image_rows(conn, [i for i, _ in pairs])
    out = []
    for rank, (i, d) in enumerate(pairs, 1):
        r = found.get(i)
        if r is not None:  # a vector whose image row is gone (mid-write): skip it
            out.append(ImageHit(i, r.path, r.label, round(d, 6), rank))
    return out


def space_matrix(conn: sqlite3.Connection, space: str) -> matrix.Matrix:
    """The cached matrix of image vectors in ``space`` ("visual" or "semantic")."""
    if not isinstance(space, str) or space not in _SPACE_TABLES:
        raise QueryError(f"space must be one of {', '.join(SPACES)}, not {space!r}")
    m = matrix.matrix(conn, _SPACE_TABLES[space])
    if len(m) == 0:
        raise StoreError(f"this database has no {space} vectors yet; run semsearch-sqlite ingest")
    return m


def text_vector(conn: sqlite3.Connection, query: Any, *, allow_unknown: bool = False) -> tuple[np.ndarray, list[str]]:
    """A text query as a unit vector in the images' semantic space, and its unknown words."""
    qv = word_space(conn).image_query(query, allow_unknown=allow_unknown)
    return qv.vector, qv.unknown


# Rocchio weights: the query, the mean of the liked images, the mean of the disliked ones
ROCCHIO_QUERY, ROCCHIO_LIKE, ROCCHIO_UNLIKE = 1.0, 0.75, 0.25


def image_ids(value: Any) -> list[int]:
    """Feedback ids from a list, or text such as ``"12,15"`` / ``"[12, 15]"`` (None: none)."""
    if value is None or value == "":
        return []
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [int(value)]
    items = value.strip().strip("[]").split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if isinstance(item, bool) or not text.lstrip("-").isdigit():
            raise QueryError(f"like/unlike take image ids such as 12,15, not {text!r}")
        out.append(int(text))
    return out


def rocchio(m: matrix.Matrix, query: np.ndarray, like: Sequence[int] = (), unlike: Sequence[int] = ()) -> np.ndarray:
    """The query moved towards the liked images and away from the disliked ones (Rocchio,
    in the space being searched), as a unit vector."""
    if not like and not unlike:
        return query

    def mean_of(ids: Sequence[int]) -> np.ndarray:
        vectors = []
        for i in ids:
            v = m.vector(i)
            if v is None:
                raise NotFoundError(f"no image with id {i} in this space; list them with: select id, path from images")
            vectors.append(v)
        return np.mean(vectors, axis=0) if vectors else np.zeros_like(query)

    moved = ROCCHIO_QUERY * query + ROCCHIO_LIKE * mean_of(like) - ROCCHIO_UNLIKE * mean_of(unlike)
    return unit(moved.astype(np.float32))


def visual_feedback(conn: sqlite3.Connection, pairs: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Text hits ``(id, semantic distance)``, best first, re-ranked by
    :func:`~semsearch_sqlite.vectors.rerank.feedback_order` (pseudo-relevance feedback in
    the visual space). Distances stay the semantic ones (the strong/weak cue reads
    them); hits past the shortlist keep their order."""
    head = pairs[:FEEDBACK_SHORTLIST]
    if len(head) <= FEEDBACK_TOP:
        return pairs
    visual = _visual_rows(conn, [i for i, _ in head])
    if visual is None:
        return pairs
    order = feedback_order(np.array([1.0 - d for _, d in head], np.float32), visual)
    return [head[i] for i in order] + pairs[FEEDBACK_SHORTLIST:]


# a visual matrix up to this size loads faster than 100 of its rows read by id (800 x 1280: 15 ms)
SMALL_MATRIX_BYTES = 16 << 20


def _visual_rows(conn: sqlite3.Connection, ids: list[int]) -> np.ndarray | None:
    """Unit visual vectors of ``ids`` in that order (None if any is missing): from this
    process's visual matrix when it is loaded (a warm server) or small, else read by id
    (100 rows: 20-80 ms), so a one-off text query doesn't load every image's features."""
    dim = vec_table_dim(conn, VEC_VISUAL)
    if dim is None:
        return None
    # the images' count from the semantic matrix the text query already holds (counting
    # the visual table's rows would cost a b-tree scan per query)
    if (
        VEC_VISUAL in matrix.cached_tables(rows.database_key(conn))
        or len(space_matrix(conn, "semantic")) * dim * 4 <= SMALL_MATRIX_BYTES
    ):
        m = space_matrix(conn, "visual")
        found = [m.vector(i) for i in ids]
        return None if any(v is None for v in found) else np.asarray(found, np.float32)
    got, raw = read_float_rows(conn, VEC_VISUAL, np.asarray(ids, np.int64), dim)
    where = {int(i): n for n, i in enumerate(got)}
    if any(i not in where for i in ids):
        return None
    return unit_rows(raw[[where[i] for i in ids]])


def similar_images(
    conn: sqlite3.Connection,
    query: Any,
    k: Any = 10,
    *,
    allow_unknown: bool = False,
    where: str | None = None,
    filters: Sequence[Filter] = (),
    like: Any = None,
    unlike: Any = None,
) -> Results:
    """Text -> images: the ``k`` best images for a query such as ``"cat sofa"``, strong
    matches first (``Results.strong`` says how many), each with a ``score`` and marked
    ``strong`` or ``weak``; the note says so when none is strong.

    Labelled photos are ranked by how the query relates to their label (the label
    itself, a kind it belongs to, an association: :mod:`semsearch_sqlite.model.relations`),
    then by their own vector; unlabelled photos by their vector's distance.
    ``where`` (SQL over ``images`` columns) and ``filters`` restrict the candidates
    before the top ``k``: ``where="label = 'pizza'"`` gives the ``k`` best pizzas.
    ``like`` / ``unlike`` (image ids) refine the query by relevance feedback (ranked by
    vector alone); the disliked images are left out of the results.
    """
    k = matrix.clamp_k(k)
    vector, unknown = text_vector(conn, query, allow_unknown=allow_unknown)
    m = space_matrix(conn, "semantic")
    liked, disliked = image_ids(like), image_ids(unlike)
    vector = rocchio(m, vector, liked, disliked)
    allowed = allowed_ids(conn, where, filters)
    strong_distance = rows.read_meta(conn, MATCH_META)
    strong_cos = 1.0 - (DEFAULT_STRONG_DISTANCE if strong_distance is None else float(strong_distance))
    labelled = None if liked or disliked else _labelled(conn, m)
    if labelled is not None:
        hits = _related_hits(conn, m, labelled, query, vector, k, allowed, strong_cos, unknown)
    else:
        pairs = m.top_k(vector, max(k, FEEDBACK_SHORTLIST), exclude=set(disliked) or None, allowed=allowed)
        hits = _hits(conn, visual_feedback(conn, pairs)[:k])
        _, scores, flags = rank_photos([], np.full(len(hits), -1), np.array([1 - h.distance for h in hits]), strong_cos)
        ceiling = 1.0
        for h, sc, st in zip(hits, scores.tolist(), flags.tolist()):
            ceiling = min(ceiling, sc)  # visual feedback may reorder: the score follows the rank
            h.match, h.score = ("strong" if st else "weak"), round(ceiling, 4)
        hits.sort(key=lambda h: h.match != "strong")
        for rank, h in enumerate(hits, 1):
            h.rank = rank
    strong = sum(h.match == "strong" for h in hits)
    note = None
    if hits and not strong:
        note = (
            "no close match: every hit is a weak match "
            "(nothing here is what the query names, a kind of it or close to it)"
        )
    return Results(hits, unknown, note, strong)


@dataclass
class _Labelled:
    """A collection's labels for search: the label set and each matrix row's label index (-1: none)."""

    labels: LabelSet
    photo_label: np.ndarray


_labelled_cache: ProcessCache[_Labelled | None] = ProcessCache(8)


def _labelled(conn: sqlite3.Connection, m: matrix.Matrix) -> _Labelled | None:
    """The cached :class:`_Labelled` of this database (None when no photo is labelled)."""
    db = rows.database_key(conn)

    def load() -> _Labelled | None:
        ids, labels = rows.image_labels(conn)
        if not labels:
            return None
        names = sorted(set(labels))
        where = {name: i for i, name in enumerate(names)}
        photo_label = np.full(len(m), -1, np.int64)
        for i, lab in zip(ids.tolist(), labels):
            pos = m.position.get(i)
            if pos is not None:
                photo_label[pos] = where[lab]
        config = model_config(conn, SEMANTIC_MODEL) or {}
        space = word_space(conn)
        classes = load_model(conn, CLASSES_MODEL)
        return _Labelled(
            label_set(
                names,
                config.get("label_kinds"),
                space.vector,
                space.matrix.vectors,
                config.get("label_evidence"),
                None if classes is None else classes[0].get("vectors"),
                word_ranks(space),
                related_space(conn, space),
            ),
            photo_label,
        )

    found = _labelled_cache.get_or_load((db, cache_version(conn, db), id(m)), load, group=db)
    return found or None


def _related_hits(
    conn: sqlite3.Connection,
    m: matrix.Matrix,
    labelled: _Labelled,
    query: Any,
    vector: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
    strong_cos: float,
    unknown: Sequence[str] = (),
) -> list[ImageHit]:
    """The first ``k`` hits of :func:`~semsearch_sqlite.model.relations.rank_query`
    (words left out as ``unknown`` take no part: "cat zzqx" is "cat")."""
    terms = [t for t in parse_query(query) if t.word not in unknown and t.word.lower() not in unknown]
    space = word_space(conn)
    sims = m.vectors @ vector
    _, order, scores, flags = rank_query(
        [t.word for t in terms if t.weight > 0],
        space.vector,
        space.matrix.vectors,
        labelled.labels,
        labelled.photo_label,
        sims,
        strong_cos,
        without=[t.word for t in terms if t.weight < 0],
    )
    if allowed is not None:
        order = order[np.isin(m.ids[order], allowed)]
    top = order[:k]
    hits = _hits(conn, [(int(m.ids[i]), float(1.0 - sims[i])) for i in top])
    by_id = {int(m.ids[i]): i for i in top}
    for rank, h in enumerate(hits, 1):
        i = by_id[h.image_id]
        h.rank, h.score, h.match = rank, round(float(scores[i]), 4), "strong" if flags[i] else "weak"
    return hits


def similar_to_image(
    conn: sqlite3.Connection,
    image: Any,
    k: Any = 10,
    space: str = "visual",
    *,
    where: str | None = None,
    filters: Sequence[Filter] = (),
    like: Any = None,
    unlike: Any = None,
) -> Results:
    """Image -> images in the ``visual`` (CNN) or ``semantic`` (word) space (``like`` /
    ``unlike``: relevance feedback, as in :func:`similar_images`)."""
    k = matrix.clamp_k(k)
    image_id = resolve_image(conn, image)
    m = space_matrix(conn, space)
    v = m.vector(image_id)
    if v is None:
        raise NotFoundError(f"image {image_id} has no {space} vector yet; rerun semsearch-sqlite ingest")
    liked, disliked = image_ids(like), image_ids(unlike)
    v = rocchio(m, v, liked, disliked)
    allowed = allowed_ids(conn, where, filters)
    return Results(_hits(conn, m.top_k(v, k, exclude={image_id, *disliked}, allowed=allowed)))


def similar_to_vector(
    conn: sqlite3.Connection,
    vector: np.ndarray,
    k: Any = 10,
    space: str = "visual",
    *,
    where: str | None = None,
    filters: Sequence[Filter] = (),
) -> Results:
    """Images nearest to a vector of the given space (e.g. a new image's features)."""
    k = matrix.clamp_k(k)
    m = space_matrix(conn, space)
    v = unit(np.asarray(vector, dtype=np.float32))
    if v.shape[0] != m.dim:
        raise QueryError(f"vector has {v.shape[0]} dimensions; the {space} space has {m.dim}")
    return Results(_hits(conn, m.top_k(v, k, allowed=allowed_ids(conn, where, filters))))


def image_tags(conn: sqlite3.Connection, image: Any, k: Any = 10) -> Results:
    """Image -> its ``k`` tags with their confidences: the stored ones (its classes, then
    their WordNet kinds); an image without stored tags gets its nearest words."""
    k = matrix.clamp_k(k)
    image_id = resolve_image(conn, image)
    tags = rows.stored_tags(conn, image_id, k)
    if len(tags) < k:
        m = matrix.matrix(conn, VEC_SEMANTIC)
        v = m.vector(image_id)
        if v is None:
            if tags:
                return Results(_tag_hits(tags))
            raise NotFoundError(f"image {image_id} has no semantic vector yet; rerun semsearch-sqlite ingest")
        return tags_for_vector(conn, v, k, tags)
    return Results(_tag_hits(tags))


def _tag_hits(tags: Sequence[tuple[str, float, float]]) -> list[WordHit]:
    return [WordHit(w, round(d, 6), r, round(c, 4)) for r, (w, d, c) in enumerate(tags, 1)]


def tags_for_vector(
    conn: sqlite3.Connection, vector: np.ndarray, k: Any = 10, leading: Sequence[tuple[str, float, float]] | None = None
) -> Results:
    """The ``k`` tags of a word-space vector (e.g. a new image's): ``leading`` (its tags in
    its own sense, see ``model/sense_tags.py``) when it has any, else the nearest tag words."""
    k = matrix.clamp_k(k)
    tags = nearest_tags(
        word_space(conn),
        np.asarray(vector, dtype=np.float32)[None, :],
        k,
        leading=None if leading is None else [list(leading)],
    )[0]
    return Results(_tag_hits(tags))


def images_tagged(conn: sqlite3.Connection, word: str, k: Any = 10) -> Results:
    """Images whose stored tags include ``word``, best-ranked first."""
    k = matrix.clamp_k(k)
    word = _word(word, "the tag word").strip().lower()
    # a label leads its photos' tags as it is stored: "car side" for the folder car_side
    return Results(_hits(conn, rows.images_with_tag(conn, list(dict.fromkeys([word, normalise_label(word)])), k)))


def similar_words(conn: sqlite3.Connection, query: Any, k: Any = 10, *, allow_unknown: bool = False) -> Results:
    """Word -> words: the ``k`` vocabulary words nearest to a query (its own words,
    punctuation and numbers excluded)."""
    k = matrix.clamp_k(k)
    space = word_space(conn)
    qv = space.query(query, allow_unknown=allow_unknown)
    exclude = {space.ids[t.word] for t in qv.terms if t.word in space.ids}
    # a few extra candidates make up for the punctuation and numbers dropped below
    pairs = space.matrix.top_k(qv.vector, 2 * k + 20, exclude=exclude)
    shown = [(i, d) for i, d in pairs if is_display_word(space.words[i])][:k]
    return Results([WordHit(space.words[i], round(d, 6), r) for r, (i, d) in enumerate(shown, 1)], qv.unknown)


def focus_class(conn: sqlite3.Connection, focus: str) -> FocusTarget:
    """The ImageNet class or group of classes the word(s) ``focus`` mean (see
    :func:`~semsearch_sqlite.model.conse.resolve_focus`); FocusError when none is near."""
    classes = load_model(conn, CLASSES_MODEL)
    if classes is None:
        raise StoreError("this database has no ImageNet class vectors; re-run ingest with this version")
    arrays, config = classes
    try:
        qv = word_space(conn).query(focus).vector
    except UnknownWordsError:
        qv = None  # a class or group name may still match
    return resolve_focus(focus, list(config["names"]), arrays["vectors"], arrays["known"], qv)


def focused_search(
    conn: sqlite3.Connection,
    image: Any,
    focus: str,
    k: Any = 10,
    *,
    where: str | None = None,
    filters: Sequence[Filter] = (),
) -> Results:
    """Images similar to ``image`` with respect to one class ("similar cats, not similar sofas").

    As in the talk: the CNN's activations are re-weighted by the final-layer weights of
    the ImageNet class that ``focus`` means (for a group such as "bird", the mean of its
    classes' weights), negative weights set to 0 so only the evidence *for* the class
    counts, then compared by cosine.
    """
    k = matrix.clamp_k(k)
    image_id = resolve_image(conn, image)
    head = load_model(conn, CLASSIFIER_MODEL)
    if head is None:
        raise StoreError("this database's backbone has no classifier weights; focused search needs them")
    target = focus_class(conn, focus)
    kernel = head[0]["kernel"]
    weights = np.maximum(kernel[:, list(target.classes)].mean(axis=1), 0).astype(np.float32)
    m = space_matrix(conn, "visual")
    v = m.vector(image_id)
    if v is None:
        raise NotFoundError(f"image {image_id} has no visual vector yet; rerun semsearch-sqlite ingest")
    if weights.shape[0] != m.dim:
        raise StoreError("the stored classifier weights don't match the visual vectors; re-run ingest --rebuild")
    allowed = allowed_ids(conn, where, filters)
    return Results(
        _hits(conn, m.top_k(v, k, exclude={image_id}, weights=weights, allowed=allowed)), note=target.describe()
    )


def warm(conn: sqlite3.Connection) -> None:
    """Load the word space and the image matrices into this process's caches, so the
    first query doesn't pay for it (Datasette counts it against sql_time_limit_ms)."""
    if rows.has_words(conn):
        word_space(conn)
    for table in _SPACE_TABLES.values():
        matrix.matrix(conn, table)


def ranked_count(
    conn: sqlite3.Connection,
    space: str = "semantic",
    *,
    exclude_self: bool = False,
    filters: Sequence[Filter] = (),
    left_out: int = 0,
) -> int:
    """How many images one ranking in ``space`` can return (for "1-24 of N" and paging):
    every image with a vector (that passes ``filters``), less the query image itself and
    ``left_out`` disliked ones, at most ``MAX_K``."""
    n = len(space_matrix(conn, space))
    allowed = allowed_ids(conn, filters=filters) if filters else None
    if allowed is not None:
        n = min(n, len(allowed))
    n -= (1 if exclude_self else 0) + left_out
    return max(0, min(n, MAX_K))
