"""Issue #25 (8): a database in a read-only folder or on read-only media is readable by
the CLI and Python (immutable when it must be), and when it can't be read the error
names the real cause.

Root ignores file permissions, so as root each case runs in a child process inside its
own mount namespace (``unshare -m``) where the folder is bind-mounted read-only: the
kernel then refuses every write (EROFS), as on a read-only USB stick or ISO. As another
user, ``chmod 555`` does the same."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
WORKTREE = Path(__file__).resolve().parents[1]
SEARCH = "import semsearch_sqlite; print([h.label for h in semsearch_sqlite.open({db!r}).search('dog', k=2).hits])"


def read_only_run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python args...`` with ``folder`` read-only for it."""
    env = {**os.environ, "PYTHONPATH": f"{WORKTREE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, *args]
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
        finally:
            folder.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a read-only folder")
    script = f"mount --bind -o ro {shlex.quote(str(folder))} {shlex.quote(str(folder))} && exec {shlex.join(command)}"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {folder} {folder}"],
        check=False,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {probe.stderr.strip()}")
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], check=False, capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture()
def folder(plugin_photos: dict[str, Any], tmp_path: Path) -> Path:
    """A folder holding a copy of the plugin database (WAL mode, no -wal/-shm beside it)."""
    shutil.copy(plugin_photos["db"], tmp_path / "photos.db")
    conn = sqlite3.connect(tmp_path / "photos.db")
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    conn.close()  # the last connection to close removes the -wal and -shm
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.db"]
    return tmp_path


def test_cli_and_python_read_a_read_only_folder(folder: Path) -> None:
    db = folder / "photos.db"
    result = read_only_run(folder, "-m", "semsearch_sqlite", "search", str(db), "dog", "-k", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("dog") >= 2
    assert read_only_run(folder, "-m", "semsearch_sqlite", "info", str(db)).returncode == 0
    python = read_only_run(folder, "-c", SEARCH.format(db=str(db)))
    assert python.returncode == 0 and "['dog', 'dog']" in python.stdout, python.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == ["photos.db"]


def test_unmerged_wal_in_a_read_only_folder_names_the_cause(folder: Path) -> None:
    db = folder / "photos.db"
    writer = sqlite3.connect(db)
    writer.execute("pragma wal_autocheckpoint = 0")
    writer.execute("update images set label = 'dog' where label = 'dog'")
    writer.commit()
    # what a copy made while a writer was busy looks like: the -wal holds commits, no -shm
    shutil.copy(folder / "photos.db-wal", folder / "keep-wal")
    writer.close()
    os.replace(folder / "keep-wal", folder / "photos.db-wal")
    (folder / "photos.db-shm").unlink(missing_ok=True)
    result = read_only_run(folder, "-m", "semsearch_sqlite", "search", str(db), "dog")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: {db}: cannot read it in a read-only folder")
    assert "photos.db-wal" in error and "pysqlite3" not in error


def test_extension_error_names_the_file_not_the_python(folder: Path) -> None:
    """A plain ``mode=ro`` connection of the caller's own, in a read-only folder: loading
    sqlite-vec says the file can't be read, not "pip install pysqlite3-binary"."""
    snippet = (
        "import sqlite3; from semsearch_sqlite.sqlite.extensions import load_sqlite_vec; "
        f"load_sqlite_vec(sqlite3.connect({(folder / 'photos.db').as_uri() + '?mode=ro'!r}, uri=True))"
    )
    result = read_only_run(folder, "-c", snippet)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("semsearch_sqlite.errors.ExtensionError: cannot read the database (unable to open")
    assert "pysqlite3" not in error
