"""One image file -> everything ingest stores about it except the CNN's output.

The file is read once (its bytes give the SHA-256 and the picture) and decoded once, at
the smallest scale that still serves the display copy, the thumbnail and the model
input (JPEG draft mode: a 12 MP photo decodes at 1/4 scale). The same function runs in
ingest's decode threads and in Ray tasks (:mod:`.distributed`), so both store the same
bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from semsearch_sqlite.errors import ImageError
from semsearch_sqlite.media import exif, images

DISPLAY_SIZE = images.DISPLAY_LONGEST
THUMB_SIZE = images.THUMBNAIL_LONGEST
# The thumbnail and the model input come from one box-reduced copy still this many times
# their size (Pillow's reducing_gap, paid once for both): on a 1008 px decode it halves
# their cost (17 -> 8 ms of a 12 MP photo's ~70 ms).
SMALL_COPY_GAP = 1.9


@dataclass(frozen=True)
class PrepareSpec:
    """How to prepare images (picklable: it travels to Ray workers).

    Attributes:
        preprocess: the backbone's :class:`~semsearch_sqlite.model.backbone.Preprocessor`.
        input_size: the model's (height, width).
        max_pixels: refuse bigger images.
        originals: store the file itself as the display copy.
    """

    preprocess: Callable[[list[Image.Image]], np.ndarray]
    input_size: tuple[int, int]
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    originals: bool = False
    display: int = DISPLAY_SIZE
    thumb: int = THUMB_SIZE

    def decode_size(self) -> int:
        """The longest side a decode needs: the display copy's, else the thumbnail's or the model's."""
        need = max(self.thumb, *self.input_size)
        return need if self.originals else max(need, self.display)


@dataclass
class Prepared:
    """An image ready for the model and the writer."""

    sha256: str
    width: int
    height: int
    mime: str
    thumb: tuple[bytes, str, int, int]
    display: tuple[bytes, str, int, int]
    original: bool
    tensor: np.ndarray
    metadata: exif.PhotoMetadata


def prepare_image(path: Path, spec: PrepareSpec, sha256: str | None = None) -> Prepared:
    """Read, hash, decode (reduced), and make the thumbnail, display copy and model input.

    Raises:
        ImageError: the file is not a usable image (with a short reason).
        OSError: the file can't be read.
    """
    data = path.read_bytes()
    sha = sha256 or hashlib.sha256(data).hexdigest()
    img = images.load_image(io.BytesIO(data), max_pixels=spec.max_pixels, name=str(path), reduce_to=spec.decode_size())
    fmt = getattr(img, "source_format", None)
    width, height = getattr(img, "source_size", img.size)
    mime = images.mime_for(fmt, path)
    original = spec.originals or images.usable_as_display(data, img, spec.display)
    display = (data, mime, width, height) if original else images.make_display(img, spec.display)
    factor = int(max(img.size) // (SMALL_COPY_GAP * max(spec.thumb, *spec.input_size)))
    small = img.reduce(factor) if factor >= 2 else img
    thumb = images.make_thumbnail(small, spec.thumb)
    tensor = spec.preprocess([small])[0]
    # the EXIF of the bytes already read (headers only; bad fields come back empty)
    metadata = exif.read_metadata(io.BytesIO(data))
    return Prepared(sha, width, height, mime, thumb, display, original, tensor, metadata)


def try_prepare(path: Path, spec: PrepareSpec, sha256: str | None = None) -> Prepared | str:
    """:func:`prepare_image`, or the reason it failed (bad files are reported, not fatal)."""
    try:
        return prepare_image(path, spec, sha256)
    except ImageError as e:
        return e.reason
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
