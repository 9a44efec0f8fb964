"""Near-duplicates: groups of photos whose visual vectors are almost the same (resized,
recompressed or lightly cropped copies; bursts at a stricter threshold).

Each image asks the visual index for its few nearest neighbours (not every other image),
pairs closer than the threshold are joined with union-find, and the groups come out
biggest first. Small collections are scored in blocks of one matrix product.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.queries.search import Results, resolve_image, space_matrix
from semsearch_sqlite.storage import rows
from semsearch_sqlite.vectors.codes import CompactMatrix

# cosine distance in the visual space below which two photos count as the same picture;
# chosen with benchmarks/duplicates.py (precision/recall on generated copies)
DEFAULT_THRESHOLD = 0.12
# neighbours each image asks the index for: a group larger than this is still found
# whole through its members' neighbours
NEIGHBOURS = 8
# below this many images, neighbours come from exact blocks of matrix products
EXACT_MAX = 20_000
BLOCK_ROWS = 1024


@dataclass
class DuplicateHit:
    """One image of a duplicate group; ``distance`` is to the group's first image."""

    group: int
    image_id: int
    path: str
    label: str | None
    distance: float
    rank: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_threshold(threshold: Any) -> float:
    """``threshold`` as a cosine distance in (0, 1] (None: the default)."""
    if threshold is None:
        return DEFAULT_THRESHOLD
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise QueryError(f"threshold must be a number between 0 and 1, not {threshold!r}") from None
    if not 0 < value <= 1:
        raise QueryError(f"threshold must be between 0 and 1 (a cosine distance), not {value}")
    return value


def _pairs(vectors: np.ndarray, ids: np.ndarray, m: Any, threshold: float) -> list[tuple[int, int, float]]:
    """``(row, row, distance)`` of near pairs: each row against its nearest neighbours."""
    n = len(ids)
    want = min(n, NEIGHBOURS + 1)
    out: list[tuple[int, int, float]] = []
    if n <= EXACT_MAX or m.ivf is None:
        for start in range(0, n, BLOCK_ROWS):
            scores = vectors[start : start + BLOCK_ROWS] @ vectors.T
            part = np.argpartition(-scores, want - 1, axis=1)[:, :want]
            for r, (cols, row_scores) in enumerate(zip(part, np.take_along_axis(scores, part, axis=1))):
                i = start + r
                for j, s in zip(cols.tolist(), row_scores.tolist()):
                    if j > i and 1.0 - s <= threshold:
                        out.append((i, j, 1.0 - s))
        return out
    for i in range(n):  # one index probe per image: about n * scan share, not n * n
        for item, distance in m.top_k(vectors[i], want):
            j = m.position[item]
            if j != i and distance <= threshold:
                out.append((min(i, j), max(i, j), distance))
    return out


def duplicate_groups(conn: sqlite3.Connection, threshold: Any = None) -> list[list[tuple[int, float]]]:
    """Groups of near-identical images: lists of ``(image_id, distance to the first)``,
    the first being the group's lowest id; biggest groups first."""
    limit = check_threshold(threshold)
    m = space_matrix(conn, "visual")
    if isinstance(m, CompactMatrix):
        raise QueryError(
            f"near-duplicates over {len(m)} images held as compact codes (tables over 2 GiB of "
            "vectors) are not supported yet; use similar_to_image(id) for one image's near copies"
        )
    ids, vectors = m.ids, m.vectors
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in _pairs(vectors, ids, m, limit):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(len(ids)):
        members.setdefault(root(i), []).append(i)
    groups = []
    for rows_ in members.values():
        if len(rows_) < 2:
            continue
        rows_.sort(key=lambda r: int(ids[r]))
        first = vectors[rows_[0]]
        groups.append([(int(ids[r]), round(max(0.0, float(1.0 - vectors[r] @ first)), 6)) for r in rows_])
    groups.sort(key=lambda g: (-len(g), g[0][0]))
    return groups


def duplicate_images(conn: sqlite3.Connection, threshold: Any = None) -> Results:
    """Every image that has a near-duplicate, as hits numbered by ``group``."""
    groups = duplicate_groups(conn, threshold)
    found = rows.image_rows(conn, [i for g in groups for i, _ in g])
    hits = []
    for number, group in enumerate(groups, 1):
        for rank, (image_id, distance) in enumerate(group, 1):
            r = found.get(image_id)
            if r is not None:
                hits.append(DuplicateHit(number, image_id, r.path, r.label, distance, rank))
    return Results(hits, note=f"{len(groups)} groups of near-duplicates (threshold {check_threshold(threshold)})")


def duplicates_of(conn: sqlite3.Connection, image: Any, threshold: Any = None, k: int = 50) -> Results:
    """The near-duplicates of one image (its visual neighbours within the threshold)."""
    from semsearch_sqlite.queries.search import similar_to_image

    limit = check_threshold(threshold)
    image_id = resolve_image(conn, image)
    hits = [h for h in similar_to_image(conn, image_id, k, "visual").hits if h.distance <= limit]
    return Results(hits)


def groups_as_json(results: Results) -> dict[str, Any]:
    """``{"groups": [{"images": [{"image_id", "path", "distance"}, ...]}, ...]}``."""
    out: list[dict[str, Any]] = []
    for h in results.hits:
        if h.rank == 1:
            out.append({"images": []})
        out[-1]["images"].append({"image_id": h.image_id, "path": h.path, "label": h.label, "distance": h.distance})
    return {"groups": out}
