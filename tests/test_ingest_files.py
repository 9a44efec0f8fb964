"""Which files ingest reads, and how it reports the others. A folder of hostile files through
the real `ingest` command: each bad file is reported once with its reason, every good one is
stored (upright), exit 0; --strict exits 1 (the files are generated here, not committed).
Symlinks out of the folder are skipped and reported once unless --follow-links (each real
folder read once); --quiet hides progress, never a skipped file."""

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
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.storage.vec0 import VEC_VISUAL

from .helpers import draw, make_folder

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

    strict = runner.invoke(
        cli, ["ingest", str(folder), str(tmp_path / "s.db"), "--backbone", tiny_backbone, "--strict"]
    )
    assert strict.exit_code == 1
    assert strict.stderr.splitlines()[-1].startswith("Error: ")
    assert "(--strict stops at the first bad file)" in strict.stderr


# -- symlinks, and --quiet -------------------------------------------------------------------------


def linked_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = make_folder(tmp_path / "in", per_class=1)
    elsewhere = tmp_path / "elsewhere" / "dog"
    draw(elsewhere / "far0.png", (40, 160, 60), 11)
    draw(elsewhere / "far1.png", (40, 160, 60), 12)
    os.symlink(elsewhere, folder / "away")
    os.symlink(elsewhere, folder / "again")  # the same real folder through a second link
    os.symlink(elsewhere / "far0.png", folder / "cat" / "linked.png")
    os.symlink(folder / "dog", folder / "inside")  # inside the folder: followed, read once
    return folder, elsewhere


def stored_paths(db: Path) -> list[str]:
    with Store.open(db, readonly=True) as store:
        return [p for (p,) in store.conn.execute("select path from images order by path")]


def test_ingest_skips_links_out_of_the_folder_and_says_so_once(tmp_path: Path, tiny_backbone: str) -> None:
    folder, elsewhere = linked_folder(tmp_path)
    db = tmp_path / "links.db"
    result = CliRunner().invoke(cli, ["ingest", str(folder), str(db), "--backbone", tiny_backbone, "-q"])
    assert result.exit_code == 0, result.output
    assert stored_paths(db) == ["car/car_0.png", "cat/cat_0.png", "dog/dog_0.png"]
    skipped = sorted(line for line in result.stderr.splitlines() if line.startswith("Skipped "))
    assert skipped == [
        f"Skipped {folder / name}: symlink to {target} leads outside the folder (add --follow-links to include it)"
        for name, target in [("again", elsewhere), ("away", elsewhere), ("cat/linked.png", elsewhere / "far0.png")]
    ]


def test_follow_links_reads_each_real_folder_once(tmp_path: Path, tiny_backbone: str) -> None:
    folder, _ = linked_folder(tmp_path)
    db = tmp_path / "links.db"
    result = CliRunner().invoke(
        cli, ["ingest", str(folder), str(db), "--backbone", tiny_backbone, "-q", "--follow-links"]
    )
    assert result.exit_code == 0, result.output
    assert "Skipped" not in result.stderr
    paths = stored_paths(db)
    assert [p for p in paths if p.endswith(("far0.png", "far1.png"))] in (
        [f"again/{n}" for n in ("far0.png", "far1.png")],
        [f"away/{n}" for n in ("far0.png", "far1.png")],
    )
    assert "cat/linked.png" in paths and not any(p.startswith("inside/") for p in paths)


def test_quiet_still_reports_every_skipped_file(tmp_path: Path, tiny_backbone: str) -> None:
    folder = make_folder(tmp_path / "in", per_class=1)
    (folder / "cat" / "empty.png").write_bytes(b"")
    (folder / "cat" / "notes.jpg").write_bytes(b"not an image at all\n" * 4)
    good = (folder / "dog" / "dog_0.png").read_bytes()
    (folder / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    result = CliRunner().invoke(
        cli, ["ingest", str(folder), str(tmp_path / "q.db"), "--backbone", tiny_backbone, "--quiet"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    skipped = sorted(line.split(":")[0] for line in lines if line.startswith("Skipped "))
    assert skipped == [f"Skipped {folder / name}" for name in ("cat/empty.png", "cat/notes.jpg", "dog/cut.png")]
    assert lines[-1].startswith("3 added, 0 updated, 0 moved, 0 unchanged, 0 removed, 3 failed in ")
    assert not any("fitting" in line or "%" in line for line in lines)
    clean = CliRunner().invoke(
        cli,
        [
            "ingest",
            str(make_folder(tmp_path / "ok", per_class=1)),
            str(tmp_path / "ok.db"),
            "--backbone",
            tiny_backbone,
            "--quiet",
        ],
    )
    assert (clean.exit_code, clean.stderr) == (0, "")
