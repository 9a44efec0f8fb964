"""A folder of hostile files through the real `ingest` command: each bad file is
reported once with its reason, every good one is stored (upright), exit 0; --strict
exits 1. The files are generated here, not committed."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semsearch_sqlite.cli import cli
from semsearch_sqlite.storage.vec0 import VEC_VISUAL
from semsearch_sqlite.storage.store import Store

pytestmark = pytest.mark.slow
RED, BLUE = (220, 30, 30), (30, 30, 220)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims huge dimensions (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def marker_image() -> Image.Image:
    """Red everywhere but a blue top-left quarter: tells upright from rotated."""
    img = Image.new("RGB", (60, 40), RED)
    img.paste(BLUE, (0, 0, 30, 20))
    return img


def hostile_folder(root: Path) -> tuple[Path, dict[str, str], set[str]]:
    """Returns (folder, {bad file name: reason}, {good relative paths})."""
    good: set[str] = set()
    d = root / "things"
    d.mkdir(parents=True)

    def keep(name: str, img: Image.Image, **save: object) -> None:
        img.save(d / name, **save)
        good.add(f"things/{name}")

    keep("plain.png", marker_image())
    keep("cmyk.jpg", marker_image().convert("CMYK"))
    keep("palette.png", marker_image().convert("P"))
    la = Image.new("LA", (30, 30), (128, 100))
    keep("alpha.png", la)
    keep("rgba.webp", Image.new("RGBA", (30, 30), (0, 0, 255, 128)))
    keep("sixteen.png", Image.fromarray(np.arange(900, dtype=np.uint16).reshape(30, 30) * 60).convert("I;16"))
    frames = [Image.new("RGB", (30, 30), c) for c in (RED, BLUE)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:])
    good.add("things/animated.gif")
    frames[0].save(d / "animated.webp", save_all=True, append_images=frames[1:])
    good.add("things/animated.webp")
    # Stored rotated with an EXIF orientation tag (6: rotate 90 CW to display).
    exif = Image.Exif()
    exif[0x0112] = 6
    marker_image().transpose(Image.Transpose.ROTATE_90).save(d / "rotated.jpg", exif=exif.tobytes(), quality=95)
    good.add("things/rotated.jpg")
    for name in ("with space.png", "ünïcödé.png", "new\nline.png", "<script>x.png"):
        keep(name, marker_image())

    bad = {
        "empty.jpg": "empty file (0 bytes)",
        "text.jpg": "not an image (cannot identify format)",
        "truncated.jpg": "truncated or corrupt image data",
        "truncated.png": "truncated or corrupt image data",
        "bomb.png": "image too large",
    }
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("definitely not a JPEG\n")
    buf = io.BytesIO()
    marker_image().resize((400, 300)).save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    buf = io.BytesIO()
    Image.effect_noise((200, 200), 50).save(buf, "PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "bomb.png").write_bytes(png_header_only(30000, 30000))
    # a symlink loop and a hidden file: neither is an image to report
    os.symlink(root, d / "loop")
    (d / ".hidden.jpg").write_bytes(b"")
    return root, bad, good


def test_hostile_corpus(tmp_path: Path, tiny_backbone: str) -> None:
    folder, bad, good = hostile_folder(tmp_path / "in")
    db = tmp_path / "h.db"
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(folder), str(db), "--backbone", tiny_backbone])
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("Skipped ")]
    assert len(skipped) == len(bad), skipped
    for name, reason in bad.items():
        assert sum(name in line and reason in line for line in skipped) == 1, (name, skipped)
    assert f"{len(good)} added" in result.stderr and f"{len(bad)} failed" in result.stderr
    with Store.open(db) as s:
        paths = {p for (p,) in s.conn.execute("select path from images")}
        assert paths == good
        assert s.conn.execute(f"select count(*) from {VEC_VISUAL}").fetchone() == (len(good),)
        # EXIF-rotated: stored upright (landscape, blue top-left)
        w, h, display = s.conn.execute(
            "select width, height, display from images join image_files on id = image_id "
            "where path = 'things/rotated.jpg'"
        ).fetchone()
        assert (w, h) == (60, 40)
        img = Image.open(io.BytesIO(display)).convert("RGB")
        top_left, bottom_right = img.getpixel((5, 5)), img.getpixel((55, 35))
        assert top_left[2] > 150 and top_left[0] < 100
        assert bottom_right[0] > 150 and bottom_right[2] < 100
        # embedded upright too: same visual vector as the upright original
        ids = dict(s.conn.execute("select path, id from images").fetchall())
        _, m = s.read_vectors(VEC_VISUAL)
        order = {i: n for n, i in enumerate(s.read_vectors(VEC_VISUAL)[0])}
        upright, rotated = m[order[ids["things/plain.png"]]], m[order[ids["things/rotated.jpg"]]]
        cos = float(upright @ rotated / (np.linalg.norm(upright) * np.linalg.norm(rotated)))
        assert cos > 0.99

    strict = runner.invoke(cli, ["ingest", str(folder), str(tmp_path / "s.db"), "--backbone", tiny_backbone, "--strict"])
    assert strict.exit_code == 1
    assert strict.stderr.splitlines()[-1].startswith("Error: ")
    assert "(--strict stops at the first bad file)" in strict.stderr
