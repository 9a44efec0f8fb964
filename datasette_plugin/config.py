"""The plugin's settings, configured Datasette's way::

    # datasette.yaml (Datasette 1.0a) -- or the "plugins" block of metadata (0.65)
    plugins:
      semsearch-sqlite:
        per_page: 24            # results per page
        max_k: 100              # the most results one page asks for
        uploads: true           # the search-by-upload page
        max_upload_bytes: 20971520
        max_upload_pixels: 64000000  # larger images are refused (decoding costs memory)
        thumbnail_px: 170       # the box thumbnails are shown in, in grids (stored: 256 px)
    databases:
      photos:
        plugins:
          semsearch-sqlite:
            uploads: false      # per database, where it makes sense

Read with ``datasette.plugin_config``; a database's settings override the top level's
one by one (Datasette's own fallback would drop every top-level setting as soon as a
database sets one). A value of the wrong type or out of range is ignored (with one warning) so a
typo never takes the pages down.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

PLUGIN_NAME = "semsearch-sqlite"
log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Settings:
    """The plugin's settings for one database."""

    per_page: int = 24
    max_k: int = 100
    uploads: bool = True
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 64_000_000
    thumbnail_px: int = 170


# name -> (type, smallest, largest)
_LIMITS: dict[str, tuple[type, int | None, int | None]] = {
    "per_page": (int, 1, 500),
    "max_k": (int, 1, 4096),
    "uploads": (bool, None, None),
    "max_upload_bytes": (int, 1024, 1 << 30),
    "max_upload_pixels": (int, 10_000, 1_000_000_000),
    "thumbnail_px": (int, 32, 1024),
}


def settings(datasette: Any, database: str | None = None) -> Settings:
    """The settings in force for ``database`` (defaults where none are configured)."""
    raw: dict[str, Any] = {}
    levels = [datasette.plugin_config(PLUGIN_NAME)]
    if database is not None:
        levels.append(datasette.plugin_config(PLUGIN_NAME, database=database, fallback=False))
    for level in levels:
        if level is None:
            continue
        if not isinstance(level, dict):
            _warn("*", f"plugins.{PLUGIN_NAME} should be a mapping of settings; ignored")
            continue
        raw.update(level)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _LIMITS:
            _warn(name, f"plugins.{PLUGIN_NAME}.{name}: unknown setting (known: {', '.join(_LIMITS)}); ignored")
            continue
        kind, low, high = _LIMITS[name]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if ok and kind is int and not (low <= value <= high):  # type: ignore[operator]
            ok = False
        if not ok:
            expected = "true or false" if kind is bool else f"a whole number from {low} to {high}"
            _warn(name, f"plugins.{PLUGIN_NAME}.{name} should be {expected}, not {value!r}; using the default")
            continue
        values[name] = value
    result = dataclasses.replace(Settings(), **values)
    if result.per_page > result.max_k:
        result = dataclasses.replace(result, per_page=result.max_k)
    return result


def _warn(key: str, message: str) -> None:
    if (key, message) not in _warned:
        _warned.add((key, message))
        log.warning("semsearch: %s", message)
