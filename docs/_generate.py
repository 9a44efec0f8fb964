"""What the cog blocks in README.md and docs/*.md print: the CLI's ``--help``, the Python
API's signatures, the SQL functions, the layer rules and every benchmark table.

    cog -r -I docs README.md docs/*.md      # regenerate (make docs)
    cog --check -I docs README.md docs/*.md # what tests/test_docs.py runs

Figures are read from ``benchmarks/results/*.json``; a key a table needs that a results
file lacks stops the run with a :class:`MissingFigure` naming the file, the key and the
benchmark that writes it.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PROG = "semsearch-sqlite"
HELP_WIDTH = 88

# The layers, top to bottom, as import-linter lists them; used only while pyproject.toml
# has no layers contract (the contract, once there, is what this page prints).
DEFAULT_LAYERS = [
    "semsearch_sqlite.cli | datasette_plugin",
    "semsearch_sqlite.collection",
    "semsearch_sqlite.pipeline",
    "semsearch_sqlite.queries",
    "semsearch_sqlite.model",
    "semsearch_sqlite.text",
    "semsearch_sqlite.media",
    "semsearch_sqlite.vectors",
    "semsearch_sqlite.storage",
    "semsearch_sqlite.sqlite",
]

# One line per SQL function; a function registered without a line here stops the docs build.
SQL_FUNCTIONS = {
    "similar_images": "text -> images: the images nearest to a query in word space",
    "similar_to_image": "image -> images, in the CNN's (`visual`, default) or word (`semantic`) space",
    "similar_images_focused": "images similar to an image as far as one ImageNet class or group goes",
    "images_tagged": "images whose stored tags include a word",
    "duplicate_images": "groups of near-identical images",
    "image_tags": "image -> words: an image's tags",
    "similar_words": "word -> words: vocabulary words nearest to a query",
}
# parameters SQL callers must give beyond the first (the function raises without them)
REQUIRED_PARAMS = {"similar_images_focused": 2}
SCALAR_FUNCTIONS = {
    "semsearch_text_vector(query)": "a query (same syntax as search) as a float32 BLOB in word space",
    "semsearch_word_vector(word)": "one vocabulary word's vector",
    "semsearch_image_vector(image [, space])": "a stored image's vector, `visual` (default) or `semantic`",
}


class MissingFigure(KeyError):
    """A results file lacks a figure a docs table prints."""

    def __str__(self) -> str:
        return str(self.args[0])


# -- reading results ----------------------------------------------------------------------
def results(name: str) -> dict[str, Any] | list[Any]:
    """``benchmarks/results/<name>.json``, or a MissingFigure saying which benchmark writes it."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise MissingFigure(f"{path.relative_to(ROOT)} is missing: run benchmarks/{name.split('_')[0]}.py")
    return json.loads(path.read_text())


def need(data: Any, *keys: str | int, source: str) -> Any:
    """``data[k1][k2]...``, or a MissingFigure naming the results file and the key path."""
    here = data
    for i, key in enumerate(keys):
        try:
            here = here[key]
        except (KeyError, IndexError, TypeError):
            path = " -> ".join(repr(k) for k in keys[: i + 1])
            raise MissingFigure(
                f"benchmarks/results/{source}.json has no {path}: re-run the benchmark that writes it, "
                f"or change the docs block that reads it (docs/_generate.py)"
            ) from None
    return here


# -- formatting ---------------------------------------------------------------------------
def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def ms(x: float) -> str:
    """Milliseconds, or seconds above 1 s, with about three significant figures."""
    if x >= 1000:
        return f"{x / 1000:.2f} s" if x < 10000 else f"{x / 1000:.1f} s"
    return f"{x:.3g} ms"


def size(n: float) -> str:
    """Bytes as B / KB (1,000s), as the tables have always shown memory per vector."""
    return f"{n:.0f} B" if n < 1000 else f"{n / 1000:.1f} KB"


def count(n: float) -> str:
    """1000 -> 1k, 1000000 -> 1M."""
    return f"{n // 1_000_000:g}M" if n >= 1_000_000 else f"{n // 1000:g}k"


# -- the CLI ------------------------------------------------------------------------------
def cli_commands() -> list[str]:
    """The CLI's commands, sorted."""
    from semsearch_sqlite.cli import cli

    return sorted(cli.commands)


def help_text(*args: str) -> str:
    """``semsearch-sqlite ARGS --help`` at a fixed width, as the user sees it."""
    from click.testing import CliRunner

    from semsearch_sqlite.cli import cli

    result = CliRunner().invoke(cli, [*args, "--help"], prog_name=PROG, terminal_width=HELP_WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"{PROG} {' '.join(args)} --help exited {result.exit_code}: {result.output}")
    return result.output


def cli_reference() -> str:
    """docs/cli.md's body: the top-level help, then each command's under its own heading."""
    parts = [f"## {PROG} --help\n\n```\n{help_text()}```\n"]
    for name in cli_commands():
        parts.append(f"\n## {PROG} {name}\n\n```\n{help_text(name)}```\n")
    return "".join(parts)


# -- the Python API -----------------------------------------------------------------------
def python_api() -> str:
    """The public methods of ``Collection``: signature and docstring."""
    from semsearch_sqlite.collection import Collection

    parts = []
    for name, member in vars(Collection).items():
        if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
            continue
        if isinstance(member, property):
            head, doc = f"photos.{name}", inspect.getdoc(member.fget) or ""
        else:
            head, doc = f"photos.{name}{_signature(member)}", inspect.getdoc(member) or ""
        parts.append(f"### `{head}`\n\n{markdown(doc)}\n".replace("\n\n\n", "\n"))
    return "\n".join(parts)


def markdown(doc: str) -> str:
    """A docstring's reStructuredText roles and literals as Markdown code."""
    doc = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`", doc)
    return doc.replace("``", "`")


def _signature(fn: Any) -> str:
    """``(a: int = 10, *, b: str | None = None) -> Results`` with annotations as written."""
    sig = inspect.signature(fn)
    parts, star = [], False
    for p in list(sig.parameters.values())[1:]:
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = p.name + (f": {p.annotation}" if p.annotation is not p.empty else "")
        parts.append(text + (f" = {p.default!r}" if p.default is not p.empty else ""))
    returns = f" -> {sig.return_annotation}" if sig.return_annotation is not sig.empty else ""
    return f"({', '.join(parts)}){returns}"


# -- SQL functions ------------------------------------------------------------------------
def sql_functions() -> str:
    """The table-valued functions, from the registry the connection registers them from."""
    from semsearch_sqlite.queries.sqlfuncs import NO_REQUIRED, TABLE_FUNCTIONS

    rows = []
    for name, (_, columns, params) in TABLE_FUNCTIONS.items():
        if name not in SQL_FUNCTIONS:
            raise MissingFigure(f"SQL function {name} has no line in docs/_generate.py SQL_FUNCTIONS")
        required = [] if name in NO_REQUIRED else params[: REQUIRED_PARAMS.get(name, 1)]
        # optional parameters each in brackets (nested brackets would close a cog block)
        inner = ", ".join([*required, *(f"[{p}]" for p in params[len(required) :])])
        sig = f"`{name}({inner})`"
        rows.append((sig, SQL_FUNCTIONS[name], ", ".join(columns)))
    return table(["function", "what", "columns"], rows)


def scalar_functions() -> str:
    return table(["function", "returns"], [(f"`{call}`", what) for call, what in SCALAR_FUNCTIONS.items()])


# -- plugin settings ----------------------------------------------------------------------
# One line per setting; a setting without a line here stops the docs build.
SETTINGS_HELP = {
    "per_page": "results a page shows (its default `k`)",
    "max_k": "the most results a page may ask for with `?k=`",
    "uploads": "the search-by-upload page (also needs the `[ingest]` extra)",
    "max_upload_bytes": "the largest upload accepted",
    "max_upload_pixels": "the most pixels an upload may have; larger ones are refused (413) before decoding",
    "thumbnail_px": "the box thumbnails are shown in (stored thumbnails are 256 px)",
}


def plugin_settings() -> str:
    """The settings, their defaults and allowed ranges, from datasette_plugin/config.py."""
    import dataclasses

    from datasette_plugin import config

    limits = getattr(config, "_LIMITS", {})
    rows = []
    for field in dataclasses.fields(config.Settings):
        if field.name not in SETTINGS_HELP:
            raise MissingFigure(f"plugin setting {field.name} has no line in docs/_generate.py SETTINGS_HELP")
        low, high = limits.get(field.name, (None, None, None))[1:]
        allowed = f"{low}-{high}" if low is not None else ""
        default = str(field.default).lower() if isinstance(field.default, bool) else field.default
        rows.append((f"`{field.name}`", default, allowed, SETTINGS_HELP[field.name]))
    return table(["setting", "default", "allowed", "what"], rows)


# -- layers -------------------------------------------------------------------------------
def layers() -> list[str]:
    """The layers contract, top to bottom: pyproject's import-linter contract if it has one."""
    for contract in _contracts():
        if contract.get("type") == "layers":
            return list(contract["layers"])
    return DEFAULT_LAYERS


def _contracts() -> list[dict[str, Any]]:
    """pyproject.toml's import-linter contracts."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: import-linter's own dependency
        import tomli as tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config.get("tool", {}).get("importlinter", {}).get("contracts", [])


def forbidden_rules() -> str:
    """The forbidden-import contracts, one line each."""
    lines = []
    for c in _contracts():
        if c.get("type") == "forbidden":
            banned = ", ".join(f"`{m}`" for m in c["forbidden_modules"])
            sources = ", ".join(f"`{m}`" for m in c["source_modules"])
            lines.append(f"- {c['name']}: {sources} may not import {banned}.")
    return "\n".join(lines) + "\n" if lines else ""


def layer_rules() -> str:
    """The layers as a numbered list, bottom first, with each layer's modules."""
    lines = []
    for i, layer in enumerate(reversed(layers()), 1):
        names = [n.strip() for n in layer.replace(":", "|").split("|") if n.strip()]
        parts = []
        for n in names:
            modules = _modules(n)
            parts.append(f"`{n}`" + (f" ({', '.join(modules)})" if modules else ""))
        side = " (side by side: neither imports the other)" if len(names) > 1 else ""
        lines.append(f"{i}. {'; '.join(parts)}{side}")
    return "\n".join(lines) + "\n"


def _modules(dotted: str) -> list[str]:
    """The modules of a package, or [] for a module."""
    folder = ROOT.joinpath(*dotted.split("."))
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        out.append(f"`{path.stem}`")
    return out


# -- benchmark tables ---------------------------------------------------------------------
def semantic_table() -> str:
    """Search quality per method, benchmarks/semantic.py's 50-label protocol."""
    data = results("semantic")
    default = need(data, "default", source="semantic")
    rows = []
    for name in need(data, "summary", source="semantic"):
        s = need(data, "summary", name, source="semantic")

        def f(key: str, digits: int = 3, s: dict[str, Any] = s, name: str = name) -> str:
            return num(need(s, key, source=f"semantic (summary -> {name!r})"), digits)

        row = [
            name,
            f"{f('seen_p_at_10')} ({f('seen_p_at_10_min')})",
            f"{f('zero_shot_p_at_10')} ({f('zero_shot_p_at_10_min')})",
            f("tag_at_5_seen"),
            f("tag_at_5_zero_shot"),
            f"{need(s, 'strong_share', source='semantic') * 100:.0f}% ({f('strong_precision')})",
            f("weak_precision"),
            f"{f('fit_seconds', 1)} s",
        ]
        rows.append([f"**{c}**" for c in row] if name == default else row)
    header = [
        "method",
        "seen labels, new photos: P@10 (worst seed)",
        "zero-shot P@10 (worst seed)",
        "tag@5 seen",
        "tag@5 zero-shot",
        "strong hits: share (precision)",
        "weak hits: precision",
        "fit",
    ]
    return table(header, rows)


LABELLED_COLUMNS = (
    ("related_p_at_10", "related P@10"),
    ("coverage_at_20", "coverage@20"),
    ("strong_precision", "strong precision"),
    ("absent_honesty", "absent honesty"),
    ("label_p_at_10", "label words P@10"),
)


def _labelled(key: str) -> Any:
    return need(results("semantic"), "labelled", key, source="semantic")


def labelled_table() -> str:
    """The labelled-collection protocol per method: main's search (photos by vector) against
    label relations, with kinds and associations apart and calibration halves A / B."""
    rows = []
    for name, s in _labelled("summary").items():
        g = functools.partial(need, s, source=f"semantic (labelled -> summary -> {name!r})")
        shown = name.replace("main's search", "photo vectors (old search)").replace(
            "label relations", "label relations (search)"
        )
        row = [shown, *(num(g(key)) for key, _ in LABELLED_COLUMNS)]
        row += [
            f"{num(g('related_p_at_10_kind'))} / {num(g('coverage_at_20_kind'))}",
            f"{num(g('related_p_at_10_association'))} / {num(g('coverage_at_20_association'))}",
            f"{num(g('related_p_at_10_half_a'))} / {num(g('related_p_at_10_half_b'))}",
        ]
        rows.append([f"**{c}**" for c in row] if name.startswith("joint, label") else row)
    header = [
        "method, search",
        *(h for _, h in LABELLED_COLUMNS),
        "kinds: P@10 / coverage",
        "associations: P@10 / coverage",
        "related P@10: half A / half B",
    ]
    return table(header, rows)


def labelled_setup() -> str:
    """The labelled protocol's sizes, as a sentence."""
    return (
        f"{_labelled('labels')} labels, {_labelled('photos_per_label')} labelled photos each, "
        f"{_labelled('seeds')} seeds; {len(_labelled('kind_queries'))} kind queries, "
        f"{len(_labelled('association_queries'))} association queries and "
        f"{len(_labelled('absent_queries'))} words for things the collection lacks.\n"
    )


def semantic_setup() -> str:
    """The protocol's sizes, as a sentence."""
    d = results("semantic")
    g = functools.partial(need, d, source="semantic")
    return (
        f"{g('images'):,} Caltech-101 photos ({g('labels')} labels), {g('backbone')}; {g('seeds')} seeds, each "
        f"holding {g('held_out')} labels out of training; of each of the {g('labels') - g('held_out')} other "
        f"labels, {g('train')} photos labelled and {g('test')} more left unlabelled.\n"
    )


def one_of_a_kind_table() -> str:
    data = need(results("semantic"), "one_of_a_kind", source="semantic")
    return table(
        ["stored vectors and classes", "tag@5 seen", "tag@5 zero-shot"],
        [(name, num(seen), num(zero)) for name, (seen, zero) in data.items()],
    )


def _strategy_row(rows: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for name, row in rows.items():
        if name.startswith(("Matrix.top_k (auto", "served")):
            return name, row
    raise MissingFigure(
        f"benchmarks/results/query*.json: no 'Matrix.top_k (auto: ...)' or 'served' row in {list(rows)}"
    )


def _row_named(rows: dict[str, Any], prefix: str, source: str) -> dict[str, Any]:
    for name, row in rows.items():
        if name.startswith(prefix):
            return row
    raise MissingFigure(f"benchmarks/results/{source}.json: no row starting {prefix!r} in {list(rows)}")


def query_table(min_n: int = 100_000) -> str:
    """Top-10 latency per table size: numpy, sqlite-vec, and what the library picks."""
    out = []
    for source in ("query", "query_1M_4096"):
        for case in need(results(source), "cases", source=source):
            n, d = need(case, "n", source=source), need(case, "d", source=source)
            if n < min_n:
                continue
            rows = need(case, "rows", source=source)
            numpy = _row_named(rows, "numpy brute force", source)
            vec = _optional_row(rows, "sqlite-vec float")
            name, ours = _strategy_row(rows)
            strategy = "codes + exact rescoring" if "codes" in name else name.split(": ")[-1].rstrip(")")
            g = functools.partial(_need2, source=source)
            recall = g(ours, "recall@10")
            out.append(
                (
                    f"{count(n)} x {d}",
                    ms(g(numpy, "median_ms")) + (" (est.)" if "est." in _numpy_name(rows) else ""),
                    f"{ms(g(vec, 'median_ms'))} ({g(vec, 'vs_numpy'):.1f}x)" if vec else "not run",
                    f"{ms(g(ours, 'median_ms'))} {strategy}"
                    + (f", {recall:.3f}" if recall < 1 else "")
                    + f" ({g(ours, 'vs_numpy'):.2g}x)",
                    size(g(ours, "memory_bytes_per_vector")),
                )
            )
    return table(
        [
            "N x D",
            "numpy brute force",
            "sqlite-vec float",
            "semsearch (strategy, recall@10)",
            "semsearch memory per vector",
        ],
        out,
    )


def _optional_row(rows: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """A row a run may skip (e.g. --skip-sqlite-vec): None, shown as 'not run', never invented."""
    return next((row for name, row in rows.items() if name.startswith(prefix)), None)


def disk_1m_table() -> str:
    """The 1M x 4096 rescoring copy: int16 against float32, both measured in the same run."""
    src = "query_1M_4096"
    case = need(results(src), "cases", 0, source=src)
    rows = need(case, "rows", source=src)
    file_b = need(case, "db_file_bytes_per_vector", source=src)
    out = []
    for label, disk_key, row_name in (
        ("int16 + per-row scale (this version)", "disk", "served: fresh process (codes)"),
        ("float32 (earlier files)", "disk_float32_copy", "served: fresh process (codes, float32 copy)"),
    ):
        disk, row = case.get(disk_key), rows.get(row_name)
        if disk is None or row is None:
            out.append((label, "not measured", "", "", "", ""))
            continue
        g = functools.partial(_need2, source=src)
        out.append(
            (
                label,
                f"{g(disk, 'copy_bytes_per_vector'):,.0f} B",
                f"{g(disk, 'copy_row_bytes'):,} B",
                num(g(row, "recall@10")),
                ms(g(row, "median_ms")),
                ms(g(row, "p95_ms")),
            )
        )
    return table(
        ["rescoring copy", "copy on disk per vector (dbstat)", "row payload", "recall@10", "p50", "p95"], out
    ) + (f"\nThe whole file with the int16 copy: {file_b:,.0f} B per vector (dbstat).\n")


def runtimes_table() -> str:
    """Images/s per inference runtime, benchmarks/results/runtimes.json."""
    out = []
    for case in need(results("runtimes"), "cases", source="runtimes"):
        backbone = need(case, "backbone", source="runtimes")
        weights = need(case, "weights", source="runtimes")
        model = f"{backbone} ({'random' if weights == 'none' else weights} weights)"
        for name, row in need(case, "runtimes", source="runtimes").items():
            if "error" in row:
                out.append((model, name, "", row["error"], "", ""))
                continue
            g = functools.partial(_need2, row, source="runtimes")
            out.append(
                (
                    model,
                    name,
                    g("batch"),
                    f"{g('images_per_s'):.1f}",
                    f"{g('vs_keras'):.2f}x",
                    f"{g('max_abs_diff'):.1e}",
                )
            )
    return table(["model", "runtime", "batch", "images/s", "vs Keras", "max abs diff vs Keras"], out)


# issue 27's goals for the dev collection (the whole command)
DEV_TARGETS = {"add_5_photos_s": 3, "noop_s": 1}


def incremental_table() -> str:
    """Incremental ingest, benchmarks/results/ingest.json: the dev DB before/after, and 100k against targets."""
    src = "ingest"
    dev = need(results(src), "incremental_dev", source=src)
    big = need(results(src), "incremental_100k", source=src)
    out = []
    for key, label in (
        ("add_5_photos_s", "dev DB (800 photos): add 5 photos"),
        ("noop_s", "dev DB: nothing changed"),
        ("noop_with_broken_file_s", "dev DB: nothing changed, one broken file"),
    ):
        row = need(dev, key, source=src)
        now, goal = need(row, "this", source=src), DEV_TARGETS.get(key)
        verdict = "" if goal is None else f"{goal} s: " + ("met" if now <= goal else "NOT met")
        out.append((label, f"{need(row, 'main', source=src)} s", f"{now} s", verdict))
    n = need(big, "n", source=src)
    whole, noop = need(big, "whole_s", source=src), need(big, "noop_s", source=src)
    added = need(big, "added", source=src)
    out.append((f"{count(n)} images: add {added}", "", f"{whole} s", "5 s: " + ("met" if whole <= 5 else "NOT met")))
    out.append((f"{count(n)} images: nothing changed", "", f"{noop} s", "1 s: " + ("met" if noop <= 1 else "NOT met")))
    return table(["whole CLI command", "before", "this version", "target"], out)


def load_table() -> str:
    """Search-page throughput, benchmarks/results/load.json: this version beside the baseline, same run."""
    data = results("load")
    base = {need(r, "clients", source="load"): r for r in need(data, "baseline", source="load")}
    out = []
    for cur in need(data, "current", source="load"):
        clients = need(cur, "clients", source="load")
        old = base.get(clients)
        g = functools.partial(_need2, source="load")
        out.append(
            (
                clients,
                f"{g(cur, 'req_per_s')} / {g(old, 'req_per_s')}" if old else f"{g(cur, 'req_per_s')} / not run",
                f"{ms(g(cur, 'p50_ms'))} / {ms(g(old, 'p50_ms'))}" if old else f"{ms(g(cur, 'p50_ms'))} / not run",
                f"{g(cur, 'errors')}",
            )
        )
    what = need(data, "what", source="load")
    header = ["clients", "req/s (this / baseline)", "p50 (this / baseline)", "errors"]
    return table(header, out) + f"\n{what[0].upper()}{what[1:]}.\n"


def _need2(row: Any, key: str, source: str) -> Any:
    return need(row, key, source=source)


def _numpy_name(rows: dict[str, Any]) -> str:
    return next(n for n in rows if n.startswith("numpy brute force"))


def served_1m() -> str:
    """The 1M x 4096 served figures as a sentence."""
    case = need(results("query_1M_4096"), "cases", 0, source="query_1M_4096")
    row = need(case, "rows", "served: fresh process (codes)", source="query_1M_4096")
    g = functools.partial(need, row, source="query_1M_4096")
    return (
        f"In a fresh process that only opens the 1M x 4096 file and answers queries: p50 {ms(g('median_ms'))}, "
        f"p95 {ms(g('p95_ms'))}, recall@10 {g('recall@10')}, serving RSS {g('serve_rss_gib'):.2f} GiB, first "
        f"answer {g('first_query_s'):.1f} s after the interpreter starts.\n"
    )


def ingest_table() -> str:
    """Small photos against 12 MP phone photos, benchmarks/ingest.py."""
    data = results("ingest")
    small, big = need(data, "small", source="ingest"), need(data, "12mp", source="ingest")
    g = functools.partial(_need2, source="ingest")
    rows = [
        ("mean file size", f"{g(small, 'mean_file_kb'):.0f} KB", f"{g(big, 'mean_file_kb'):.0f} KB"),
        ("decoded at", "x".join(map(str, g(small, "decoded_size"))), "x".join(map(str, g(big, "decoded_size")))),
        (
            "prepare one photo (read, hash, decode, thumbnail, display copy, model input)",
            f"{g(small, 'prepare_ms_per_img')} ms",
            f"{g(big, 'prepare_ms_per_img')} ms",
        ),
        ("full decode alone", f"{g(small, 'full_decode_ms_per_img')} ms", f"{g(big, 'full_decode_ms_per_img')} ms"),
        ("bare model, ms/img", g(small, "model_ms_per_img"), g(big, "model_ms_per_img")),
        ("pipeline / bare model", g(small, "pipeline_over_model"), g(big, "pipeline_over_model")),
        ("whole `ingest` command", f"{g(small, 'whole_command_s')} s", f"{g(big, 'whole_command_s')} s"),
        ("CPU of the whole ingest", f"{g(small, 'whole_ingest_cpu_s')} s", f"{g(big, 'whole_ingest_cpu_s')} s"),
        (
            "`ingest --ray`, local cluster, whole command",
            f"{g(small, 'whole_command_ray_local_s')} s",
            f"{g(big, 'whole_command_ray_local_s')} s",
        ),
        (
            "writer alone, rows/s",
            need(data, "writer_rows_s", "small", source="ingest"),
            need(data, "writer_rows_s", "12mp", source="ingest"),
        ),
    ]
    return table(["", f"{g(small, 'images')} small photos", f"{g(big, 'images')} 12 MP photos"], rows)


def new_image_query() -> str:
    q = need(results("ingest"), "new_image_query", source="ingest")
    g = functools.partial(need, q, source="ingest")
    return (
        f"`similar photos.db new.jpg` (EfficientNet-Lite0, numpy twin): the whole command cold "
        f"{g('cold_command_s')} s (max {g('cold_command_max_s')} s); in a process, the first query "
        f"{g('first_query_in_process_s')} s, then {g('warm_query_s')} s.\n"
    )


def train_table() -> str:
    """Fit and projection times of the methods ``train --method`` still offers (and auto)."""
    from semsearch_sqlite.model.methods import METHODS

    offered = {*METHODS, "auto"}
    data = results("train")
    rows = [
        (
            need(r, "method", source="train"),
            f"{need(r, 'fit_s', source='train')} s",
            f"{need(r, 'project_s', source='train') * 1000:.1f} ms",
            need(r, "rows", source="train"),
        )
        for r in data
        if need(r, "method", source="train") in offered
    ]
    return table(["method", "fit", "project the rows", "rows"], rows)


def duplicates_table() -> str:
    data = results("duplicates")
    default = need(data, "default_threshold", source="duplicates")
    rows = []
    for r in need(data, "rows", source="duplicates"):
        g = functools.partial(need, r, source="duplicates")
        row = [g("threshold"), num(g("precision")), num(g("recall")), num(g("f1")), f"{g('seconds')} s"]
        rows.append([f"**{c}**" for c in row] if g("threshold") == default else row)
    return table(["threshold", "precision", "recall", "F1", "time"], rows)


def duplicates_setup() -> str:
    d = results("duplicates")
    g = functools.partial(need, d, source="duplicates")
    by_kind = ", ".join(f"{kind} {v:.2f}" for kind, v in g("recall_by_copy_kind_at_default").items())
    return (
        f"{g('images')} images: dev photos plus {g('copies')} copies of {g('originals')} of them "
        f"({g('true_pairs')} true pairs), {g('backbone')} visual space. At the default threshold "
        f"({g('default_threshold')}) recall by kind of copy: {by_kind}.\n"
    )


def feedback_table() -> str:
    d = results("feedback")
    g = functools.partial(need, d, source="feedback")
    zero_shot = f"label as text, zero-shot ({len(g('zero_shot_labels'))} labels held out, {g('zero_shot_method')})"
    rows = []
    for label, key in [
        ("label as text (default model)", "text"),
        (zero_shot, "zero-shot text"),
        ("an image of the label (visual space)", "image"),
    ]:
        before, after = g(f"{key}_none_p_at_10"), g(f"{key}_feedback_p_at_10")
        rows.append((label, num(before), num(after), f"{after - before:+.3f}"))
    return table(["query", "no feedback", "one round, 2+ / 2-", "gain"], rows)


def sqlfuncs_table() -> str:
    d = results("sqlfuncs")
    g = functools.partial(need, d, source="sqlfuncs")
    return (
        table(
            ["call", "k = 10", "k = 4096"],
            [
                ("`image_tags`", f"{g('image_tags_k10_ms'):.3f} ms", f"{g('image_tags_k4096_ms'):.1f} ms"),
                ("`similar_words`", f"{g('similar_words_k10_ms'):.1f} ms", f"{g('similar_words_k4096_ms'):.1f} ms"),
            ],
        )
        + f"\nOne check for Datasette's time limit between steps costs {g('interruption_point_us'):.0f} µs.\n"
    )


# -- Python types -------------------------------------------------------------------------
def fields(dotted: str) -> str:
    """A dataclass's fields as a table: name, type, default."""
    import dataclasses
    import importlib

    module, _, name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = ""
        rows.append((f"`{f.name}`", f"`{f.type}`", default))
    return table(["field", "type", "default"], rows)


def error_classes() -> str:
    """Every SemsearchError subclass with the first line of its docstring."""
    from semsearch_sqlite import errors

    rows = []
    for name, cls in vars(errors).items():
        if isinstance(cls, type) and issubclass(cls, errors.SemsearchError):
            parent = cls.__mro__[1].__name__ if cls is not errors.SemsearchError else "Exception"
            rows.append(
                (f"`{name}`", f"`{parent}`", markdown(inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " "))
            )
    return table(["error", "subclass of", "raised when"], rows)


def constants(names: Sequence[tuple[str, str]]) -> str:
    """A table of module constants (``package.module.NAME``, what it sets) with their values now."""
    import importlib

    rows = []
    for dotted, what in names:
        module, _, name = dotted.rpartition(".")
        try:
            value = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise MissingFigure(f"{dotted} no longer exists: update the constants block that names it") from None
        rows.append((f"`{name}`", repr(value), what, f"`{module.removeprefix('semsearch_sqlite.')}`"))
    return table(["constant", "value", "sets", "module"], rows)


def machine() -> str:
    """The machine the query benchmark ran on, as a sentence."""
    m = need(results("query"), "machine", source="query")
    g = functools.partial(need, m, source="query")
    return (
        f"Measured on {g('cpus')} CPU cores, no GPU (numpy {g('numpy')}, "
        f"SQLite {g('sqlite')}), often beside other jobs: compare rows of one table, "
        f"not runs on other machines.\n"
    )


def headline() -> str:
    """The default model's search quality in one sentence, for the README."""
    d = results("semantic")
    s = need(d, "summary", need(d, "default", source="semantic"), source="semantic")
    g = functools.partial(need, s, source="semantic")
    lab = functools.partial(need, _labelled("summary"), "joint, label relations", source="semantic")
    return (
        f"On {need(d, 'images', source='semantic'):,} Caltech-101 photos, a label's name finds its unlabelled "
        f"photos with P@10 {g('seen_p_at_10'):.2f}, and the name of a kind that had no labelled photos at all "
        f"with P@10 {g('zero_shot_p_at_10'):.2f} ([benchmarks](docs/benchmarks.md#search-quality)). "
        f"On a collection whose photos are all labelled, {lab('strong_precision') * 100:.0f}% of strong hits "
        f"are right, a word for something it lacks gets no strong hit in {lab('absent_honesty') * 100:.0f}% "
        f"of queries, and a word for a kind or an associated thing finds related labels with P@10 "
        f"{lab('related_p_at_10'):.2f} ([labelled collection](docs/benchmarks.md#a-labelled-collection)).\n"
    )


# -- reliability figures ------------------------------------------------------------------
def reliability_figures() -> str:
    """Upload memory and the invalid-SQL flood, from their benchmarks' results files."""
    up = functools.partial(need, results("upload_memory"), source="upload_memory")
    fl = functools.partial(need, results("error_flood"), source="error_flood")
    return (
        f"- **Upload memory is bounded.** {up('uploads')} concurrent uploads of one large "
        f"image ({up('image')}) peak at {up('rss_peak_mb')} MB of server memory (from "
        f"{up('rss_before_mb')} MB) and return to {up('rss_after_mb')} MB afterwards "
        f"(`benchmarks/upload_memory.py`).\n"
        f"- **An error costs what a request costs.** While {fl('clients')} clients send invalid "
        f"SQL for {fl('seconds')} s ({fl('errors_answered'):,} errors answered), the search page's "
        f"median is {ms(fl('search_flooded_median_ms'))}, against {ms(fl('search_quiet_median_ms'))} "
        f"quiet (`benchmarks/error_flood.py`, Datasette 0.65).\n"
    )
