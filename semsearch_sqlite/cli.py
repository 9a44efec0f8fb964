"""The ``semsearch-sqlite`` command: thin click commands over the library."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from semsearch_sqlite import __version__
from semsearch_sqlite.errors import SemsearchError
from semsearch_sqlite.model.methods import METHODS, methods_help

TABLE_MAX_WIDTH = 60
IMAGE_COLUMNS = ["rank", "image_id", "path", "label", "distance", "match"]
WORD_COLUMNS = ["rank", "word", "distance"]


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``Error: ...`` and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SemsearchError as e:
            raise click.ClickException(str(e)) from e

    return wrapper


def echo_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print rows as an aligned text table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = f"{v:.4f}"
        s = "" if v is None else str(v)
        return s if len(s) <= TABLE_MAX_WIDTH else s[: TABLE_MAX_WIDTH - 1] + "…"

    grid = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(g[i]) for g in grid]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for g in grid:
        click.echo("  ".join(v.ljust(w) for v, w in zip(g, widths)).rstrip())


def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-k`` and ``--json`` for every query command."""
    fn = click.option("--json", "as_json", is_flag=True, help="Output JSON")(fn)
    fn = click.option("-k", "k", type=click.IntRange(1, 4096), default=10, show_default=True, help="How many results")(fn)
    return fn


def where_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--where`` for the query commands that return images."""
    return click.option(
        "--where", help="Only images matching this SQL condition over images columns, "
        "e.g. \"label = 'dog'\" or \"taken_at >= '2020'\" (read-only)")(fn)


def feedback_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--like`` / ``--unlike`` (relevance feedback) for the searches that take it."""
    fn = click.option("--unlike", help="Less like these image ids, e.g. 40,41 (left out of the results)")(fn)
    fn = click.option("--like", help="More like these image ids, e.g. 12,15")(fn)
    return fn


def emit(results: Any, columns: Sequence[str], as_json: bool) -> None:
    """Print query results as JSON or as a table (with notes on stderr)."""
    if as_json:
        click.echo(json.dumps(results.as_dict(), indent=2))
        return
    if results.unknown:
        click.echo(f"Warning: unknown words ignored: {', '.join(results.unknown)}", err=True)
    if results.note:
        click.echo(results.note, err=True)
    echo_table([h.as_dict() for h in results.hits], columns)


def open_readonly(db: str) -> Any:
    from semsearch_sqlite.storage.store import Store

    # read commands never write: a shipped file may sit on read-only media
    return Store.open(db, readonly=True)


def open_collection(db: str) -> Any:
    from semsearch_sqlite.collection import Collection

    return Collection(open_readonly(db))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semsearch-sqlite")
def cli() -> None:
    """Semantic image search in one SQLite file.

    \b
    semsearch-sqlite ingest ./images photos.db --backbone efficientnet-lite0
    semsearch-sqlite search photos.db "cat sofa"
    datasette photos.db
    """


class _Bar:
    """tqdm progress for ingest: one bar per stage, problems printed above it."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar: Any = None

    def stage(self, name: str, total: int | None) -> None:
        self.close()
        if self.quiet:
            return
        if total is None:
            click.echo(f"{name}...", err=True)
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=name, unit="img", file=sys.stderr, dynamic_ncols=True)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def problem(self, path: str, reason: str) -> None:
        # --quiet silences progress, never a skipped file
        message = f"Skipped {path}: {reason}"
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            click.echo(message, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@cli.command()
@click.argument("images", type=click.Path(file_okay=False, path_type=Path))
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backbone", help="vgg16 (default), efficientnet-lite0 (offline), or a .keras/.h5/.tflite file")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file for the backbone (e.g. VGG16 .h5)")
@click.option("--layer", help="Feature layer/tensor name of a model file")
@click.option("--glove", type=click.Path(exists=True, dir_okay=False), help="GloVe .txt or .zip (default: bundled glove.6B.50d)")
@click.option("--vocab-size", type=click.IntRange(100), help="Keep the N most frequent words [default: 50000]")
@click.option("--vocab-file", type=click.Path(exists=True, dir_okay=False), help="Extra words to keep, one per line")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False), help="CSV of path,label instead of folder names")
@click.option("--method", type=click.Choice(METHODS), help=methods_help())
@click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--originals", is_flag=True, help="Store the original file bytes instead of a 1024px display copy")
@click.option("--no-prune", is_flag=True, help="Keep rows of files that are gone")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image")
@click.option("--rebuild", is_flag=True, help="Re-embed every image (e.g. with another backbone)")
@click.option("--max-pixels", type=click.IntRange(1), help="Refuse images larger than this many pixels")
@click.option("--follow-links", is_flag=True, help="Also follow symlinks that lead outside IMAGES (each folder is still read once)")
@click.option("--ray", "use_ray", is_flag=True,
              help="Decode and embed on a Ray cluster (RAY_ADDRESS, else a local one); needs semsearch-sqlite[ray]")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (skipped files and failures are still reported)")
@handle_errors
def ingest(images: Path, db: Path, backbone: str | None, weights: str | None, layer: str | None,
           glove: str | None, vocab_size: int | None, vocab_file: str | None, labels_file: str | None,
           method: str | None, batch_size: int, originals: bool, no_prune: bool, strict: bool, rebuild: bool,
           max_pixels: int | None, follow_links: bool, use_ray: bool, quiet: bool) -> None:
    """Embed a folder of images (folder name = label) into DB.

    Re-running it adds new files, re-embeds changed ones, recognises moved ones
    and removes rows of deleted ones.

    \b
    semsearch-sqlite ingest ./images photos.db --backbone efficientnet-lite0
    RAY_ADDRESS=auto semsearch-sqlite ingest ./images photos.db --ray
    """
    from semsearch_sqlite.pipeline.ingest import IngestOptions
    from semsearch_sqlite.pipeline.ingest import ingest as run_ingest

    options = IngestOptions(
        backbone=backbone, weights=weights, layer=layer, glove=glove, vocab_size=vocab_size,
        vocab_file=vocab_file, labels_file=labels_file, method=method, batch_size=batch_size,
        originals=originals, prune=not no_prune, strict=strict, rebuild=rebuild, follow_links=follow_links, ray=use_ray,
    )
    if max_pixels:
        options.max_pixels = max_pixels
    bar = _Bar(quiet)
    try:
        stats = run_ingest(images, db, options, bar)
    except KeyboardInterrupt:
        bar.close()
        click.echo(f"Interrupted: every finished batch is stored in {db}; run the same command again to resume.", err=True)
        sys.exit(130)
    finally:
        bar.close()
    if not quiet or stats.failed or stats.problems:
        click.echo(stats.summary(), err=True)
    if not quiet:
        if stats.semantic:
            click.echo(_semantic_line(stats.semantic), err=True)


def _semantic_line(report: dict[str, Any]) -> str:
    """One line on the fitted word-space model: method, data, train/validation cosine."""
    fit = {**report, **(report.get("projection_report") or {})}
    parts = [f"word space: {report.get('method')}"]
    for key, name in (("labelled", "labelled images"), ("label_count", "labels"), ("train_cosine", "train cosine"),
                      ("val_cosine", "validation cosine"),
                      ("train_accuracy", "train accuracy"), ("match_strong_distance", "strong-match distance"),
                      ("seconds", "seconds")):
        value = fit.get(key)
        if value is not None:
            parts.append(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}")
    if report.get("skipped_labels"):
        parts.append(f"labels with no known word (left out): {', '.join(report['skipped_labels'])}")
    return ", ".join(parts)


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--glove", type=click.Path(exists=True, dir_okay=False), help="GloVe .txt or .zip (default: bundled glove.6B.50d)")
@click.option("--vocab-size", type=click.IntRange(100), help="Keep the N most frequent words [default: 50000]")
@click.option("--vocab-file", type=click.Path(exists=True, dir_okay=False), help="Extra words to keep, one per line")
@click.option("--rebuild", is_flag=True, help="Allow a word space of other dimensions (refits every image)")
@click.option("-q", "--quiet", is_flag=True)
@handle_errors
def vocab(db: Path, glove: str | None, vocab_size: int | None, vocab_file: str | None, rebuild: bool, quiet: bool) -> None:
    """Store word vectors in DB (created if missing), so it answers word queries.

    \b
    semsearch-sqlite vocab words.db --vocab-size 100000
    semsearch-sqlite words words.db ocean
    """
    from semsearch_sqlite.pipeline.train import refresh_semantic, refresh_vocabulary
    from semsearch_sqlite.storage.vectors import VEC_VISUAL
    from semsearch_sqlite.storage.store import writing
    from semsearch_sqlite.text.glove import bundled_data_dir, read_vocab_file

    extra = read_vocab_file(vocab_file) if vocab_file else []
    if glove is None and not db.exists():
        bundled_data_dir()  # without the [ingest] extra there are no bundled vectors: say so before making DB
    with writing(db) as store:
        changed = refresh_vocabulary(store, glove, vocab_size, extra, rebuild=rebuild)
        if changed and store.vec_dim(VEC_VISUAL):
            refresh_semantic(store)
        count, source = store.get_meta("words_count"), store.get_meta("words_source")
    if not quiet:
        click.echo(f"{count} words from {source}" + ("" if changed else " (unchanged)"), err=True)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--method", type=click.Choice(METHODS), help=methods_help())
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False), help="CSV of path,label to train on")
@click.option("--epochs", type=click.IntRange(1), help="Epochs for mlp")
@click.option("--tags", "n_tags", type=click.IntRange(0, 100), default=10, show_default=True, help="Tags stored per image")
@click.option("-q", "--quiet", is_flag=True)
@handle_errors
def train(db: str, method: str | None, labels_file: str | None, epochs: int | None, n_tags: int, quiet: bool) -> None:
    """Refit the word-space model from the stored features, re-project and re-tag."""
    from semsearch_sqlite.media.files import read_labels_csv
    from semsearch_sqlite.pipeline.train import refresh_semantic
    from semsearch_sqlite.storage.store import writing

    labels = read_labels_csv(labels_file) if labels_file else None
    with writing(db) as store:
        report = refresh_semantic(store, method=method, tags=n_tags, labels=labels, epochs=epochs)
    if not quiet:
        click.echo(_semantic_line(report), err=True)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("query")
@output_options
@where_option
@feedback_options
@handle_errors
def search(db: str, query: str, k: int, as_json: bool, where: str | None, like: str | None,
           unlike: str | None) -> None:
    """Text -> images: images nearest to QUERY ("cat sofa", "2:cat -dog")."""
    with open_collection(db) as photos:
        emit(photos.search(query, k, allow_unknown=True, where=where, like=like, unlike=unlike), IMAGE_COLUMNS,
             as_json)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("image")
@click.option("--space", type=click.Choice(["visual", "semantic"]), default="visual", show_default=True)
@output_options
@where_option
@feedback_options
@handle_errors
def similar(db: str, image: str, space: str, k: int, as_json: bool, where: str | None, like: str | None,
            unlike: str | None) -> None:
    """Image -> images: IMAGE is a stored id or path, or a new image file."""
    with open_collection(db) as photos:
        emit(photos.similar(image, k, space, where=where, like=like, unlike=unlike), IMAGE_COLUMNS, as_json)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("image")
@output_options
@handle_errors
def tags(db: str, image: str, k: int, as_json: bool) -> None:
    """Image -> words: the tags of IMAGE (a stored id or path, or a new image file).

    Its most probable classes come first, then its nearest vocabulary words."""
    with open_collection(db) as photos:
        emit(photos.tags(image, k), WORD_COLUMNS, as_json)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("query")
@output_options
@handle_errors
def words(db: str, query: str, k: int, as_json: bool) -> None:
    """Word -> words: vocabulary words nearest to QUERY (e.g. said -> told, asked)."""
    with open_collection(db) as photos:
        emit(photos.words(query, k, allow_unknown=True), WORD_COLUMNS, as_json)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("image")
@click.argument("word")
@output_options
@where_option
@handle_errors
def focus(db: str, image: str, word: str, k: int, as_json: bool, where: str | None) -> None:
    """Images similar to IMAGE with respect to WORD's ImageNet class."""
    with open_collection(db) as photos:
        emit(photos.focus(image, word, k, where=where), IMAGE_COLUMNS, as_json)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True),
              help="Cosine distance in the visual space below which photos are duplicates "
              "[default: 0.12; lower finds only bursts and exact copies]")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
@handle_errors
def duplicates(db: str, threshold: float | None, as_json: bool) -> None:
    """Groups of near-identical photos (resized, recompressed or lightly cropped copies)."""
    from semsearch_sqlite.queries.duplicates import groups_as_json

    with open_collection(db) as photos:
        results = photos.duplicates(threshold)
        if as_json:
            click.echo(json.dumps(groups_as_json(results), indent=2))
            return
        click.echo(results.note, err=True)
        echo_table([h.as_dict() for h in results.hits], ["group", "image_id", "path", "label", "distance"])


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def info(db: str, as_json: bool) -> None:
    """What DB holds: counts, dimensions, sources, sizes."""
    from semsearch_sqlite.queries.info import describe

    with open_readonly(db) as store:
        data = describe(store)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k2, v2 in value.items():
                click.echo(f"  {k2}: {v2}")
        else:
            click.echo(f"{key}: {value}")


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--zero-shot", type=click.FloatRange(0, 0.9), default=0.25, show_default=True,
              help="Share of classes held out of training and queried by name")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--method", "methods", multiple=True, help="Word-space methods to compare [default: auto, conse]")
@click.option("--no-save", is_flag=True, help="Don't record the figures in the evaluations table")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def evaluate(db: str, zero_shot: float, seed: int, methods: tuple[str, ...], no_save: bool, as_json: bool) -> None:
    """Measure search quality with the folder labels as ground truth.

    Image->image P@10 (visual, semantic), text->image P@10 and AP per label word,
    tag accuracy, and a zero-shot refit, for the default model, ConSE and chance.
    """
    from semsearch_sqlite.pipeline.evaluate import evaluate as run_evaluate
    from semsearch_sqlite.pipeline.evaluate import summary_rows
    from semsearch_sqlite.storage.store import Store, writing

    with (Store.open(db, readonly=True) if no_save else writing(db)) as store:
        figures = run_evaluate(store, zero_shot=zero_shot, seed=seed, methods=methods or ("auto", "conse"), save=not no_save)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    def avg(d: dict[str, float] | None) -> str:
        return "-" if not d else f"{sum(d.values()) / len(d):.3f}"
    click.echo(f"{figures['images']} labelled images, {figures['classes']} classes")
    click.echo(f"image->image P@10: visual {avg(figures['visual_p_at_10'])}, semantic {avg(figures.get('semantic_p_at_10'))}")
    if "text" in figures:
        text = figures["text"]
        click.echo(f"text->image (stored model): P@10 {avg({c: v['p_at_10'] for c, v in text.items()})}, "
                   f"AP {avg({c: v['ap'] for c, v in text.items()})}; tag@5 {figures['tag_at_5']:.3f}")
    zs = figures["zero_shot"]
    click.echo(f"zero-shot: held out {', '.join(zs['held_out']) or 'nothing'} (seed {zs['seed']})")
    echo_table(summary_rows(figures), list(summary_rows(figures)[0]))


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("sql")
@click.option("-p", "--param", "params", type=(str, str), multiple=True, help="Named parameter, e.g. -p q 'cat sofa'")
@click.option("--json", "as_json", is_flag=True)
@click.option("--write", is_flag=True, help="Allow SQL that changes DB (it is opened read-only by default)")
@handle_errors
def sql(db: str, sql: str, params: tuple[tuple[str, str], ...], as_json: bool, write: bool) -> None:
    """Run SQL with the semsearch functions, e.g. select * from similar_images('cat').

    DB is opened read-only, as Datasette does; --write allows changes.
    """
    import sqlite3

    from semsearch_sqlite.queries.sqlfuncs import register_functions
    from semsearch_sqlite.storage.store import Store

    with Store.open(db, readonly=not write) as store:
        register_functions(store.conn)
        try:
            cur = store.conn.execute(sql, dict(params))
        except sqlite3.Error as e:
            message = str(e)
            if not write and "readonly" in message:
                message += f"; {db} is opened read-only: add --write to change it"
            raise click.ClickException(message) from e
        columns = [d[0] for d in cur.description or []]
        rows = [dict(zip(columns, r)) for r in cur.fetchall()]
    for r in rows:
        for c, v in r.items():
            if isinstance(v, bytes):
                r[c] = f"<{len(v)} bytes>"
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        echo_table(rows, columns)


def main() -> None:  # pragma: no cover - console entry point
    cli()
