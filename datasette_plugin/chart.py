"""A horizontal grouped bar chart as inline SVG, drawn on the server (no JavaScript,
nothing fetched). Every label and title is HTML-escaped."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

PLOT_WIDTH = 420  # px for a value of ``max_value``
BAR_HEIGHT = 11
BAR_GAP = 2
GROUP_GAP = 9
LABEL_CHARS = 30  # longer labels are cut (the full text is in a tooltip)
CHAR_WIDTH = 6.6  # px per character at FONT_SIZE, for sizing the label column
FONT_SIZE = 12
LEGEND_HEIGHT = 26
AXIS_HEIGHT = 22
VALUE_ROOM = 44  # px right of the plot for the value printed after each bar
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Series:
    """One bar per category: ``values`` maps a category to its value (None: no figure);
    a category's ``limits`` entry, when below ``max_value``, is drawn as a tick."""

    key: str
    label: str
    colour: str
    values: Mapping[str, float | None]
    limits: Mapping[str, float | None] = field(default_factory=dict)  # the most a value can be


def bar_chart(categories: Sequence[str], series: Sequence[Series], *, title: str, max_value: float = 1.0) -> Markup:
    """An ``<svg>`` with one row per category and, in it, one bar per series.

    Bars are ``<rect class="semsearch-bar semsearch-bar-<key>">`` with a ``<title>``
    tooltip; values are drawn to scale from 0 to ``max_value`` and printed after the bar.
    """
    longest = max((len(c) for c in categories), default=1)
    label_w = round(min(longest, LABEL_CHARS) * CHAR_WIDTH) + 14
    group_h = len(series) * (BAR_HEIGHT + BAR_GAP) - BAR_GAP + GROUP_GAP
    width = label_w + PLOT_WIDTH + VALUE_ROOM
    plot_top = LEGEND_HEIGHT
    plot_bottom = plot_top + len(categories) * group_h
    height = plot_bottom + AXIS_HEIGHT
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="semsearch-chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" font-size="{FONT_SIZE}" font-family="sans-serif">',
        f"<title>{escape(title)}</title>",
    ]
    x = label_w  # legend
    for s in series:
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{escape(s.colour)}"/>')
        out.append(f'<text x="{x + 17}" y="16">{escape(s.label)}</text>')
        x += 17 + round(len(s.label) * CHAR_WIDTH) + 22
    for tick in TICKS:  # grid lines and the axis
        tx = label_w + PLOT_WIDTH * tick / max_value
        out.append(
            f'<line x1="{tx:.1f}" y1="{plot_top - 4}" x2="{tx:.1f}" y2="{plot_bottom}" '
            f'stroke="{"#999" if tick == 0 else "#e2e2e2"}"/>'
        )
        out.append(f'<text x="{tx:.1f}" y="{plot_bottom + 15}" text-anchor="middle" fill="#555">{tick:g}</text>')
    for row, category in enumerate(categories):
        top = plot_top + row * group_h + GROUP_GAP // 2
        middle = top + (group_h - GROUP_GAP) / 2
        out.append(
            f'<text x="{label_w - 8}" y="{middle + FONT_SIZE / 3:.1f}" text-anchor="end" class="semsearch-chart-label">'
            f"<title>{escape(category)}</title>{escape(_cut(category))}</text>"
        )
        for n, s in enumerate(series):
            y = top + n * (BAR_HEIGHT + BAR_GAP)
            value = s.values.get(category)
            text_y = f"{y + BAR_HEIGHT - 2:.1f}"
            if value is None or math.isnan(value):
                out.append(f'<text x="{label_w + 4}" y="{text_y}" fill="#888">no figure</text>')
                continue
            bar_w = PLOT_WIDTH * min(max(value, 0.0), max_value) / max_value
            out.append(
                f'<rect class="semsearch-bar semsearch-bar-{_css_key(s.key)}" x="{label_w}" y="{y}" '
                f'width="{bar_w:.1f}" height="{BAR_HEIGHT}" fill="{escape(s.colour)}">'
                f"<title>{escape(category)}: {escape(s.label)} {value:.2f}</title></rect>"
            )
            out.append(f'<text x="{label_w + bar_w + 4:.1f}" y="{text_y}" fill="#333">{value:.2f}</text>')
            limit = s.limits.get(category)
            if limit is not None and 0 <= limit < max_value:
                lx = label_w + PLOT_WIDTH * limit / max_value
                out.append(
                    f'<line class="semsearch-limit" x1="{lx:.1f}" y1="{y - 1}" x2="{lx:.1f}" y2="{y + BAR_HEIGHT + 1}" '
                    f'stroke="#222" stroke-width="2">'
                    f"<title>the most {escape(category)} can score: {limit:.2f}</title></line>"
                )
    out.append("</svg>")
    return Markup("\n".join(out))


def _cut(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "\u2026"


def _css_key(key: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-") or "series"
