"""Near-duplicates: groups of photos whose visual vectors are almost the same (resized,
recompressed or lightly cropped copies; bursts at a stricter threshold).

Each image asks the visual index for its few nearest neighbours (not every other image),
pairs closer than the threshold are joined with union-find, and the groups come out
biggest first. Small collections are scored in blocks of one matrix product.

Each group then gets a suggested keeper (:func:`choose_keeper`: the most pixels, then the
largest file, then the earliest date), listed first, with the others by distance to it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
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
    """One image of a duplicate group; ``distance`` is to the group's keeper (the first)."""

    group: int
    image_id: int
    path: str
    label: str | None
    distance: float
    rank: int
    # the suggested copy to keep, and why (on the keeper only)
    keeper: bool = False
    why: str | None = None
    width: int | None = None
    height: int | None = None
    size: int | None = None
    # the EXIF date if known, else the file's modification time (ISO, UTC)
    date: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DuplicateGroup:
    """One group of copies, keeper first, then by distance to it."""

    number: int
    hits: list[DuplicateHit] = field(default_factory=list)

    @property
    def keeper(self) -> DuplicateHit:
        return self.hits[0]


def human_size(n: int | None) -> str:
    """A file size for people: ``812 B``, ``34.5 KB``, ``2.1 MB``."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


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


def _date(facts: dict[str, Any]) -> str | None:
    """A photo's date: its EXIF ``taken_at``, else its file's modification time."""
    if facts.get("taken_at"):
        return str(facts["taken_at"])
    if facts.get("mtime") is not None:
        return datetime.fromtimestamp(float(facts["mtime"]), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return None


def _keeper_key(image_id: int, facts: dict[str, Any]) -> tuple[Any, ...]:
    pixels = (facts.get("width") or 0) * (facts.get("height") or 0)
    date = _date(facts)
    return (-pixels, -(facts.get("size") or 0), date is None, date or "", image_id)


def choose_keeper(facts: dict[int, dict[str, Any]]) -> tuple[int, str]:
    """The copy to keep among ``facts`` (``rows.file_facts`` of one group) and why: the
    most pixels (the original, not a downsized copy), then the largest file (the least
    recompressed), then the earliest date (the first taken or saved), then the lowest id."""
    order = sorted(facts, key=lambda i: _keeper_key(i, facts[i]))
    best, runner = order[0], order[1] if len(order) > 1 else None
    b = facts[best]
    if runner is None:
        return best, "the only copy"
    r = facts[runner]
    if (b.get("width") or 0) * (b.get("height") or 0) != (r.get("width") or 0) * (r.get("height") or 0):
        return best, f"most pixels ({b.get('width')}\u00d7{b.get('height')})"
    if (b.get("size") or 0) != (r.get("size") or 0):
        return best, "same pixels, largest file (least recompressed)"
    if _date(b) != _date(r):
        return best, "same pixels and file size, earliest date"
    return best, "the copies are alike; lowest id"


def duplicate_review(conn: sqlite3.Connection, threshold: Any = None) -> list[DuplicateGroup]:
    """Every duplicate group with its facts (size, resolution, date) and suggested keeper;
    biggest groups first, within a group the keeper first, then by distance to it."""
    groups = duplicate_groups(conn, threshold)
    if not groups:
        return []
    m = space_matrix(conn, "visual")
    facts = rows.file_facts(conn, [i for g in groups for i, _ in g])
    out = []
    for number, group in enumerate(groups, 1):
        present = {i: facts[i] for i, _ in group if i in facts}
        if not present:
            continue
        keeper, why = choose_keeper(present)
        anchor = m.vector(keeper)
        hits = []
        for image_id, f in present.items():
            v = m.vector(image_id)
            d = 0.0
            if image_id != keeper and v is not None and anchor is not None:
                d = round(max(0.0, float(1.0 - v @ anchor)), 6)
            hits.append(
                DuplicateHit(
                    number,
                    image_id,
                    f["path"],
                    f["label"],
                    d,
                    0,
                    image_id == keeper,
                    why if image_id == keeper else None,
                    f["width"],
                    f["height"],
                    f["size"],
                    _date(f),
                )
            )
        hits.sort(key=lambda h: (not h.keeper, h.distance, h.image_id))
        for rank, h in enumerate(hits, 1):
            h.rank = rank
        out.append(DuplicateGroup(number, hits))
    return out


def duplicate_images(conn: sqlite3.Connection, threshold: Any = None) -> Results:
    """Every image that has a near-duplicate, as hits numbered by ``group`` (the keeper of
    each group first: see :func:`duplicate_review`)."""
    groups = duplicate_review(conn, threshold)
    hits = [h for g in groups for h in g.hits]
    n = len(groups)
    note = (
        f"{n} group{'' if n == 1 else 's'} of near-duplicates, {len(hits)} photos "
        f"(threshold {check_threshold(threshold)}); the first of each group is the suggested keeper"
    )
    return Results(hits, note=note)


def duplicates_of(conn: sqlite3.Connection, image: Any, threshold: Any = None, k: int = 50) -> Results:
    """The near-duplicates of one image (its visual neighbours within the threshold)."""
    from semsearch_sqlite.queries.search import similar_to_image

    limit = check_threshold(threshold)
    image_id = resolve_image(conn, image)
    hits = [h for h in similar_to_image(conn, image_id, k, "visual").hits if h.distance <= limit]
    return Results(hits)


def groups_as_json(results: Results) -> dict[str, Any]:
    """``{"groups": [{"images": [{"image_id", "path", "label", "distance", "keeper", ...}, ...]}, ...]}``,
    the keeper first in each group."""
    out: list[dict[str, Any]] = []
    for h in results.hits:
        if h.rank == 1:
            out.append({"images": []})
        item = h.as_dict()
        del item["group"], item["rank"]
        out[-1]["images"].append(item)
    return {"groups": out}
