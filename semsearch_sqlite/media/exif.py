"""Photo metadata from EXIF: when, with what, and where a photo was taken.

Each field is read on its own: a bogus date, an out-of-range GPS position or a broken
tag leaves that field empty and never costs the picture (or the other fields).
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

# EXIF tag numbers (Pillow's ExifTags names them; numbers keep this file self-explanatory)
EXIF_IFD = 0x8769
GPS_IFD = 0x8825
TAG_MAKE, TAG_MODEL, TAG_DATETIME = 271, 272, 306
TAG_DATETIME_ORIGINAL, TAG_OFFSET_TIME_ORIGINAL = 36867, 36881
TAG_LENS_MAKE, TAG_LENS_MODEL = 42035, 42036
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4
# the first photograph is from 1826; later than next year is a clock that was never set right
EARLIEST_YEAR = 1826
MAX_TEXT = 200
_DATE = re.compile(r"^(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")
METADATA_COLUMNS = ("taken_at", "camera", "lens", "latitude", "longitude")


@dataclass
class PhotoMetadata:
    """The EXIF fields stored in ``images`` columns (None: absent or unusable)."""

    taken_at: str | None = None  # ISO 8601, local time of the camera (with its offset when recorded)
    camera: str | None = None  # make and model, e.g. "Canon EOS 5D"
    lens: str | None = None
    latitude: float | None = None  # decimal degrees, north positive
    longitude: float | None = None  # decimal degrees, east positive

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_metadata(source: str | Path | BinaryIO | Image.Image) -> PhotoMetadata:
    """The photo metadata of an image file (or an open Pillow image); empty when there is none.

    Never raises for bad EXIF; a file that can't be opened gives empty metadata too
    (decoding the picture itself reports that).
    """
    try:
        if isinstance(source, Image.Image):
            return metadata_from_exif(source.getexif())
        with Image.open(source) as im:  # lazy: reads the headers, not the pixels
            return metadata_from_exif(im.getexif())
    except Exception:  # noqa: BLE001 - any failure inside Pillow's EXIF parser means "no metadata"
        return PhotoMetadata()


def metadata_from_exif(exif: Any) -> PhotoMetadata:
    """:class:`PhotoMetadata` from a Pillow ``Image.Exif``, field by field."""
    sub = _ifd(exif, EXIF_IFD)
    gps = _ifd(exif, GPS_IFD)
    meta = PhotoMetadata()
    meta.taken_at = _field(lambda: _taken_at(sub, exif))
    meta.camera = _field(lambda: _camera(_text(exif.get(TAG_MAKE)), _text(exif.get(TAG_MODEL))))
    meta.lens = _field(lambda: _camera(_text(sub.get(TAG_LENS_MAKE)), _text(sub.get(TAG_LENS_MODEL))))
    position = _field(lambda: _position(gps))
    if position is not None:
        meta.latitude, meta.longitude = position
    return meta


def _field(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - one broken tag empties its field only
        return None


def _ifd(exif: Any, tag: int) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:  # noqa: BLE001
        return {}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = " ".join(value.replace("\x00", " ").split())
    if not value or len(value) > MAX_TEXT:
        return None
    return value


def _camera(make: str | None, model: str | None) -> str | None:
    """ "Canon" + "Canon EOS 5D" is "Canon EOS 5D", not "Canon Canon EOS 5D"."""
    if make and model:
        return model if model.lower().startswith(make.split()[0].lower()) else f"{make} {model}"
    return model or make


def parse_exif_date(value: Any, offset: Any = None) -> str | None:
    """An EXIF ``"YYYY:MM:DD HH:MM:SS"`` as ISO 8601, or None for blank or impossible dates."""
    text = _text(value)
    if text is None:
        return None
    m = _DATE.match(text)
    if m is None:
        return None
    try:
        when = datetime.datetime(*(int(g) for g in m.groups()))
    except ValueError:  # 0000:00:00, February 30th...
        return None
    if not EARLIEST_YEAR <= when.year <= datetime.date.today().year + 1:
        return None
    iso = when.isoformat()
    off = _text(offset)
    if off and _OFFSET.match(off) and int(off[1:3]) <= 14 and int(off[4:6]) < 60:
        iso += off
    return iso


def _taken_at(sub: dict[int, Any], exif: Any) -> str | None:
    return parse_exif_date(sub.get(TAG_DATETIME_ORIGINAL), sub.get(TAG_OFFSET_TIME_ORIGINAL)) or parse_exif_date(
        exif.get(TAG_DATETIME)
    )


def _degrees(value: Any) -> float | None:
    """EXIF degrees/minutes/seconds rationals as decimal degrees."""
    if not isinstance(value, (tuple, list)) or not 1 <= len(value) <= 3:
        return None
    parts = [float(v) for v in value]
    if any(not math.isfinite(p) or p < 0 for p in parts) or any(p >= 60 for p in parts[1:]):
        return None
    return sum(p / 60**i for i, p in enumerate(parts))


def _position(gps: dict[int, Any]) -> tuple[float, float] | None:
    lat, lon = _degrees(gps.get(GPS_LAT)), _degrees(gps.get(GPS_LON))
    lat_ref, lon_ref = _text(gps.get(GPS_LAT_REF)), _text(gps.get(GPS_LON_REF))
    if lat is None or lon is None or lat_ref not in ("N", "S") or lon_ref not in ("E", "W"):
        return None
    lat, lon = (-lat if lat_ref == "S" else lat), (-lon if lon_ref == "W" else lon)
    if abs(lat) > 90 or abs(lon) > 180:
        return None
    if lat == 0 and lon == 0:  # "Null Island": a receiver without a fix
        return None
    return round(lat, 7), round(lon, 7)
