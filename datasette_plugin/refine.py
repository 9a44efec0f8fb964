"""Refining a search on the pages: label, date and place filters, "more / less like this"
(relevance feedback) and an image's near-duplicates. Request parameters in, library
arguments and URLs out; the templates only show them."""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.queries import hints
from semsearch_sqlite.queries.filters import Filter
from semsearch_sqlite.queries.hints import NEAR_DEGREES
from semsearch_sqlite.queries.search import image_ids
from semsearch_sqlite.storage import rows

from .render import Urls

MAX_FEEDBACK = 20  # ids kept per list in a URL
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_ID = re.compile(r"^-?\d+$|^$")
MAX_ID = 2**63 - 1


@dataclass
class Refinement:
    """What the search form and the result cards' links add to a query."""

    label: str = ""
    taken_from: str = ""
    taken_to: str = ""
    near: str = ""  # "lat,lon": photos within hints.NEAR_DEGREES of it; "any": every located photo
    like: list[int] = field(default_factory=list)
    unlike: list[int] = field(default_factory=list)
    not_ids: str = ""  # the first like/unlike item that is not an id

    @classmethod
    def from_args(cls, args: Any) -> Refinement:
        bad: list[str] = []

        def ids(name: str) -> list[int]:
            raw = args.get(name) or ""
            try:
                return list(dict.fromkeys(image_ids(raw)))[:MAX_FEEDBACK]
            except QueryError:
                bad.extend(t.strip() for t in raw.strip().strip("[]").split(",") if not _ID.match(t.strip()))
                return []

        def date(name: str) -> str:
            value = (args.get(name) or "").strip()
            return value if _DATE.match(value) else ""

        near = (args.get("near") or "").strip()
        found = cls(
            (args.get("label") or "").strip(),
            date("taken_from"),
            date("taken_to"),
            near if near == "any" or point(near) else "",
            ids("like"),
            ids("unlike"),
        )
        found.not_ids = bad[0] if bad else ""
        return found

    def problem(self, conn: sqlite3.Connection) -> str | None:
        """Why the like/unlike ids can't be used, one line for the page (the same for a
        word as for an id no image has), or None."""
        wrong = self.not_ids
        if not wrong:
            ids = self.like + self.unlike
            stored = rows.image_rows(conn, [i for i in ids if abs(i) <= MAX_ID])
            wrong = next((str(i) for i in ids if i not in stored), "")
        if not wrong:
            return None
        shown = wrong if len(wrong) <= 24 else wrong[:24] + "..."
        return f"like and unlike take ids of images in this database, such as 12,15; {shown!r} is not one."

    def filters(self) -> list[Filter]:
        out = []
        if self.label:
            out.append(Filter("label", "=", self.label))
        if self.taken_from:
            out.append(Filter("taken_at", ">=", self.taken_from))
        if self.taken_to:
            # "2020" or "2020-06" up to the end of that year / month
            out.append(Filter("taken_at", "<", self.taken_to + "\uffff"))
        if self.near == "any":
            out.append(Filter("latitude", ">=", -90.0))
        elif self.near:
            lat, lon = point(self.near) or (0.0, 0.0)
            out += [
                Filter("latitude", ">=", lat - NEAR_DEGREES),
                Filter("latitude", "<=", lat + NEAR_DEGREES),
                Filter("longitude", ">=", lon - NEAR_DEGREES),
                Filter("longitude", "<=", lon + NEAR_DEGREES),
            ]
        return out

    def describe(self, form: dict[str, Any]) -> str:
        """The filters in words, and what the photos hold, for a search they leave empty:
        "taken from 2020 (no photo here has a date)"."""
        parts = []
        if self.label:
            parts.append(f"labelled {self.label}")
        if self.taken_from or self.taken_to:
            dates = " ".join(
                p for p in (self.taken_from and f"from {self.taken_from}", self.taken_to and f"to {self.taken_to}") if p
            )
            dated = form.get("dated")
            held = f"{dated} photos here have a date" if dated else "no photo here has a date"
            parts.append(f"taken {dates} ({held})")
        if self.near:
            where = "at a known place" if self.near == "any" else f"near {self.near}"
            located = form.get("located")
            held = f"{located} photos here have a place" if located else "no photo here has a place"
            parts.append(f"taken {where} ({held})")
        return "; ".join(parts)

    def params(self, **changes: Any) -> dict[str, Any]:
        values = {
            "label": self.label,
            "taken_from": self.taken_from,
            "taken_to": self.taken_to,
            "near": self.near,
            "like": ",".join(map(str, self.like)),
            "unlike": ",".join(map(str, self.unlike)),
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v not in (None, "")}

    def active(self) -> bool:
        return bool(self.label or self.taken_from or self.taken_to or self.near or self.like or self.unlike)


def search_url(
    urls: Urls, q: str, k: int | None, refinement: Refinement, page: int | None = None, **changes: Any
) -> str:
    """The search page for ``q`` with ``refinement`` (and ``changes`` to it), at ``page``."""
    params = {"q": q, "k": k, **refinement.params(**changes), "page": page if page != 1 else None}
    kept = {name: value for name, value in params.items() if value is not None and value != ""}
    return urls.base + "?" + urllib.parse.urlencode(kept)


def add_feedback_links(urls: Urls, q: str, k: int, refinement: Refinement, cards: list[dict[str, Any]]) -> None:
    """Give each card "more like this" / "less like this" URLs (one feedback round more)."""
    for card in cards:
        i = card["image_id"]
        like = [x for x in refinement.like if x != i] + [i]
        unlike = [x for x in refinement.unlike if x != i] + [i]
        card["more_url"] = search_url(
            urls,
            q,
            k,
            refinement,
            like=",".join(map(str, like[-MAX_FEEDBACK:])),
            unlike=",".join(str(x) for x in refinement.unlike if x != i),
        )
        card["less_url"] = search_url(
            urls,
            q,
            k,
            refinement,
            unlike=",".join(map(str, unlike[-MAX_FEEDBACK:])),
            like=",".join(str(x) for x in refinement.like if x != i),
        )
        card["liked"] = i in refinement.like


def point(text: str) -> tuple[float, float] | None:
    """``"-33.86,151.21"`` as (latitude, longitude), or None when it is not a position."""
    parts = text.split(",")
    if len(parts) != 2:
        return None
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def form_context(conn: sqlite3.Connection) -> dict[str, Any]:
    """The labels a search can be limited to, and the filters the data has something
    for: dates when some photos are dated, places when some are located."""
    counts = rows.photo_counts(conn)
    return {
        "labels": sorted(rows.label_counts(conn)),
        "has_dates": counts["dated"] > 0,
        "dated": counts["dated"],
        "located": counts["located"],
        "places": hints.places(conn) if counts["located"] else [],
    }
