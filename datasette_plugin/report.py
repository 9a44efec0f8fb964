"""``/<db>/-/semsearch/report``: the latest ``semsearch-sqlite evaluate`` run, read back
from the ``evaluations`` table and told in plain words: the headline figures, each with
a line saying what it measures; the methods side by side; per-label P@10 as an SVG bar
chart; and the labels a search by name ranks worst (lowest average precision), with the
wrong images that get ahead of their own and the own images it ranks last."""

from __future__ import annotations

import math
import os
import sqlite3
from datetime import datetime
from typing import Any

from datasette import Forbidden, Response

from semsearch_sqlite.queries import search
from semsearch_sqlite.storage import rows

from .chart import Series, bar_chart
from .compat import may_view_table, resolve
from .render import card, cards, render, section

WORST_SHOWN = 5  # labels shown with their images
EXAMPLES_SHOWN = 3  # images of each of those labels (one row of the grid)
INTRUDERS_SHOWN = 12  # wrong images shown per label
LAST_SHOWN = 4  # a label's own images ranked last
TEXT_COLOUR = "#2f6db5"
VISUAL_COLOUR = "#e0912f"
MAKE_ONE = "semsearch-sqlite evaluate {path}"
METHOD_NOTES = {
    "auto": "this database's own model, trained again without the new labels",
    "conse": "no training: the image model's 1,000 ImageNet guesses, mixed as words (ConSE)",
    "chance": "a random order, for comparison",
}
# the methods table's columns (summary_rows' names) in plain words
METHOD_COLUMNS = {
    "seen P@10": "right in top 10, known labels",
    "zero-shot P@10": "right in top 10, new labels",
    "seen AP": "ranking, known labels",
    "zero-shot AP": "ranking, new labels",
    "tag@5 seen": "label in top 5 tags, known",
    "tag@5 zero-shot": "label in top 5 tags, new",
    "fit s": "training time (s)",
}
# provenance keys in plain words; hashes are left out
PROVENANCE_NAMES = {
    "backbone": "image model",
    "words_source": "word vectors",
    "semantic_method": "word-space model",
    "package_version": "semsearch-sqlite",
}


def when(iso: Any) -> str:
    """A stored ISO timestamp for people: ``1 December 2026, 20:21 UTC`` (as stored if unreadable)."""
    try:
        t = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso or "")
    zone = " UTC" if t.utcoffset() is not None and not t.utcoffset() else (t.strftime(" %z") if t.tzinfo else "")
    return f"{t.day} {t.strftime('%B %Y, %H:%M')}{zone}"


def fig(value: Any, digits: int = 3) -> str:
    """A figure for the page: ``0.400``; None, NaN and non-numbers as a dash."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return "\u2013"
    return f"{value:.{digits}f}"


def _mean(values: Any) -> float | None:
    nums = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(nums) / len(nums) if nums else None


def read_report(conn: sqlite3.Connection) -> dict[str, Any]:
    """The report's figures, from the newest row of ``evaluations`` (``{}`` if none)."""
    found = rows.latest_evaluation(conn)
    if found is None:
        return {}
    eval_id = found.id
    out: dict[str, Any] = {
        "id": eval_id,
        "created_at": found.created_at,
        "created": when(found.created_at),
        "count": found.runs,
    }
    figures, settings, provenance = found.figures, found.settings, found.provenance
    if not isinstance(figures, dict) or not isinstance(figures.get("visual_p_at_10"), dict):
        out["broken"] = f"evaluation {eval_id} has no readable figures"
        return out
    k = figures.get("k") if isinstance(figures.get("k"), int) and figures["k"] > 0 else 10
    classes = _classes(conn, figures, k)
    text = figures.get("text") or {}
    out.update(
        settings=settings if isinstance(settings, dict) else {},
        provenance=_provenance(provenance),
        figures=figures,
        k=k,
        classes=classes,
        summary={
            "visual_p": _mean(c["visual_p"] for c in classes),
            "semantic_p": _mean(c["semantic_p"] for c in classes),
            "text_p": _mean(c["text_p"] for c in classes) if text else None,
            "text_ap": _mean(c["text_ap"] for c in classes) if text else None,
            "tag_at_5": figures.get("tag_at_5"),
        },
    )
    names = [c["name"] for c in classes]
    series = []
    if text:
        series.append(
            Series(
                "text",
                f"text \u2192 image P@{k}",
                TEXT_COLOUR,
                {c["name"]: c["text_p"] for c in classes},
                {c["name"]: c["text_limit"] for c in classes},
            )
        )
    series.append(
        Series(
            "visual",
            f"image \u2192 image P@{k} (visual)",
            VISUAL_COLOUR,
            {c["name"]: c["visual_p"] for c in classes},
            {c["name"]: c["visual_limit"] for c in classes},
        )
    )
    out["chart"] = bar_chart(names, series, title=f"P@{k} per label, worst first")
    out["methods"], out["held_out"] = _methods(figures)
    out["worst"] = [_worst(conn, c) for c in worst_classes(classes)]
    return out


def worst_classes(classes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The labels a search by name ranks worst: lowest text AP first (visual P@k as a
    share of its limit where no text figures were stored), only those short of perfect."""
    if any(c["text_ap"] is not None for c in classes):
        failing = [c for c in classes if c["text_ap"] is not None and c["text_ap"] < 1 - 1e-9]
        failing.sort(key=lambda c: (c["text_ap"], c["name"]))
    else:
        failing = [c for c in classes if c["failing"]]  # already worst first
    return failing[:WORST_SHOWN]


def _worst(conn: sqlite3.Connection, c: dict[str, Any]) -> dict[str, Any]:
    """One failing label: its first images, and where a search for its name goes wrong:
    the wrong images ranked among the first ``n`` (``n`` = its number of images, so a
    perfect search would show none) and its own images ranked last."""
    c["examples"] = _examples(conn, c["name"])
    n = max(1, c["images"])

    def ranking() -> search.Results:
        total = search.ranked_count(conn, "semantic")
        return search.similar_images(conn, c["name"], total, allow_unknown=True)

    found = section(ranking, conn, c["name"])
    if "results" in found:
        hits = found["results"].hits
        own = [h for h in hits if h.label == c["name"]]
        wrong = [h for h in hits[:n] if h.label != c["name"]]
        found = {
            "window": n,
            "wrong_count": len(wrong),
            "own_in_window": n - len(wrong),
            "wrong": cards(conn, wrong[:INTRUDERS_SHOWN]),
            "last": cards(conn, own[-LAST_SHOWN:]) if len(own) > n - len(wrong) else [],
            "unknown": found["results"].unknown,
        }
    c["search"] = found
    return c


def _classes(conn: sqlite3.Connection, figures: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """One row per label, worst first.

    A label with fewer than ``k`` images can't fill a top ``k``: its P@k is at most
    ``n/k`` (``(n - 1)/k`` image to image). Labels are ranked by P@k as a share of that
    limit, then by AP (which has no such limit): text to image where the stored model
    was measured, else visual.
    """
    visual = figures.get("visual_p_at_10") or {}
    semantic = figures.get("semantic_p_at_10") or {}
    text = figures.get("text") or {}
    counts = rows.label_counts(conn)
    out = []
    for name in set(visual) | set(text):
        n = counts.get(name, 0)
        scores = text.get(name) if isinstance(text.get(name), dict) else {}
        row = {
            "name": name,
            "images": n,
            "text_p": _number(scores.get("p_at_10")),
            "text_ap": _number(scores.get("ap")),
            "visual_p": _number(visual.get(name)),
            "semantic_p": _number(semantic.get(name)),
            "text_limit": min(n, k) / k if n else None,
            "visual_limit": min(n - 1, k) / k if n > 1 else None,
        }
        p, limit = (row["text_p"], row["text_limit"]) if text else (row["visual_p"], row["visual_limit"])
        share = p / limit if p is not None and limit else p
        ap = row["text_ap"] if text else None
        row["failing"] = (share is not None and share < 1 - 1e-9) or (ap is not None and ap < 1 - 1e-9)
        row["_rank"] = (_sortable(share), _sortable(ap), _sortable(row["visual_p"]), name)
        out.append(row)
    out.sort(key=lambda r: r.pop("_rank"))
    return out


def _provenance(provenance: Any) -> dict[str, str]:
    """What made the evaluated database, for one line of the page, in plain words
    (hashes are left out: they identify files, they don't describe them)."""
    if not isinstance(provenance, dict):
        return {}
    out = {}
    for key, value in provenance.items():
        if value in (None, "") or str(key).endswith("sha256"):
            continue
        out[PROVENANCE_NAMES.get(str(key), str(key).replace("_", " "))] = str(value)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _examples(conn: sqlite3.Connection, label: str) -> list[dict[str, Any]]:
    """The first few images of ``label``, as thumbnail-grid cards (no distance)."""
    return [card(r, rank=n + 1) for n, r in enumerate(rows.images_of_label(conn, label, EXAMPLES_SHOWN))]


def _sortable(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not math.isnan(value) else math.inf


def _methods(figures: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The zero-shot comparison: one row per method, and the held-out labels' P@10."""
    from semsearch_sqlite.queries.info import summary_rows

    zero_shot = figures.get("zero_shot") or {}
    try:
        rows = summary_rows(figures)
    except (KeyError, TypeError, AttributeError):
        return [], {}
    columns = [c for c in (rows[0] if rows else {}) if c != "method"]
    # the best figure of each column among the fitted methods (not chance, not time),
    # where they differ
    best = {}
    for col in columns:
        values = [_number(r[col]) for r in rows if r["method"] != "chance" and not col.startswith("fit")]
        values = [v for v in values if v is not None]
        if values and max(values) > min(values):
            best[col] = max(values)
    for r in rows:
        r["note"] = METHOD_NOTES.get(r["method"], "")
        r["best"] = [c for c in best if r[c] == best[c]]
        r["headings"] = {c: METHOD_COLUMNS.get(c, c) for c in columns}
    methods = zero_shot.get("methods") or {}
    held = zero_shot.get("held_out") or []
    held_out = {
        "labels": held,
        "methods": list(methods),
        "rows": [
            {"name": c, "p": {m: (methods[m].get("per_class_p_at_10") or {}).get(c) for m in methods}} for c in held
        ],
        "pool_images": zero_shot.get("pool_images"),
        "fraction": zero_shot.get("fraction"),
        "seed": zero_shot.get("seed"),
        "test_share": zero_shot.get("test_share"),
    }
    return rows, held_out


async def report_page(datasette: Any, request: Any) -> Response:
    """``/<db>/-/semsearch/report``: how well search works here, and where it fails."""
    db, _ = await resolve(datasette, request)
    if not await may_view_table(datasette, request, db.name, "evaluations"):
        raise Forbidden("You do not have permission to view the evaluations table")
    report = await db.execute_fn(read_report)
    path = os.path.basename(getattr(db, "path", None) or f"{db.name}.db")
    return await render(
        datasette,
        request,
        "semsearch_report.html",
        db,
        {"report": report, "make_one": MAKE_ONE.format(path=path), "fig": fig, "page": "report"},
    )
