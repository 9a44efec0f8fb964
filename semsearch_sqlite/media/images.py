"""Find image files, load them robustly with Pillow, and make thumbnails.

``load_image`` turns every failure into an ``ImageError`` with a short human reason,
so one bad file in a folder of thousands is reported and skipped, never fatal.
"""

from __future__ import annotations

import io
import mimetypes
import os
import re
import struct
import threading
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from semsearch_sqlite.errors import ImageError
from semsearch_sqlite.media.files import DEFAULT_MAX_PIXELS, os_reason

DISPLAY_LONGEST = 1024
THUMBNAIL_LONGEST = 256
DEFAULT_QUALITY = 85
# A reduced decode (JPEG DCT scaling: 1/2, 1/4, 1/8) may come out this much under the size
# asked for: a 4032 px phone photo at 1/4 is 1008 px, and the next scale up (2016 px)
# costs 1.5x the decode and a resize for 1.6% more pixels.
REDUCE_SLACK = 0.95
# Other formats decode whole, then box-reduce to at least this many times the size asked
# for, like Pillow's reducing_gap: the filtered resizes after it see no difference.
REDUCE_GAP = 3.0
_MIMES = {"JPEG": "image/jpeg", "WEBP": "image/webp", "PNG": "image/png"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_pillow_limit_lock = threading.Lock()


def load_image(
    source: str | Path | BinaryIO,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    reduce_to: int | None = None,
) -> Image.Image:
    """Load an image as upright 8-bit RGB.

    EXIF orientation is applied, transparency is composited on white, 16-bit and float
    images are scaled (not clipped) to 8 bits, and animations give their first frame.
    The result has a ``source_format`` attribute (Pillow's format name, e.g. "JPEG") and
    a ``source_size`` attribute: the upright (width, height) of the file itself.

    Args:
        source: a path, or a binary file object (e.g. ``io.BytesIO`` of an upload).
        max_pixels: refuse images with more pixels than this (None: no limit of ours).
        name: how to name a file object in errors.
        reduce_to: decode at the smallest scale whose longest side is still about this
            many pixels (JPEG draft mode: at least ``REDUCE_SLACK`` of it), never upscaled.
            A 12 MP JPEG decodes in a third of the time; None decodes at full size.

    Raises:
        ImageError: with a short reason, e.g. "empty file (0 bytes)" or "truncated or corrupt image data".
    """
    label = name or str(source if isinstance(source, (str, Path)) else getattr(source, "name", "<image>"))
    if max_pixels is not None:
        _raise_pillow_limit(max_pixels)
    _install_bomb_filter()
    try:
        if isinstance(source, (str, Path)):
            if os.path.isdir(source):
                raise ImageError(label, "is a folder, not an image file")
            with open(source, "rb") as f:
                return _load(f, label, max_pixels, reduce_to)
        return _load(source, label, max_pixels, reduce_to)
    except OSError as e:  # open/read failures; decode failures are mapped inside _load
        raise ImageError(label, os_reason(e)) from None


def _load(fp: BinaryIO, label: str, max_pixels: int | None, reduce_to: int | None = None) -> Image.Image:
    if _stream_size(fp) == 0:
        raise ImageError(label, "empty file (0 bytes)")
    try:
        im = Image.open(fp)
    except UnidentifiedImageError:
        raise ImageError(label, "not an image (cannot identify format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(label, _bomb_reason(None, str(e), max_pixels)) from None
    except _DECODE_ERRORS:
        raise ImageError(label, "truncated or corrupt image data") from None
    with im:
        width, height = im.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageError(label, _bomb_reason((width, height), "", max_pixels))
        fmt = im.format
        try:
            im.seek(0)  # animations: the first frame
            if reduce_to:
                _draft(im, reduce_to)
            im.load()  # decodes now, so truncated files fail here (LOAD_TRUNCATED_IMAGES stays off)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(label, _bomb_reason((width, height), str(e), max_pixels)) from None
        except _DECODE_ERRORS:
            raise ImageError(label, "truncated or corrupt image data") from None
        try:
            upright = ImageOps.exif_transpose(im) or im
        except _DECODE_ERRORS + (KeyError, TypeError):
            upright = im  # a broken EXIF block shouldn't cost the picture
        try:
            rgb = to_rgb(upright)
        except ValueError:
            raise ImageError(label, f"unsupported colour mode {upright.mode}") from None
        if reduce_to:
            rgb = _box_reduce(rgb, reduce_to)
        if rgb is im:
            rgb = im.copy()  # detach from the file before it closes
    # the orientation may have swapped the sides; a reduced decode keeps the proportions
    swapped = upright.size != im.size
    rgb.source_format = fmt  # type: ignore[attr-defined]
    rgb.source_size = (height, width) if swapped else (width, height)  # type: ignore[attr-defined]
    return rgb


def _draft(im: Image.Image, longest: int) -> None:
    """Ask the decoder for the smallest DCT scale that keeps about ``longest`` pixels
    (a no-op for formats without one)."""
    w, h = im.size
    wanted = max(1, int(longest * REDUCE_SLACK + 0.999))
    if max(w, h) <= wanted:
        return
    # Pillow picks the largest scale s in (8, 4, 2) with w // s >= size[0] and h // s >= size[1]
    size = (max(1, -(-wanted * w // max(w, h))), max(1, -(-wanted * h // max(w, h))))
    im.draft(None, size)


def _box_reduce(img: Image.Image, longest: int) -> Image.Image:
    factor = int(max(img.size) // (longest * REDUCE_GAP))
    return img.reduce(factor) if factor >= 2 else img


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha on white, high bit depths scaled to 8 bits."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(im), mode), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    a = a.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = a / 257.0  # the 16-bit range onto 0..255, as 65535 -> 255
    else:
        lo, hi = float(a.min()) if a.size else 0.0, float(a.max()) if a.size else 0.0
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = a
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = a / 257.0  # 'I' images are mostly 16-bit data widened by Pillow
        else:
            scaled = (a - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def resize_longest(img: Image.Image, size: int) -> Image.Image:
    """Shrink ``img`` so its longest side is ``size`` pixels; never upscales."""
    w, h = img.size
    if max(w, h) <= size:
        return img
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)


def encode_image(img: Image.Image, fmt: str = "JPEG", quality: int = DEFAULT_QUALITY) -> tuple[bytes, str]:
    """Encode ``img`` as JPEG, WEBP or PNG; returns ``(bytes, mime type)``."""
    fmt = fmt.upper()
    if fmt not in _MIMES:
        raise ValueError(f"unsupported image format {fmt!r}; use JPEG, WEBP or PNG")
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", optimize=True)
    else:
        img.convert("RGB").save(buf, fmt, quality=quality)
    return buf.getvalue(), _MIMES[fmt]


def make_display(
    img: Image.Image, longest: int = DISPLAY_LONGEST, fmt: str = "JPEG", quality: int = DEFAULT_QUALITY
) -> tuple[bytes, str, int, int]:
    """A display-sized copy: ``(bytes, mime, width, height)``."""
    small = resize_longest(img, longest)
    data, mime = encode_image(small, fmt, quality)
    return data, mime, small.width, small.height


def make_thumbnail(
    img: Image.Image, longest: int = THUMBNAIL_LONGEST, fmt: str = "JPEG", quality: int = 80
) -> tuple[bytes, str, int, int]:
    """A thumbnail: ``(bytes, mime, width, height)``.

    Bilinear after a box reduce: at thumbnail size it looks the same as Lanczos and
    costs half, which matters because ingest runs it beside the CNN.
    """
    w, h = img.size
    small = img
    if max(w, h) > longest:
        scale = longest / max(w, h)
        small = img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
    data, mime = encode_image(small, fmt, quality)
    return data, mime, small.width, small.height


def usable_as_display(source: str | Path | bytes, img: Image.Image, longest: int = DISPLAY_LONGEST) -> bool:
    """True when the file itself (a path, or its bytes) can be served as the display copy:
    a baseline RGB or grey JPEG no larger than ``longest``, not rotated by EXIF
    (re-encoding it would only cost time and quality)."""
    if getattr(img, "source_format", None) != "JPEG" or max(img.size) > longest:
        return False
    if getattr(img, "source_size", img.size) != img.size:
        return False  # decoded reduced: the file is bigger than this
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as raw:
            return raw.mode in ("RGB", "L") and raw.size == img.size and raw.getexif().get(0x0112, 1) == 1
    except (OSError, SyntaxError, ValueError):
        return False


def mime_for(fmt: str | None, path: str | Path | None = None) -> str:
    """The MIME type of a Pillow format name, else guessed from the file name."""
    if fmt and fmt.upper() in Image.MIME:
        return Image.MIME[fmt.upper()]
    guessed = mimetypes.guess_type(str(path))[0] if path is not None else None
    return guessed or "application/octet-stream"


def _stream_size(fp: BinaryIO) -> int | None:
    try:
        here = fp.tell()
        end = fp.seek(0, io.SEEK_END)
        fp.seek(here)
        return end - here
    except (OSError, AttributeError, ValueError):
        return None


def _bomb_reason(size: tuple[int, int] | None, pillow_message: str, max_pixels: int | None) -> str:
    limit = f"{max_pixels:,}" if max_pixels is not None else f"{Image.MAX_IMAGE_PIXELS:,}"
    if size is not None:
        w, h = size
        what = f"{w} x {h} = {w * h:,} pixels"
    else:
        found = re.search(r"\((\d+) pixels\)", pillow_message)
        what = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"image too large ({what} > {limit}; raise --max-pixels)"


def _raise_pillow_limit(max_pixels: int) -> None:
    # Pillow's own limit is process-wide; only ever raise it, and only when asked for more.
    with _pillow_limit_lock:
        if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _install_bomb_filter() -> None:
    # Pillow warns (on stderr) about big images; as an error it becomes an ImageError here.
    # catch_warnings() is not thread-safe and loads run in threads, so the filter is
    # process-wide, (re)installed whenever it is missing (test runners reset filters).
    wanted = Image.DecompressionBombWarning
    if not any(f[0] == "error" and f[2] is wanted for f in warnings.filters):
        with _pillow_limit_lock:
            warnings.filterwarnings("error", category=wanted)
