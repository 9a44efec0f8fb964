"""The plugin's security boundaries on a real Datasette: the CSRF exemption is exactly the
upload route, and pages check view-table on every table they show rows of."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from markupsafe import escape

from semsearch_sqlite.cli import cli
from semsearch_sqlite.storage.store import Store

pytestmark = pytest.mark.slow


@pytest.mark.asyncio
@pytest.mark.parametrize("base_url", ["/", "/prefix/"])
async def test_csrf_exemption_is_exactly_the_upload_route(
    plugin_photos: dict[str, Any], base_url: str, datasette: Any
) -> None:
    ds = datasette([plugin_photos["db"]], settings={"base_url": base_url})  # ds.client adds base_url
    cookies = {"ds_csrftoken": "x"}  # a browser with ambient cookies, no token in the form
    encoded = await ds.client.post("/photos/images%2F-%2Fsemsearch%2Fupload", data={"a": "1"}, cookies=cookies)
    assert encoded.status_code == 403, encoded.text  # asgi-csrf refuses it; it never reaches the table POST
    assert "form-urlencoded POST field did not match cookie" in encoded.text
    own = await ds.client.post(
        "/photos/-/semsearch/upload", files={"image": ("a.png", b"x")}, data={"csrftoken": "wrong"}, cookies=cookies
    )
    assert own.status_code == 403  # the upload view checks its own form's token
    assert "CSRF token is missing or wrong; reload the page and try again" in own.text


@pytest.mark.asyncio
async def test_pages_hide_the_tables_metadata_denies(photos_copy: Path, tmp_path: Path, datasette: Any) -> None:
    import json

    from datasette.utils import parse_metadata

    evaluated = CliRunner().invoke(cli, ["evaluate", str(photos_copy), "--method", "ridge"])
    assert evaluated.exit_code == 0, evaluated.output
    root_only = {"allow": {"id": "root"}}
    metadata_file = tmp_path / "metadata.json"
    metadata_file.write_text(
        json.dumps(
            {
                "databases": {
                    "photos": {"tables": {"image_files": root_only, "tags": root_only, "evaluations": root_only}}
                }
            }
        )
    )
    ds = datasette([str(photos_copy)], metadata=parse_metadata(metadata_file.read_text()))
    await ds.invoke_startup()
    with Store.open(photos_copy, readonly=True) as store:
        image_id, tag = store.conn.execute("select image_id, word from tags where rank = 1 limit 1").fetchone()
    root = {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}

    async def pages(cookies: dict[str, str]) -> tuple[int, str, int]:
        display = await ds.client.get(f"/photos/-/semsearch/display/{image_id}", cookies=cookies)
        page = await ds.client.get(f"/photos/-/semsearch/image/{image_id}", cookies=cookies)
        assert page.status_code == 200
        report = await ds.client.get("/photos/-/semsearch/report", cookies=cookies)
        return display.status_code, page.text, report.status_code

    display, page, report = await pages({})
    assert (display, report) == (403, 403)
    assert f"/display/{image_id}" not in page and 'title="distance' not in page and "tags in SQL" not in page
    assert f"/thumb/{image_id}.jpg" in page  # the images table itself is still shown
    display, page, report = await pages(root)
    assert (display, report) == (200, 200)
    assert f"/display/{image_id}" in page and f">{escape(tag)}</a>" in page
