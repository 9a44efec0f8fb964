"""Security and reliability, round 2 (issue 18): each defect found by probing the pages,
the SQL functions and the CLI, on real files, real SQLite and a real Datasette."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from markupsafe import escape

from semsearch_sqlite.cli import cli
from semsearch_sqlite.queries.sqlfuncs import register_functions
from semsearch_sqlite.storage.store import Store, schema_version

# the schema versions this package knows, as its errors name them
KNOWN = "1" if schema_version() == 1 else f"1 to {schema_version()}"

pytestmark = pytest.mark.slow


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def photos_copy(plugin_photos: dict[str, Any], tmp_path: Path) -> Path:
    """A private copy of the plugin's photo database (tests that change it)."""
    target = tmp_path / "photos.db"
    with closing(sqlite3.connect(plugin_photos["db"])) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


@pytest.fixture
def datasette() -> Any:
    """Makes real Datasette instances; their SQL threads, and so their connections, end
    with the test (not at some later garbage collection, mid-way through another test)."""
    from datasette.app import Datasette

    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        made.append(Datasette(*args, **kwargs))
        return made[-1]

    yield make
    for ds in made:
        if ds.executor is not None:
            ds.executor.shutdown(wait=True)


# -- 4. every SQL function argument is validated; the library's message is the SQL error --

BAD_CALLS = [
    ("select * from similar_images('cat', 1e999)", "k must be a whole number, not inf"),
    ("select * from similar_images('cat', 2.5)", "k must be a whole number, not 2.5"),
    ("select * from similar_images('cat', '５')", "k must be a whole number, not '５'"),
    ("select * from similar_to_image('¹')", "no image stored with path '¹'; list them with: select id, path from images"),
    ("select * from similar_to_image(1.5)", "an image id is a whole number, not 1.5"),
    ("select * from image_tags(1e999)", "an image id is a whole number, not inf"),
    ("select * from images_tagged(5)", "the tag word must be text, not int"),
    ("select * from images_tagged(null)", "the tag word must be text, not null"),
    ("select * from similar_words(null)", "a query must be text, not null"),
    ("select * from similar_to_image(1, 3, 5)", "space must be one of visual, semantic, not 5"),
    ("select semsearch_text_vector('zzqqzz')", "no known words in query: 'zzqqzz'"),
    ("select semsearch_word_vector(null)", "a query must be text, not null"),
    ("select semsearch_image_vector(1, 'x')", "space must be one of visual, semantic, not 'x'"),
    ("select semsearch_image_vector(99999)", "no image with id 99999"),
]


@pytest.mark.parametrize("sql, message", BAD_CALLS)
def test_sql_functions_report_the_library_message(plugin_photos: dict[str, Any], sql: str, message: str) -> None:
    with Store.open(plugin_photos["db"], readonly=True) as store:
        register_functions(store.conn)
        with pytest.raises(sqlite3.OperationalError) as caught:
            store.conn.execute(sql).fetchall()
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text
    for raw in ("OverflowError", "ValueError", "AttributeError", "user-defined function raised exception"):
        assert raw not in text


def test_scalar_functions_still_answer_and_release_their_state(plugin_photos: dict[str, Any]) -> None:
    from semsearch_sqlite.sqlite.scalar import live_scalars

    before = live_scalars()
    store = Store.open(plugin_photos["db"], readonly=True)
    register_functions(store.conn)
    blob = store.conn.execute("select semsearch_text_vector('cat')").fetchone()[0]
    dim = store.conn.execute("select vec_length(semsearch_image_vector(1, 'semantic'))").fetchone()[0]
    assert len(blob) == 4 * dim
    assert live_scalars() == before + 4
    store.close()
    assert live_scalars() == before


@pytest.mark.asyncio
async def test_datasette_shows_the_sql_function_message(plugin_photos: dict[str, Any], datasette: Any) -> None:
    ds = datasette([plugin_photos["db"]])
    response = await ds.client.get("/photos.json", params={"sql": "select semsearch_text_vector('zzqqzz')"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("no known words in query: 'zzqqzz'")


def test_cli_similar_with_a_superscript_digit_is_one_line(plugin_photos: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli, ["similar", plugin_photos["db"], "¹"])
    assert result.exit_code == 1
    assert result.output == "Error: no image stored with path '¹'; list them with: select id, path from images\n"


# -- 3. `sql` is read-only unless --write ------------------------------------------------------


def test_sql_command_is_read_only_by_default(photos_copy: Path) -> None:
    before = sha(photos_copy)
    result = CliRunner().invoke(cli, ["sql", str(photos_copy), "delete from tags"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: attempt to write a readonly database; {photos_copy} is opened read-only: add --write to change it\n")
    assert sha(photos_copy) == before
    counted = CliRunner().invoke(cli, ["sql", str(photos_copy), "select count(*) as n from tags", "--json"])
    assert counted.exit_code == 0 and '"n": 0' not in counted.output
    written = CliRunner().invoke(cli, ["sql", str(photos_copy), "delete from tags", "--write"])
    assert written.exit_code == 0, written.output
    with closing(sqlite3.connect(photos_copy)) as conn:
        assert conn.execute("select count(*) from tags").fetchone() == (0,)


# -- 6. a schema version this package doesn't know is refused without touching the file --


def set_schema_version(db: Path, raw_json: str) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("update semsearch_meta set value = ? where key = 'schema_version'", [raw_json])


@pytest.mark.parametrize("raw, shown", [('"99"', "'99'"), ("2.5", "2.5"), ("0", "0"), ("true", "True")])
def test_cli_refuses_an_unknown_schema_version_untouched(
    plugin_photos: dict[str, Any], photos_copy: Path, raw: str, shown: str
) -> None:
    set_schema_version(photos_copy, raw)
    before = sha(photos_copy)
    expected = (f"Error: {photos_copy}: schema version {shown} is not one this semsearch-sqlite knows (it knows {KNOWN}); "
                "the file was changed by another program: restore it from a copy (nothing was changed in it)\n")
    for args in (["search", str(photos_copy), "cat"], ["train", str(photos_copy)],
                 ["ingest", plugin_photos["images"], str(photos_copy), "--backbone", plugin_photos["backbone"], "-q"],
                 ["vocab", str(photos_copy), "-q"], ["evaluate", str(photos_copy)]):
        result = CliRunner().invoke(cli, args)
        assert (result.exit_code, result.output) == (1, expected), args
        assert sha(photos_copy) == before, args


def test_cli_refuses_a_newer_schema_version(photos_copy: Path) -> None:
    set_schema_version(photos_copy, "99")
    before = sha(photos_copy)
    result = CliRunner().invoke(cli, ["train", str(photos_copy)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {photos_copy}: schema version 99 is newer than this semsearch-sqlite; "
                                    "upgrade with: pip install -U semsearch-sqlite")
    assert sha(photos_copy) == before


@pytest.mark.asyncio
async def test_plugin_skips_a_store_from_a_newer_version(
    photos_copy: Path, caplog: pytest.LogCaptureFixture, datasette: Any
) -> None:
    set_schema_version(photos_copy, "99")
    message = "photos: schema version 99 is newer than this semsearch-sqlite; upgrade with: pip install -U semsearch-sqlite"
    ds = datasette([str(photos_copy)])
    with caplog.at_level("WARNING"):
        await ds.invoke_startup()
        page = await ds.client.get("/photos/-/semsearch", params={"q": "cat"})
        assert page.status_code == 404
        assert f"Skipped: {message}" in page.text
        for path in ("/photos/-/semsearch/image/1", "/photos/-/semsearch/display/1", "/photos/-/semsearch/report"):
            assert (await ds.client.get(path)).status_code == 404, path
        for sql in ("select * from similar_images('cat')", "select semsearch_text_vector('cat')"):
            response = await ds.client.get("/photos.json", params={"sql": sql})
            assert response.status_code == 400
            assert response.json()["error"].startswith(message)
        home = await ds.client.get("/")
        assert "/photos/-/semsearch" not in home.text
    skipped = [r.getMessage() for r in caplog.records if "skipping database photos" in r.getMessage()]
    assert skipped == [f"semsearch: skipping database photos: {message} (this is 0.1.0, schema {schema_version()})"]


# -- 7. every writer: one clean line on a read-only file, and ingest's writer lock ----------


@pytest.fixture
def read_only_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection the package opens is SQLite's read-only mode (root ignores file
    permissions, so chmod can't make a read-only file in these tests)."""
    from semsearch_sqlite.storage import store

    connect = store.connect
    monkeypatch.setattr(store, "connect", lambda path, **kw: connect(path, readonly=True))


@pytest.mark.parametrize("command", [["train"], ["vocab", "-q"], ["evaluate"]])
def test_writers_on_a_read_only_file_say_one_line(photos_copy: Path, read_only_sqlite: None, command: list[str]) -> None:
    before = sha(photos_copy)
    result = CliRunner().invoke(cli, [command[0], str(photos_copy), *command[1:]] + (
        ["--vocab-size", "30000"] if command[0] == "vocab" else []))
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: {photos_copy}: attempt to write a readonly database; the file or its "
                             "folder is read-only: make it writable or give another file\n")
    assert sha(photos_copy) == before


def test_evaluate_no_save_reads_a_read_only_file(photos_copy: Path, read_only_sqlite: None) -> None:
    result = CliRunner().invoke(cli, ["evaluate", str(photos_copy), "--no-save", "--method", "ridge"])
    assert result.exit_code == 0, result.output
    assert "labelled images" in result.output


@pytest.mark.parametrize("command", [["train"], ["vocab", "--vocab-size", "30000"], ["evaluate"]])
def test_writers_wait_for_the_ingest_writer_lock(photos_copy: Path, command: list[str]) -> None:
    import fcntl

    before = sha(photos_copy)
    with open(photos_copy, "rb") as held:  # the OS lock a running ingest holds on the file
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(cli, [command[0], str(photos_copy), *command[1:]])
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: {photos_copy}: another semsearch-sqlite process is writing to this "
                             "database; wait for it to finish\n")
    assert sha(photos_copy) == before


def test_train_reads_its_rows_inside_the_write_transaction(photos_copy: Path) -> None:
    from semsearch_sqlite.pipeline.train import refresh_semantic

    with Store.open(photos_copy) as store:
        seen: list[bool] = []
        store.conn.set_trace_callback(lambda sql: seen.append(store.conn.in_transaction)
                                      if "from images" in sql and "label" in sql else None)
        refresh_semantic(store, method="ridge")
        store.conn.set_trace_callback(None)
    assert seen and all(seen)


# -- 8. symlinks out of the folder are skipped (reported once) unless --follow-links -------


def linked_folder(tmp_path: Path) -> tuple[Path, Path]:
    from .test_ingest import draw, make_folder

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
    result = CliRunner().invoke(cli, ["ingest", str(folder), str(db), "--backbone", tiny_backbone, "-q",
                                      "--follow-links"])
    assert result.exit_code == 0, result.output
    assert "Skipped" not in result.stderr
    paths = stored_paths(db)
    assert [p for p in paths if p.endswith(("far0.png", "far1.png"))] in (
        [f"again/{n}" for n in ("far0.png", "far1.png")], [f"away/{n}" for n in ("far0.png", "far1.png")])
    assert "cat/linked.png" in paths and not any(p.startswith("inside/") for p in paths)


# -- 9. --quiet hides progress only: skipped files and the summary still show ------------------


def test_quiet_still_reports_every_skipped_file(tmp_path: Path, tiny_backbone: str) -> None:
    from .test_ingest import make_folder

    folder = make_folder(tmp_path / "in", per_class=1)
    (folder / "cat" / "empty.png").write_bytes(b"")
    (folder / "cat" / "notes.jpg").write_bytes(b"not an image at all\n" * 4)
    good = (folder / "dog" / "dog_0.png").read_bytes()
    (folder / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    result = CliRunner().invoke(cli, ["ingest", str(folder), str(tmp_path / "q.db"), "--backbone", tiny_backbone,
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    skipped = sorted(line.split(":")[0] for line in lines if line.startswith("Skipped "))
    assert skipped == [f"Skipped {folder / name}" for name in ("cat/empty.png", "cat/notes.jpg", "dog/cut.png")]
    assert lines[-1].startswith("3 added, 0 updated, 0 moved, 0 unchanged, 0 removed, 3 failed in ")
    assert not any("fitting" in line or "%" in line for line in lines)
    clean = CliRunner().invoke(cli, ["ingest", str(make_folder(tmp_path / "ok", per_class=1)), str(tmp_path / "ok.db"),
                                     "--backbone", tiny_backbone, "--quiet"])
    assert (clean.exit_code, clean.stderr) == (0, "")


# -- 1. the CSRF exemption covers exactly the plugin's upload route ------------------------


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
    own = await ds.client.post("/photos/-/semsearch/upload", files={"image": ("a.png", b"x")},
                               data={"csrftoken": "wrong"}, cookies=cookies)
    assert own.status_code == 403  # the upload view checks its own form's token
    assert "CSRF token is missing or wrong; reload the page and try again" in own.text


# -- 2. pages check view-table on every table they show rows of ---------------------------


@pytest.mark.asyncio
async def test_pages_hide_the_tables_metadata_denies(photos_copy: Path, tmp_path: Path, datasette: Any) -> None:
    import json

    from datasette.utils import parse_metadata

    evaluated = CliRunner().invoke(cli, ["evaluate", str(photos_copy), "--method", "ridge"])
    assert evaluated.exit_code == 0, evaluated.output
    root_only = {"allow": {"id": "root"}}
    metadata_file = tmp_path / "metadata.json"
    metadata_file.write_text(json.dumps({"databases": {"photos": {"tables": {
        "image_files": root_only, "tags": root_only, "evaluations": root_only}}}}))
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


# -- 5. time limits stop table functions, and read as the caller's own time limit -------------


def interrupt_inside_functions(conn: sqlite3.Connection) -> None:
    """A progress handler that stops every statement a semsearch function runs (a time
    limit that passes while the function works) and none of the caller's own steps."""
    import sys

    def handler() -> int:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__") == "semsearch_sqlite.queries.sqlfuncs":
                return 1
            frame = frame.f_back
        return 0

    conn.set_progress_handler(handler, 1)


@pytest.mark.parametrize("sql", ["select * from similar_images('cat', 100)", "select count(*) from image_tags(3, 4096)",
                                 "select * from similar_words('cat', 4096)", "select semsearch_text_vector('cat')"])
def test_a_time_limit_inside_a_function_is_sqlites_interrupted(photos_copy: Path, sql: str) -> None:
    with Store.open(photos_copy, readonly=True) as store:
        register_functions(store.conn)
        interrupt_inside_functions(store.conn)
        with pytest.raises(sqlite3.OperationalError) as caught:
            store.conn.execute(sql).fetchall()
        assert caught.value.args == ("interrupted",)  # what Datasette turns into its time-limit page
        store.conn.set_progress_handler(None, 0)
        assert store.conn.execute(sql).fetchall()  # and the connection still answers


@pytest.mark.asyncio
async def test_datasette_time_limit_message_for_table_functions(photos_copy: Path, datasette: Any) -> None:
    ds = datasette([str(photos_copy)], settings={"sql_time_limit_ms": 1})
    await ds.invoke_startup()
    for sql in ("select * from similar_images('cat', 100)", "select count(*) from image_tags(3, 4096)"):
        response = await ds.client.get("/photos.json", params={"sql": sql})
        assert response.status_code == 400, sql
        assert response.json()["title"] == "SQL Interrupted", sql
        assert "SQL query took too long" in response.json()["error"]
