"""The shape the architecture page promises: no function over 80 lines in the package
and the plugin (split by responsibility, as sqlite-utils splits its helpers)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80


def test_no_function_over_80_lines() -> None:
    long = []
    for path in sorted([*ROOT.glob("semsearch_sqlite/**/*.py"), *ROOT.glob("datasette_plugin/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
