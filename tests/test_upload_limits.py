"""The search-by-image page keeps its memory bounded: uploads are decoded reduced, a
pixel limit refuses huge images before decoding (in web words, not CLI advice), at most
``UPLOAD_SLOTS`` bodies are read at once, a body that never arrives gives its slot up,
and the decode and CNN run in one thread.

Runs on Datasette 0.65 and 1.0a; the database is the real ingest pipeline's output
(``plugin_photos`` in conftest.py). Memory itself is measured in
benchmarks/upload_memory.py.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
from datasette.app import Datasette
from PIL import Image

from datasette_plugin import upload

IS_1_0 = hasattr(Datasette, "allowed")
PATH = "/photos/-/semsearch/upload"
BOUNDARY = b"XyZ0123"


def make_ds(db: str, **settings: Any) -> Datasette:
    block = {"plugins": {"semsearch-sqlite": settings}} if settings else {}
    return Datasette([db], **({("config" if IS_1_0 else "metadata"): block} if block else {}))


def form(data: bytes, filename: str = "query.png") -> bytes:
    return (
        b"--"
        + BOUNDARY
        + b'\r\nContent-Disposition: form-data; name="image"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + data
        + b"\r\n--"
        + BOUNDARY
        + b"--\r\n"
    )


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buf, "PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` (its pixel data never comes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


async def post(ds: Datasette, data: bytes, filename: str = "query.png") -> Any:
    await ds.invoke_startup()
    return await ds.client.post(
        PATH,
        content=form(data, filename),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY.decode()}"},
    )


async def asgi_post(app: Any, body: bytes, receive: Any) -> int:
    """POST ``body`` to the upload page straight through ASGI, ``receive`` giving the body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
        ],
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 5000),
    }
    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


@pytest.fixture
def db(plugin_photos: dict[str, Any]) -> str:
    return plugin_photos["db"]


@pytest.mark.asyncio
async def test_an_image_over_the_pixel_limit_is_refused_in_web_words(db: str) -> None:
    r = await post(make_ds(db, max_upload_pixels=10_000), png((200, 100)), "wide.png")
    assert r.status_code == 413
    assert "wide.png: 20,000 pixels; this page takes images of at most 10,000 pixels. Send a smaller copy." in r.text
    assert "--max-pixels" not in r.text and 'class="semsearch-card"' not in r.text


@pytest.mark.asyncio
async def test_the_default_limit_refuses_a_huge_image_before_decoding_it(db: str) -> None:
    for width, height in ((10_000, 7_000), (100_000, 100_000)):  # over ours; over Pillow's own limit too
        r = await post(make_ds(db), png_header_only(width, height), "huge.png")
        assert r.status_code == 413 and "huge.png" in r.text and "Send a smaller copy" in r.text
        assert "--max-pixels" not in r.text and "raise" not in r.text


def test_uploads_are_decoded_reduced() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 120, 200)).save(buf, "JPEG", quality=80)
    image = upload.decode_upload(buf.getvalue(), "big.jpg", 64_000_000)
    assert 950 <= max(image.size) <= 1100  # JPEG: a 1/4 DCT scale, not 4000 px
    buf = io.BytesIO()
    Image.new("RGB", (9000, 600), (10, 120, 200)).save(buf, "PNG")
    image = upload.decode_upload(buf.getvalue(), "wide.png", 64_000_000)
    assert image.size == (4500, 300)  # other formats: box-reduced at once (by 2: it keeps >= 3x 1024 px)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_at_most_two_bodies_are_read_at_once_and_one_thread_decodes(
    db: str, plugin_photos: dict[str, Any]
) -> None:
    ds = make_ds(db)
    await ds.invoke_startup()
    app = ds.app()
    body = form(next(Path(plugin_photos["images"], "car").glob("*.png")).read_bytes())
    started: list[int] = []
    gate = asyncio.Event()

    def receiver(i: int) -> Any:
        async def receive() -> dict[str, Any]:
            if i not in started:
                started.append(i)
            await gate.wait()
            return {"type": "http.request", "body": body, "more_body": False}

        return receive

    tasks = [asyncio.create_task(asgi_post(app, body, receiver(i))) for i in range(5)]
    for _ in range(50):
        await asyncio.sleep(0.02)
    assert len(started) == upload.UPLOAD_SLOTS == 2  # the others wait with their bodies unread
    gate.set()
    assert await asyncio.gather(*tasks) == [200] * 5 and sorted(started) == list(range(5))
    decoders = [t for t in threading.enumerate() if t.name.startswith("semsearch-upload")]
    assert len(decoders) == 1


@pytest.mark.asyncio
async def test_a_body_that_never_arrives_gives_its_slot_up(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload, "READ_SECONDS", 0.3)
    ds = make_ds(db)
    await ds.invoke_startup()
    app = ds.app()
    body = form(b"not an image")

    async def never() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    stalled = [asyncio.create_task(asgi_post(app, body, never)) for _ in range(upload.UPLOAD_SLOTS)]
    assert await asyncio.wait_for(asyncio.gather(*stalled), 10) == [408] * upload.UPLOAD_SLOTS
    r = await post(ds, b"still not an image", "notes.txt")  # the slots are free again
    assert r.status_code == 400 and "notes.txt: not a JPEG, PNG" in r.text
