"""The reader-only install: ``pip install semsearch-sqlite`` (no extras) into a fresh venv,
from this checkout.

There, TensorFlow and Keras can't be imported, yet a database made by the full install
answers every CLI read command, SQL function and page (through real Datasette, serving
the file immutable as ``datasette -i`` does) with the same results as the full install;
whatever needs the ``[ingest]`` extra fails with one line naming it. The venv is built
once per run (pip reuses its cached wheels); ``SEMSEARCH_READER_VENV=DIR`` reuses one
built earlier, which must hold only the reader install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from markupsafe import escape

from semsearch_sqlite.cli import cli
from semsearch_sqlite.extras import INSTALL_INGEST
from semsearch_sqlite.queries.sqlfuncs import register_functions
from semsearch_sqlite.storage.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("pyproject.toml", "README.md", "semsearch_sqlite", "datasette_plugin")
MAX_READER_MB = 150  # the target for the whole reader venv
PIP_TIMEOUT_S = 1200
IMAGE_COLUMNS = "rank, image_id, path, label, distance"
# every SQL function, as a shipped file is asked for it; compared with the full install
SQL = {
    "similar_images": f"select {IMAGE_COLUMNS} from similar_images('elephant', 10)",
    "similar_images phrase": f"select {IMAGE_COLUMNS} from similar_images('2:cat sofa -dog', 5)",
    "similar_to_image": f"select {IMAGE_COLUMNS} from similar_to_image(1, 5)",
    "similar_to_image semantic": f"select {IMAGE_COLUMNS} from similar_to_image(1, 5, 'semantic')",
    "similar_images_focused": f"select {IMAGE_COLUMNS} from similar_images_focused(1, 'dog', 5)",
    "images_tagged": f"select {IMAGE_COLUMNS} from images_tagged((select word from image_tags(1, 1)), 5)",
    "image_tags": "select * from image_tags(1, 5)",
    "similar_words": "select * from similar_words('said', 5)",
    "vector lengths": "select length(semsearch_text_vector('cat')) t, length(semsearch_word_vector('cat')) w, "
    "length(semsearch_image_vector(1)) v, length(semsearch_image_vector(1, 'semantic')) s",
    "text vector in vec0": "select image_id from vec_semantic where embedding match semsearch_text_vector('cat') "
    "and k = 5 order by distance",
    "word vector in vec0": "select w.word from vec_words v join words w on w.id = v.word_id "
    "where v.embedding match semsearch_word_vector('ocean') and k = 5 order by v.distance",
}
PAGES = [
    "/photos/-/semsearch?q=elephant",
    "/photos/-/semsearch?q=elephant&all=1",
    "/photos/-/semsearch/image/1?focus=dog",
    "/photos/-/semsearch/words?q=said",
    "/photos/-/semsearch/upload",
    "/photos/-/semsearch/report",
    "/photos/-/semsearch/thumb/1.jpg",
    "/photos/-/semsearch/display/1",
    "/photos/images?_size=3",
    "/photos",
    "/-/plugins.json",
]
# Run by the reader venv's Python: every page and SQL query through real Datasette on
# the immutable file, and an upload; prints {path: {status, type, text}} as JSON.
DATASETTE_SCRIPT = r"""
import asyncio, json, sys
from urllib.parse import urlencode
from datasette.app import Datasette

db, pages, sqls = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])

async def main():
    ds = Datasette([], immutables=[db])
    await ds.invoke_startup()
    out = {}
    async def fetch(path):
        r = await ds.client.get(path, follow_redirects=True)
        text = r.text if r.headers.get("content-type", "").startswith(("text/", "application/json")) else ""
        out[path] = {"status": r.status_code, "type": r.headers.get("content-type", ""), "text": text,
                     "bytes": len(r.content)}
    for path in pages:
        await fetch(path)
    for name, sql in sqls.items():
        path = "/photos.json?" + urlencode({"sql": sql, "_shape": "array"})
        await fetch(path)
        out[name] = out.pop(path)
    r = await ds.client.post("/photos/-/semsearch/upload", data={"k": "3"},
                             files={"image": ("query.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png")})
    out["POST upload"] = {"status": r.status_code, "type": "", "text": r.text, "bytes": len(r.content)}
    print(json.dumps(out))

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    """The environment without this checkout on PYTHONPATH: the venv must use its own install."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding ``pip install <this checkout>`` and nothing else; returns its bin/."""
    given = os.environ.get("SEMSEARCH_READER_VENV")
    if given:
        return Path(given) / "bin"
    root = tmp_path_factory.mktemp("reader")
    src = root / "src"
    src.mkdir()
    for name in SHIPPED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_env())
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=PIP_TIMEOUT_S,
    )
    if done.returncode:
        pytest.fail(
            f"pip install of the reader failed (it needs the package index or pip's cache):\n{done.stderr[-3000:]}"
        )
    return venv / "bin"


@pytest.fixture(scope="module")
def shipped(plugin_photos: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of a database made by the full install (the real ingest pipeline)."""
    path = tmp_path_factory.mktemp("shipped") / "photos.db"
    shutil.copyfile(plugin_photos["db"], path)
    return path


def run(bin_dir: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, env=_env(), timeout=timeout
    )


def same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-5 (the two installs may hold different numpy builds)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-5
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def full_sql(db: Path, sql: str) -> list[dict[str, Any]]:
    """``sql`` answered by the full install (this process)."""
    with Store.open(db, readonly=True) as store:
        register_functions(store.conn)
        cur = store.conn.execute(sql)
        columns = [d[0] for d in cur.description]
        return [dict(zip(columns, row)) for row in cur.fetchall()]


def full_cli(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_reader_venv_is_small_and_has_no_tensorflow(reader: Path) -> None:
    for module in ("tensorflow", "keras"):
        done = run(reader, "python", "-c", f"import {module}")
        assert done.returncode == 1 and f"No module named '{module}'" in done.stderr
    done = run(reader, "python", "-c", "import semsearch_sqlite, datasette_plugin, sqlite_vec, numpy, datasette")
    assert done.returncode == 0, done.stderr
    size_mb = int(
        subprocess.run(["du", "-sm", str(reader.parent)], capture_output=True, text=True, check=True).stdout.split()[0]
    )
    print(f"reader-only venv: {size_mb} MB")
    assert size_mb <= MAX_READER_MB


def test_cli_read_commands_answer_as_the_full_install(reader: Path, shipped: Path) -> None:
    db = str(shipped)
    commands = [
        ["search", db, "elephant"],
        ["search", db, "cat sofa", "-k", "3"],
        ["similar", db, "1"],
        ["similar", db, "1", "--space", "semantic"],
        ["tags", db, "1"],
        ["words", db, "said"],
        ["focus", db, "1", "dog"],
        ["info"],
    ]
    for command in commands:
        args = [*command, db] if command == ["info"] else command
        done = run(reader, "semsearch-sqlite", *args, "--json")
        assert done.returncode == 0, (args, done.stderr)
        assert same(json.loads(done.stdout), full_cli(*args, "--json")), args
    sql = "select * from similar_images('elephant', 10)"
    done = run(reader, "semsearch-sqlite", "sql", db, sql, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 10 and same(rows, full_cli("sql", db, sql, "--json"))
    done = run(reader, "semsearch-sqlite", "search", db, "dog")  # the table, as people see it (a label: strong hits)
    assert done.returncode == 0 and done.stdout.splitlines()[0].split() == [
        "rank",
        "image_id",
        "path",
        "label",
        "match",
        "score",
    ]


def test_what_needs_the_ingest_extra_says_so_in_one_line(
    reader: Path, shipped: Path, plugin_photos: dict[str, Any], tmp_path: Path
) -> None:
    from PIL import Image

    new_db = tmp_path / "new.db"
    query = tmp_path / "query.png"
    Image.new("RGB", (40, 30), (200, 30, 40)).save(query)
    writable = tmp_path / "copy.db"
    shutil.copyfile(shipped, writable)
    failing = {
        "ingest": ["ingest", plugin_photos["images"], str(new_db)],
        "reading the bundled GloVe vectors": ["vocab", str(new_db)],
        "the mlp projection": ["train", str(writable), "--method", "mlp"],
        "search by a new image": ["similar", str(shipped), str(query)],
    }
    # refitting the default (numpy) word-space model needs no extra
    done = run(reader, "semsearch-sqlite", "train", str(writable))
    assert done.returncode == 0 and done.stderr.startswith("word space: "), done.stderr
    for what, args in failing.items():
        done = run(reader, "semsearch-sqlite", *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {what} needs ") and lines[0].endswith(INSTALL_INGEST), (
            args,
            done.stderr,
        )
        assert "Traceback" not in done.stderr
    assert not new_db.exists()  # nothing was made
    # the Python API raises the same typed error
    done = run(
        reader,
        "python",
        "-c",
        "import semsearch_sqlite\n"
        "try:\n    semsearch_sqlite.ingest('x', 'y.db')\n"
        "except semsearch_sqlite.SemsearchError as e:\n    print(type(e).__name__, e)",
    )
    assert done.stdout.startswith("MissingExtraError ingest needs ") and INSTALL_INGEST in done.stdout


def test_datasette_serves_the_immutable_file_in_the_reader(reader: Path, shipped: Path) -> None:
    done = run(reader, "python", "-c", DATASETTE_SCRIPT, str(shipped), json.dumps(PAGES), json.dumps(SQL))
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    for path in PAGES:
        assert got[path]["status"] == 200, (path, got[path]["text"][:500])
    assert got["/photos/-/semsearch/thumb/1.jpg"]["type"] == "image/jpeg"
    assert got["/photos/-/semsearch/display/1"]["bytes"] > got["/photos/-/semsearch/thumb/1.jpg"]["bytes"] > 0
    assert "semsearch-sqlite" in got["/-/plugins.json"]["text"]
    for name, sql in SQL.items():
        assert got[name]["status"] == 200, (name, got[name]["text"][:500])
        assert same(json.loads(got[name]["text"]), full_sql(shipped, sql)), name
    assert len(json.loads(got["similar_images"]["text"])) == 10
    # the pages show what the full install finds
    page = got["/photos/-/semsearch?q=elephant&all=1"]["text"]
    ids = [r["image_id"] for r in full_sql(shipped, "select image_id from similar_images('elephant', 24)")]
    assert page.count('class="semsearch-card"') == len(ids)
    assert all(f'href="/photos/-/semsearch/image/{i}"' in page for i in ids)
    words = [r["word"] for r in full_sql(shipped, "select word from similar_words('said', 5)")]
    assert all(f">{w}</a>" in got["/photos/-/semsearch/words?q=said"]["text"] for w in words)
    # the upload page is off, and says how to turn it on
    assert str(escape(INSTALL_INGEST)) in got["/photos/-/semsearch/upload"]["text"]
    assert 'type="file"' not in got["/photos/-/semsearch/upload"]["text"]
    assert got["POST upload"]["status"] == 503 and str(escape(INSTALL_INGEST)) in got["POST upload"]["text"]


def test_the_datasette_publish_commands_serve_the_file(reader: Path, shipped: Path, tmp_path: Path) -> None:
    # what the Dockerfile of `datasette publish` / `datasette package` runs: inspect at
    # build time, then serve -i with the inspect file
    inspected = tmp_path / "inspect-data.json"
    done = run(reader, "datasette", "inspect", str(shipped), "--inspect-file", str(inspected))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(inspected.read_text())["photos"]["tables"]["images"]["count"] > 0
    serve = ["datasette", "serve", "-i", str(shipped), "--inspect-file", str(inspected), "--get"]
    sql = "select * from similar_images('elephant', 10)"
    done = run(reader, *serve, "/photos.json?" + urlencode({"sql": sql, "_shape": "array"}))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert [r["image_id"] for r in rows] == [r["image_id"] for r in full_sql(shipped, sql)]
    done = run(reader, *serve, "/photos/-/semsearch?q=dog")
    assert done.returncode == 0 and 'class="semsearch-card"' in done.stdout, done.stderr[-2000:]
