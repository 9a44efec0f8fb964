"""The docs stay true: generated blocks are current, every CLI command and SQL function is
documented, links between pages resolve, the README is a front page whose examples run,
and module docstrings stay short."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
COGGED = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 200
DOCSTRING_MAX_LINES = 25
# modules whose long docstring another change is cutting; the test fails once one is short,
# so that it leaves this list
DOCSTRING_EXEMPT: set[str] = set()
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_generated_blocks_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    from cogapp import Cog

    status = Cog().main(["cog", "--check", "-I", str(DOCS), *map(str, COGGED)])
    out = capsys.readouterr()
    assert status == 0, f"docs are stale; run `make docs`\n{out.out}{out.err}"


def test_docs_have_cog_blocks_to_check() -> None:
    # a page whose figures aren't generated can't be checked: these must stay cogged
    for name in ["README.md", "docs/cli.md", "docs/benchmarks.md", "docs/sql.md", "docs/architecture.md"]:
        assert "[[[cog" in (ROOT / name).read_text(), name


def test_a_figure_missing_from_a_results_file_names_the_file_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DOCS))
    import _generate

    with pytest.raises(_generate.MissingFigure, match=r"benchmarks/results/feedback.json has no 'text_none_p_at_10'"):
        _generate.need({"image_none_p_at_10": 1.0}, "text_none_p_at_10", source="feedback")
    with pytest.raises(_generate.MissingFigure, match=r"query.json has no 'cases' -> 0 -> 'n'"):
        _generate.need({"cases": [{}]}, "cases", 0, "n", source="query")


def test_every_cli_command_has_a_reference_section() -> None:
    from semsearch_sqlite.cli import cli

    text = (DOCS / "cli.md").read_text()
    missing = [name for name in cli.commands if f"\n## semsearch-sqlite {name}\n" not in text]
    assert cli.commands and not missing, f"docs/cli.md lacks {missing}; run `make docs`"


def test_every_sql_function_is_documented() -> None:
    import sqlite3

    from semsearch_sqlite.queries.sqlfuncs import register_functions

    conn = sqlite3.connect(":memory:")
    names = set(register_functions(conn))
    conn.close()
    text = (DOCS / "sql.md").read_text()
    assert "similar_images" in names and [n for n in sorted(names) if f"`{n}(" not in text] == []


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_between_pages_resolve(page: Path) -> None:
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z]+:", link):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no file {target.relative_to(ROOT)})")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link} (no heading #{anchor} in {target.relative_to(ROOT)})")
    assert broken == [], f"{page.relative_to(ROOT)}: broken links {broken}"


def test_the_link_checker_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n\nsee [b](b.md) and [here](#nowhere) and [t](#title)\n")
    assert _links(tmp_path / "a.md") == ["b.md", "#nowhere", "#title"]
    assert "nowhere" not in _anchors(tmp_path / "a.md") and "title" in _anchors(tmp_path / "a.md")


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in _links(ROOT / "README.md")}
    assert [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked] == []


def test_readme_is_a_front_page() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "![" in text and (DOCS / "search.png").stat().st_size > 10_000
    assert "pip install semsearch-sqlite" in text and "make demo" in text and "make test" in text


def test_license_is_the_apache_license_pyproject_declares() -> None:
    assert re.search(r'^license = "Apache-2.0"$', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_module_docstrings_say_what_the_module_is_for_in_25_lines() -> None:
    long, exempt_now_short = [], []
    for path in sorted([*ROOT.glob("semsearch_sqlite/**/*.py"), *ROOT.glob("datasette_plugin/**/*.py")]):
        doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
        name, lines = str(path.relative_to(ROOT)), len(doc.splitlines())
        if name in DOCSTRING_EXEMPT:
            if lines <= DOCSTRING_MAX_LINES:
                exempt_now_short.append(name)
        elif lines > DOCSTRING_MAX_LINES:
            long.append(f"{name}: {lines} lines")
    assert long == [], "module docstrings over 25 lines (history goes to docs/research.md)"
    assert exempt_now_short == [], "short now: remove from DOCSTRING_EXEMPT in tests/test_docs.py"


def test_make_targets_the_readme_names_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ["install", "demo", "test", "docs", "screenshot"]:
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


# -- the README's examples, run as written ---------------------------------------------------
def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _readme_commands() -> list[list[str]]:
    commands = []
    for block in _blocks((ROOT / "README.md").read_text(), "bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("semsearch-sqlite ", "datasette ")):
                commands.append(shlex.split(line))
    return commands


@pytest.mark.slow
def test_the_readme_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `semsearch-sqlite` line of the README in order (the first ingests
    examples/images, as `make demo` does), then its Python example, then the page
    `datasette photos.db` serves."""
    from semsearch_sqlite.cli import cli

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    commands = _readme_commands()
    assert commands[0][:2] == ["semsearch-sqlite", "ingest"], "the README starts by building a database"
    makefile = (ROOT / "Makefile").read_text()
    assert "semsearch-sqlite " + " ".join(commands[0][1:]).replace("photos.db", "$(DB)") in makefile
    for command in commands:
        if command[0] == "datasette":
            assert command == ["datasette", "photos.db"]
            continue
        result = CliRunner().invoke(cli, command[1:], prog_name="semsearch-sqlite")
        assert result.exit_code == 0, f"{shlex.join(command)}: {result.output}"
        assert result.output.strip(), shlex.join(command)
    for block in _blocks((ROOT / "README.md").read_text(), "python"):
        exec(compile(block, "README.md", "exec"), {})
    _serve_search_page(tmp_path / "photos.db")


def _serve_search_page(db: Path) -> None:
    import asyncio

    from datasette.app import Datasette

    async def get() -> tuple[int, str]:
        response = await Datasette([str(db)]).client.get("/photos/-/semsearch?q=animal")
        return response.status_code, response.text

    status, html = asyncio.run(get())
    assert status == 200 and re.search(r"image_\d{4}\.jpg", html)


CONSTANT = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")


def _defined_constants() -> set[str]:
    names: set[str] = set()
    for package in ("semsearch_sqlite", "datasette_plugin", "benchmarks", "docs"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Assign):
                    targets = node.targets
                elif isinstance(node, ast.AnnAssign):
                    targets = [node.target]
                else:
                    continue
                for target in targets:  # also ``A, B = 1.0, 0.95``
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def test_constants_the_docs_name_exist() -> None:
    # a renamed or removed constant (SCORE_WIDTH, ASSOCIATION_ZERO_CSLS) must leave the pages that
    # describe the code now; the research note keeps history and may name what is gone
    defined = _defined_constants()
    stale = {
        (page.name, name)
        for page in PAGES
        if page.exists() and page.name != "research.md"
        for name in CONSTANT.findall(page.read_text())
        if name not in defined
    }
    assert not stale, f"docs name constants the code no longer defines: {sorted(stale)}"


def test_the_constant_check_catches_a_removed_name() -> None:
    assert CONSTANT.findall("the score's `SCORE_WIDTH` and `ASSOCIATION_ZERO`") == ["SCORE_WIDTH", "ASSOCIATION_ZERO"]
    assert "SCORE_WIDTH" not in _defined_constants()
    assert "ASSOCIATION_ZERO" in _defined_constants()
