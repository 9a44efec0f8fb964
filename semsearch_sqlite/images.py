"""Find image files, load them robustly with Pillow, and make thumbnails.

``load_image`` turns every failure into an ``ImageError`` with a short human reason,
so one bad file in a folder of thousands is reported and skipped, never fatal.
"""

from __future__ import annotations

import csv
import hashlib
import io
import mimetypes
import os
import re
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000
DISPLAY_LONGEST = 1024
THUMBNAIL_LONGEST = 256
DEFAULT_QUALITY = 85
_MIMES = {"JPEG": "image/jpeg", "WEBP": "image/webp", "PNG": "image/png"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_pillow_limit_lock = threading.Lock()


@dataclass
class DiscoveryResult:
    """Image files found under a root, and the directories that could not be read."""

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def discover(root: str | Path) -> DiscoveryResult:
    """Find image files under ``root``, recursively.

    Hidden files and folders (leading '.') are skipped; symlinked folders are followed
    once each, so symlink loops end; unreadable folders are reported, not fatal.

    Args:
        root: the folder to search.

    Returns:
        The files sorted by their path relative to ``root``, and ``(path, reason)`` problems.

    Raises:
        ImageError: ``root`` is not a readable folder.
    """
    root = Path(root)
    if not root.is_dir():
        reason = "no such folder" if not root.exists() else "not a folder"
        raise ImageError(str(root), f"{reason}; pass the folder that holds the images")
    result = DiscoveryResult()
    seen: set[Path] = set()
    # Real folders first, symlinked ones after, each in name order: a folder reachable
    # both ways is listed under its real path, and the walk is the same on every run.
    stack: list[Path] = [root]
    links: list[Path] = []
    while stack or links:
        folder = stack.pop() if stack else links.pop(0)
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError as e:
            result.problems.append((folder, _os_reason(e)))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir():  # follows symlinks; ``seen`` stops loops
                    (links if entry.is_symlink() else stack).append(path)
                elif path.suffix.lower() in IMAGE_EXTENSIONS:
                    if entry.is_file():
                        result.files.append(path)
                    elif entry.is_symlink() and not path.exists():
                        result.problems.append((path, "broken symlink"))
            except OSError as e:
                result.problems.append((path, _os_reason(e)))
        links.sort()
    result.files.sort(key=lambda p: p.relative_to(root).as_posix())
    return result


def normalise_label(text: str) -> str:
    """``"Dining_Table"`` -> ``"dining table"``: underscores and hyphens to spaces, lower-case."""
    return " ".join(re.sub(r"[_\-]+", " ", text).split()).lower()


def label_for(path: str | Path, root: str | Path) -> str | None:
    """The label of an image from its folder: ``dining_table/x.jpg`` -> ``"dining table"``.

    Nested folders give the immediate parent's name; files directly in ``root`` give None.
    """
    rel = Path(os.path.relpath(Path(path), Path(root)))
    if len(rel.parts) < 2:
        return None
    return normalise_label(rel.parent.name) or None


def read_labels_csv(path: str | Path) -> dict[str, str]:
    """Read a ``path,label`` CSV (header optional) into ``{path: label}``.

    Relative paths are kept as posix paths relative to the images root; absolute paths
    are resolved. Labels are normalised like folder names.

    Raises:
        ImageError: the file can't be read, or a row is not ``path,label`` (names the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ImageError(str(path), "labels file is not UTF-8 text; save it as UTF-8 CSV") from None
    except OSError as e:
        raise ImageError(str(path), f"cannot read labels file ({_os_reason(e)})") from None
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        lineno = reader.line_num
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if lineno == 1 and [c.lower() for c in cells] == ["path", "label"]:
            continue
        if len(cells) != 2 or not cells[0] or not normalise_label(cells[1]):
            raise ImageError(str(path), f"line {lineno}: expected 'path,label', got {','.join(row)!r}")
        key = _label_key(cells[0])
        label = normalise_label(cells[1])
        if key in labels and labels[key] != label:
            raise ImageError(
                str(path), f"line {lineno}: {cells[0]} is already labelled {labels[key]!r} on line {first_line[key]}"
            )
        labels[key] = label
        first_line.setdefault(key, lineno)
    return labels


def _label_key(raw: str) -> str:
    if os.path.isabs(raw):
        return str(Path(raw).resolve())
    posix = PurePosixPath(raw.replace("\\", "/")).as_posix()
    return posix[2:] if posix.startswith("./") else posix


def load_image(
    source: str | Path | BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None
) -> Image.Image:
    """Load an image as upright 8-bit RGB.

    EXIF orientation is applied, transparency is composited on white, 16-bit and float
    images are scaled (not clipped) to 8 bits, and animations give their first frame.
    The result has a ``source_format`` attribute (Pillow's format name, e.g. "JPEG").

    Args:
        source: a path, or a binary file object (e.g. ``io.BytesIO`` of an upload).
        max_pixels: refuse images with more pixels than this (None: no limit of ours).
        name: how to name a file object in errors.

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
                return _load(f, label, max_pixels)
        return _load(source, label, max_pixels)
    except OSError as e:  # open/read failures; decode failures are mapped inside _load
        raise ImageError(label, _os_reason(e)) from None


def _load(fp: BinaryIO, label: str, max_pixels: int | None) -> Image.Image:
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
        if rgb is im:
            rgb = im.copy()  # detach from the file before it closes
    rgb.source_format = fmt  # type: ignore[attr-defined]
    return rgb


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
        small = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                           reducing_gap=2.0)
    data, mime = encode_image(small, fmt, quality)
    return data, mime, small.width, small.height


def usable_as_display(path: str | Path, img: Image.Image, longest: int = DISPLAY_LONGEST) -> bool:
    """True when the file itself can be served as the display copy: a baseline RGB or
    grey JPEG no larger than ``longest``, not rotated by EXIF (re-encoding it would only
    cost time and quality)."""
    if getattr(img, "source_format", None) != "JPEG" or max(img.size) > longest:
        return False
    try:
        with Image.open(path) as raw:
            return raw.mode in ("RGB", "L") and raw.size == img.size and raw.getexif().get(0x0112, 1) == 1
    except (OSError, SyntaxError, ValueError):
        return False


def mime_for(fmt: str | None, path: str | Path | None = None) -> str:
    """The MIME type of a Pillow format name, else guessed from the file name."""
    if fmt and fmt.upper() in Image.MIME:
        return Image.MIME[fmt.upper()]
    guessed = mimetypes.guess_type(str(path))[0] if path is not None else None
    return guessed or "application/octet-stream"


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


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


def _os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a folder, not an image file"
    return f"cannot read ({e.strerror or e})"
