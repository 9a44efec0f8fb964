"""images.py on real files written with Pillow: discovery, labels, robust loading, thumbnails."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from semsearch_sqlite.errors import ImageError
from semsearch_sqlite.media.files import DiscoveryResult, discover, label_for, read_labels_csv, sha256_file
from semsearch_sqlite.media.images import (
    DEFAULT_MAX_PIXELS,
    encode_image,
    load_image,
    make_display,
    make_thumbnail,
    mime_for,
    resize_longest,
    to_rgb,
)

RED, GREEN, WHITE = (255, 0, 0), (0, 255, 0), (255, 255, 255)


def _png(path: Path, size: tuple[int, int] = (8, 8), colour: Any = RED, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def _reason(path: Path | io.BytesIO, **kwargs: Any) -> str:
    with pytest.raises(ImageError) as info:
        load_image(path, **kwargs)
    return info.value.reason


# ---------------------------------------------------------------- discovery


def test_discover_recursive_sorted_skips_hidden_and_non_images(tmp_path: Path) -> None:
    for rel in ["b/2.JPG", "a/z.png", "a/sub/1.webp", "top.tiff", "a/x.txt", ".hidden.jpg", ".cache/c.jpg", "a/.h.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")  # discovery goes by name, not content
    result = discover(tmp_path)
    assert isinstance(result, DiscoveryResult)
    assert [p.relative_to(tmp_path).as_posix() for p in result.files] == [
        "a/sub/1.webp",
        "a/z.png",
        "b/2.JPG",
        "top.tiff",
    ]
    assert result.problems == []


def test_discover_survives_symlink_loops_and_follows_linked_folders_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _png(root / "cats" / "c.png")
    (root / "cats" / "loop").symlink_to(root, target_is_directory=True)
    outside = _png(tmp_path / "outside" / "o.png").parent
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "linked-again").symlink_to(outside, target_is_directory=True)
    (root / "a-shortcut").symlink_to(root / "cats", target_is_directory=True)
    (root / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    result = discover(root, follow_links=True)
    # a folder reachable twice is listed once: under its real path, else the first link by name
    assert [p.relative_to(root).as_posix() for p in result.files] == ["cats/c.png", "linked/o.png"]
    assert result.problems == [(root / "gone.jpg", "broken symlink")]
    # by default links that lead outside the root are left out, each listed once
    default = discover(root)
    assert [p.relative_to(root).as_posix() for p in default.files] == ["cats/c.png"]
    assert default.outside_links == [root / "linked", root / "linked-again"]


def test_discover_missing_root_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such folder"):
        discover(tmp_path / "nope")


def _outcome(fn: Callable[[], Any]) -> list[Any]:
    try:
        return ["ok", fn()]
    except ImageError as e:
        return ["error", e.reason]


def _unprivileged(fn: Callable[[], Any]) -> list[Any]:
    """``_outcome(fn)`` where permissions apply: as is for a normal user, in a forked child
    as 'nobody' when the tests run as root (root reads everything)."""
    if os.geteuid() != 0:
        return _outcome(fn)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report anything to the parent, then leave without cleanup
        try:
            os.setgid(65534)
            os.setuid(65534)
            out = json.dumps(_outcome(fn))
        except BaseException as e:  # noqa: BLE001
            out = json.dumps(["crash", repr(e)])
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    # tmp_path's parents are private to root, so 'nobody' needs a folder it can enter
    path = Path(tempfile.mkdtemp(prefix="semsearch-perm-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        sub.chmod(0o755)
    shutil.rmtree(path)


def test_unreadable_folder_is_reported_not_fatal(world_dir: Path) -> None:
    _png(world_dir / "ok" / "a.png").chmod(0o644)
    (world_dir / "ok").chmod(0o755)
    _png(world_dir / "locked" / "b.png")
    (world_dir / "locked").chmod(0o000)

    def run() -> Any:
        res = discover(world_dir)
        return [[p.name for p in res.files], [[p.name, why] for p, why in res.problems]]

    assert _unprivileged(run) == ["ok", [["a.png"], [["locked", "permission denied"]]]]


def test_unreadable_file_says_permission_denied(world_dir: Path) -> None:
    path = _png(world_dir / "secret.png")
    path.chmod(0o000)
    assert _unprivileged(lambda: load_image(path)) == ["error", "permission denied"]


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "rel, label",
    [
        ("dining_table/x.jpg", "dining table"),
        ("Hot-Air_Balloon/y.png", "hot air balloon"),
        ("animals/cats/z.png", "cats"),
        ("z.png", None),
    ],
)
def test_label_for(tmp_path: Path, rel: str, label: str | None) -> None:
    assert label_for(tmp_path / rel, tmp_path) == label


def test_read_labels_csv_with_and_without_header(tmp_path: Path) -> None:
    with_header = tmp_path / "a.csv"
    with_header.write_text("path,label\ncats/a.jpg,Tabby_Cat\n./b.jpg, dog \n\n/abs/c.jpg,car\n", encoding="utf-8")
    assert read_labels_csv(with_header) == {
        "cats/a.jpg": "tabby cat",
        "b.jpg": "dog",
        str(Path("/abs/c.jpg").resolve()): "car",
    }
    bare = tmp_path / "b.csv"
    bare.write_text('"x, y.jpg",sofa\n', encoding="utf-8")
    assert read_labels_csv(bare) == {"x, y.jpg": "sofa"}


@pytest.mark.parametrize(
    "text, line",
    [("path,label\na.jpg,cat\nb.jpg\n", 3), ("a.jpg,cat,extra\n", 1), ("a.jpg,\n", 1), ("a.jpg,cat\na.jpg,dog\n", 2)],
)
def test_read_labels_csv_bad_rows_name_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ImageError, match=f"line {line}:"):
        read_labels_csv(path)


# ---------------------------------------------------------------- loading

# Where the upright image's top-left corner is stored, by EXIF orientation (EXIF 2.3,
# tag 0x0112: which sides row 0 and column 0 are on), and whether width/height swap.
STORED_CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "bl", 7: "br", 8: "tr"}


def _stored_image(orientation: int) -> Image.Image:
    """The pixels a camera would store for an upright 60x40 picture with red at top-left."""
    swap = orientation >= 5
    w, h = (40, 60) if swap else (60, 40)
    img = Image.new("RGB", (w, h), (0, 0, 255))
    x = 0 if STORED_CORNER[orientation][1] == "l" else w - 12
    y = 0 if STORED_CORNER[orientation][0] == "t" else h - 12
    img.paste(RED, (x, y, x + 12, y + 12))
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_upright_images(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    _stored_image(orientation).save(path, exif=exif.tobytes(), quality=95)
    img = load_image(path)
    assert img.size == (60, 40)
    assert _close(img.getpixel((5, 5)), RED)
    for corner in [(54, 5), (5, 34), (54, 34)]:
        assert _close(img.getpixel(corner), (0, 0, 255))


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and _close(img.getpixel((8, 8)), RED)
    assert img.source_format == "JPEG"  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_goes_on_white(tmp_path: Path, fmt: str) -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 5, 10))
    path = tmp_path / f"p.{fmt.lower()}"
    img.save(path, transparency=0)
    out = load_image(path)
    assert out.getpixel((2, 2)) == RED and out.getpixel((8, 8)) == WHITE


@pytest.mark.parametrize("mode, colour", [("LA", (0, 0)), ("RGBA", (0, 0, 0, 0))])
def test_alpha_is_composited_on_white(tmp_path: Path, mode: str, colour: tuple[int, ...]) -> None:
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (4, 4), colour).save(path)
    assert load_image(path).getpixel((1, 1)) == WHITE


def test_palette_alpha_modes_in_memory() -> None:
    # Pillow can't write PA files, so convert one it made itself
    pa = Image.new("PA", (4, 4), (1, 0))
    pa.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pa.putpixel((0, 0), (1, 255))
    out = to_rgb(pa)
    assert out.getpixel((0, 0)) == RED and out.getpixel((1, 1)) == WHITE


def test_palette_with_per_entry_alpha(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    path = tmp_path / "trns.png"
    img.save(path, transparency=bytes([255, 0]))  # entry 0 opaque red, entry 1 transparent
    out = load_image(path)
    assert out.getpixel((0, 0)) == RED and out.getpixel((2, 2)) == WHITE


def test_half_transparent_red_blends_to_pink(tmp_path: Path) -> None:
    path = tmp_path / "half.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(path)
    assert _close(load_image(path).getpixel((0, 0)), (255, 127, 127), tol=2)


def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    out = np.asarray(load_image(path))[0, :, 0]
    assert out.tolist() == [0, 4, 128, 255]


def test_32_bit_int_and_float_tiffs(tmp_path: Path) -> None:
    ints = tmp_path / "i.tif"
    Image.fromarray(np.array([[0, 65535]], dtype=np.int32)).save(ints)
    assert np.asarray(load_image(ints))[0, :, 0].tolist() == [0, 255]
    floats = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(floats)
    assert np.asarray(load_image(floats))[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("ext, extra", [("gif", {}), ("webp", {"lossless": True})])
def test_animations_give_the_first_frame(tmp_path: Path, ext: str, extra: dict[str, Any]) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, (0, 0, 255))]
    path = tmp_path / f"anim.{ext}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0, **extra)
    assert Image.open(path).n_frames == 3
    img = load_image(path)
    assert img.mode == "RGB" and img.getpixel((8, 8)) == RED


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert _reason(path) == "truncated or corrupt image data"


def test_empty_and_non_image_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture\n", encoding="utf-8")
    assert _reason(tmp_path / "empty.jpg") == "empty file (0 bytes)"
    assert _reason(tmp_path / "notes.jpg") == "not an image (cannot identify format)"
    assert _reason(tmp_path / "missing.jpg") == "no such file"
    assert _reason(tmp_path) == "is a folder, not an image file"
    assert _reason(io.BytesIO(b"")) == "empty file (0 bytes)"


def _png_header_only(width: int, height: int) -> bytes:
    """A 1-bit PNG that claims huge dimensions: a few dozen bytes on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "bomb.png"
    big.write_bytes(_png_header_only(20000, 20000))
    assert big.stat().st_size < 100
    assert _reason(big) == "image too large (400,000,000 pixels > 64,000,000; raise --max-pixels)"
    # between Pillow's warning and error thresholds: its warning becomes our error, not stderr noise
    warned = tmp_path / "warned.png"
    warned.write_bytes(_png_header_only(10000, 10000))
    assert _reason(warned) == "image too large (100,000,000 pixels > 64,000,000; raise --max-pixels)"
    medium = tmp_path / "medium.png"
    medium.write_bytes(_png_header_only(9000, 8000))
    assert DEFAULT_MAX_PIXELS == 64_000_000
    assert _reason(medium) == "image too large (9000 x 8000 = 72,000,000 pixels > 64,000,000; raise --max-pixels)"
    small = _png(tmp_path / "small.png", (20, 20))
    assert _reason(small, max_pixels=100) == "image too large (20 x 20 = 400 pixels > 100; raise --max-pixels)"
    # a raised limit lets it past the size check; the fake pixel data then fails to decode
    assert _reason(medium, max_pixels=80_000_000) == "truncated or corrupt image data"


def test_load_from_bytes_with_a_name() -> None:
    buf = io.BytesIO()
    Image.new("L", (3, 2), 200).save(buf, "PNG")
    img = load_image(io.BytesIO(buf.getvalue()), name="upload")
    assert img.mode == "RGB" and img.size == (3, 2) and img.getpixel((0, 0)) == (200, 200, 200)
    with pytest.raises(ImageError, match="^upload: not an image"):
        load_image(io.BytesIO(b"hello"), name="upload")


# ---------------------------------------------------------------- thumbnails and hashes


def test_resize_never_upscales_and_keeps_aspect() -> None:
    img = Image.new("RGB", (400, 100))
    assert resize_longest(img, 1000) is img
    assert resize_longest(img, 200).size == (200, 50)


def test_display_and_thumbnail_encodings() -> None:
    img = Image.new("RGB", (2000, 1000), RED)
    data, mime, w, h = make_display(img)
    assert (mime, w, h) == ("image/jpeg", 1024, 512) and data[:2] == b"\xff\xd8"
    data, mime, w, h = make_thumbnail(img)
    assert (mime, w, h) == ("image/jpeg", 256, 128)
    data, mime = encode_image(img, "WEBP", quality=50)
    assert mime == "image/webp" and data[8:12] == b"WEBP"
    assert Image.open(io.BytesIO(data)).size == (2000, 1000)
    assert mime_for("PNG") == "image/png" and mime_for(None, "x.jpg") == "image/jpeg"


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    payload = os.urandom(3 * (1 << 20) + 5)
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()


def test_importing_images_does_not_import_tensorflow() -> None:
    import subprocess

    code = (
        "import sys, semsearch_sqlite.media.images, semsearch_sqlite.model.cnn, semsearch_sqlite.model.torchpth, "
        "semsearch_sqlite.model.effnet_numpy, semsearch_sqlite.pipeline.prepare; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- reduced decoding (ingest decodes a 12 MP photo at 1/4 scale) --------------------------------
def _phone_photo(size: tuple[int, int] = (4032, 3024), seed: int = 5) -> Image.Image:
    """A phone-size picture with detail at every scale: soft shapes, hard edges, sensor noise."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, (90, 120, 160))
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(w // 40, w // 6))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    for i in range(0, w, 97):  # thin lines: what a bad downscale aliases
        draw.line((i, 0, i + h // 3, h), fill=(250, 250, 250), width=3)
    img = img.filter(ImageFilter.GaussianBlur(2))
    noise = rng.integers(-10, 11, (h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))


def _psnr(a: Image.Image, b: Image.Image) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(np.asarray(a), np.asarray(b), data_range=255))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_decode_keeps_the_exif_orientation(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = _stored_image(orientation)
    stored.resize((stored.width * 40, stored.height * 40), Image.Resampling.NEAREST).save(
        path, exif=exif.tobytes(), quality=95
    )
    img = load_image(path, reduce_to=256)
    assert img.size == (300, 200)  # 2400 x 1600 decoded at 1/8
    assert img.source_size == (2400, 1600)  # type: ignore[attr-defined]
    assert _close(img.getpixel((30, 30)), RED)
    for corner in [(270, 30), (30, 170), (270, 170)]:
        assert _close(img.getpixel(corner), (0, 0, 255))


def test_reduced_decode_never_goes_under_the_slack_or_upscales(tmp_path: Path) -> None:
    jpeg, png = tmp_path / "p.jpg", tmp_path / "p.png"
    Image.new("RGB", (3000, 2000), GREEN).save(jpeg)
    Image.new("RGB", (3000, 2000), GREEN).save(png)
    assert load_image(jpeg, reduce_to=1024).size == (1500, 1000)  # 1/4 would be 750 px: too small
    assert load_image(jpeg, reduce_to=4000).size == (3000, 2000)
    small = load_image(png, reduce_to=256)  # no DCT scaling: a box reduce to >= 3x the size
    assert small.size == (1000, 667) and small.source_size == (3000, 2000)  # type: ignore[attr-defined]
    assert load_image(png).source_size == (3000, 2000)  # type: ignore[attr-defined]


def test_display_copy_of_a_reduced_12mp_decode_is_visually_equal(tmp_path: Path) -> None:
    """The display copy ingest stores for a 4032x3024 JPEG comes from a 1/4-scale decode:
    1008x756 px (within 5% of 1024), the same picture as a full decode downscaled with
    Lanczos, well above what the eye can tell apart (40 dB)."""
    path = tmp_path / "phone.jpg"
    _phone_photo().save(path, quality=90)
    reduced = load_image(path, reduce_to=1024)
    assert reduced.size == (1008, 756)
    full = load_image(path)
    reference = full.resize(reduced.size, Image.Resampling.LANCZOS)
    assert _psnr(reduced, reference) >= 40.0
    data, _, w, h = make_display(reduced)
    assert (w, h) == (1008, 756)
    ref_data, *_ = make_display(reference)
    stored, stored_ref = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(ref_data))
    # after JPEG encoding the two stored copies are as close to the reference as each other
    assert abs(_psnr(stored, reference) - _psnr(stored_ref, reference)) < 1.0
