"""The ``semsearch-sqlite`` command: thin click commands over the library."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from semsearch_sqlite import __version__
from semsearch_sqlite.errors import SemsearchError
from semsearch_sqlite.model.methods import METHODS, methods_help

TABLE_MAX_WIDTH = 60
DUPLICATE_COLUMNS = ["group", "image_id", "path", "label", "distance", "size", "resolution", "date"]
IMAGE_COLUMNS = ["rank", "image_id", "path", "label", "distance", "match"]
WORD_COLUMNS = ["rank", "word", "distance"]
# C0/C1 controls, DEL, and the bidi overrides/isolates that reorder what a terminal shows
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: Any) -> str:
    """``text`` safe for a terminal: each control character (ESC sequences, BEL, bidi
    overrides...) that came from a file or the database becomes ``?``."""
    return _CONTROL.sub("?", str(text))


def echo(text: Any, err: bool = False) -> None:
    """``click.echo`` of one line after :func:`clean`."""
    click.echo(clean(text), err=err)


# a text search shows how sure each hit is, not its distance
SEARCH_COLUMNS = ["rank", "image_id", "path", "label", "match", "score"]
TAG_COLUMNS = ["rank", "word", "confidence"]


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``Error: ...`` and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SemsearchError as e:
            raise click.ClickException(clean(e)) from e

    return wrapper


def echo_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print rows as an aligned text table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = f"{v:.4f}"
        s = "" if v is None else clean(v)
        return s if len(s) <= TABLE_MAX_WIDTH else s[: TABLE_MAX_WIDTH - 1] + "…"

    grid = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(g[i]) for g in grid]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for g in grid:
        click.echo("  ".join(v.ljust(w) for v, w in zip(g, widths)).rstrip())


# ctx.meta keys: --csv was given; the collection a command opened (for its ingest root)
CSV_FLAG = "semsearch.csv"
OPEN_COLLECTION = "semsearch.collection"


def _remember_csv(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta[CSV_FLAG] = bool(value)


def csv_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--csv`` for a query command; :func:`emit` reads it from the context, so the
    commands' own arguments stay as they are."""
    return click.option(
        "--csv",
        "as_csv",
        is_flag=True,
        expose_value=False,
        callback=_remember_csv,
        help="Output CSV: a header row (with path, and abs_path when the ingested folder is known), then every result",
    )(fn)


def csv_requested() -> bool:
    """Whether the running command was given ``--csv``."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(CSV_FLAG))


def echo_csv(results: Any, columns: Sequence[str], as_json: bool) -> None:
    """Print every hit of ``results`` as CSV (see :mod:`semsearch_sqlite.queries.export`)."""
    from semsearch_sqlite.queries.export import columns_of, csv_text, images_root

    if as_json:
        raise click.UsageError("--csv and --json can't be combined; give one of them")
    ctx = click.get_current_context()
    photos = ctx.meta.get(OPEN_COLLECTION)
    conn = photos.conn if photos is not None else None
    root = images_root(conn) if conn is not None else None
    records = results.as_records(root, conn)
    default = list(columns) + (["abs_path"] if root and "path" in columns else [])
    click.echo(csv_text(records, columns_of(records, default)), nl=False)


def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-k``, ``--json`` and ``--csv`` for every query command."""
    fn = csv_option(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Output JSON")(fn)
    fn = click.option(
        "-k",
        "k",
        default="10",
        show_default=True,
        callback=_result_count,
        help="How many results (from 1; more than 4096 gives 4096)",
    )(fn)
    return fn


def _result_count(ctx: click.Context, param: click.Parameter, value: Any) -> int:
    """``-k`` by the rule every face follows (:func:`~semsearch_sqlite.queries.limits.result_count`)."""
    from semsearch_sqlite.errors import QueryError
    from semsearch_sqlite.queries.limits import result_count

    try:
        return result_count(value)
    except QueryError as e:
        raise click.BadParameter(str(e)) from None


def unknown_warning(results: Any) -> str:
    """The warning line for a query's ignored words, with the known words spelt like them."""
    line = f"Warning: unknown words ignored: {', '.join(results.unknown)}"
    near = {w: n[:3] for w, n in (getattr(results, "suggestions", None) or {}).items() if n}
    if near:
        line += " (did you mean " + "; ".join(", ".join(n) for n in near.values()) + "?)"
    return line


def where_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--where`` for the query commands that return images."""
    return click.option(
        "--where",
        help="Only images matching this SQL condition over images columns, "
        "e.g. \"label = 'dog'\" or \"taken_at >= '2020'\" (read-only)",
    )(fn)


def feedback_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--like`` / ``--unlike`` (relevance feedback) for the searches that take it."""
    fn = click.option("--unlike", help="Less like these image ids, e.g. 40,41 (left out of the results)")(fn)
    fn = click.option("--like", help="More like these image ids, e.g. 12,15")(fn)
    return fn


def emit(results: Any, columns: Sequence[str], as_json: bool) -> None:
    """Print query results as JSON, CSV (``--csv``) or a table (with notes on stderr)."""
    if csv_requested():
        if results.unknown:
            echo(unknown_warning(results), err=True)
        echo_csv(results, columns, as_json)
        return
    if as_json:
        click.echo(json.dumps(results.as_dict(), indent=2))
        return
    if results.unknown:
        echo(unknown_warning(results), err=True)
    if results.note:
        echo(results.note, err=True)
    echo_table([h.as_dict() for h in results.hits], columns)


def duplicate_row(hit: dict[str, Any]) -> dict[str, Any]:
    """A duplicates table row: the keeper says so instead of a distance of 0; sizes in KB."""
    from semsearch_sqlite.queries.duplicates import human_size

    row = dict(hit)
    row["distance"] = "keeper" if hit.get("keeper") else f"{hit['distance']:.4f}"
    row["size"] = human_size(hit["size"]) if hit.get("size") is not None else ""
    row["resolution"] = f"{hit['width']}x{hit['height']}" if hit.get("width") else ""
    row["date"] = (hit.get("date") or "")[:10]
    return row


def open_readonly(db: str) -> Any:
    from semsearch_sqlite.storage.store import Store

    # read commands never write: a shipped file may sit on read-only media
    return Store.open(db, readonly=True)


def open_collection(db: str) -> Any:
    from semsearch_sqlite.collection import Collection

    photos = Collection(open_readonly(db))
    ctx = click.get_current_context(silent=True)
    if ctx is not None:  # --csv output reads the ingest root through it
        ctx.meta[OPEN_COLLECTION] = photos
    return photos


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
        message = clean(f"Skipped {path}: {reason}")
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
@click.option(
    "--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file for the backbone (e.g. VGG16 .h5)"
)
@click.option("--layer", help="Feature layer/tensor name of a model file")
@click.option(
    "--glove", type=click.Path(exists=True, dir_okay=False), help="GloVe .txt or .zip (default: bundled glove.6B.50d)"
)
@click.option("--vocab-size", type=click.IntRange(100), help="Keep the N most frequent words [default: 50000]")
@click.option("--vocab-file", type=click.Path(exists=True, dir_okay=False), help="Extra words to keep, one per line")
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV of path,label instead of folder names",
)
@click.option("--method", type=click.Choice(METHODS), help=methods_help())
@click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--originals", is_flag=True, help="Store the original file bytes instead of a 1024px display copy")
@click.option(
    "--prune",
    is_flag=True,
    help="Remove the rows of files gone from IMAGES even when they are many "
    "(without it, a run that would remove a large share of the collection keeps them and says so)",
)
@click.option("--no-prune", is_flag=True, help="Keep rows of files that are gone")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image")
@click.option("--rebuild", is_flag=True, help="Re-embed every image (e.g. with another backbone)")
@click.option("--max-pixels", type=click.IntRange(1), help="Refuse images larger than this many pixels")
@click.option(
    "--follow-links",
    is_flag=True,
    help="Also follow symlinks that lead outside IMAGES (each folder is still read once)",
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Decode and embed on a Ray cluster (RAY_ADDRESS, else a local one); needs semsearch-sqlite[ray]",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output (skipped files and failures are still reported)")
@handle_errors
def ingest(
    images: Path,
    db: Path,
    backbone: str | None,
    weights: str | None,
    layer: str | None,
    glove: str | None,
    vocab_size: int | None,
    vocab_file: str | None,
    labels_file: str | None,
    method: str | None,
    batch_size: int,
    originals: bool,
    prune: bool,
    no_prune: bool,
    strict: bool,
    rebuild: bool,
    max_pixels: int | None,
    follow_links: bool,
    use_ray: bool,
    quiet: bool,
) -> None:
    """Embed a folder of images (folder name = label) into DB.

    Re-running it adds new files, re-embeds changed ones, recognises moved ones
    and removes rows of deleted ones (each one listed). Another folder adds to the
    collection: only rows under the folder being ingested are ever removed.

    \b
    semsearch-sqlite ingest ./images photos.db --backbone efficientnet-lite0
    RAY_ADDRESS=auto semsearch-sqlite ingest ./images photos.db --ray
    """
    from semsearch_sqlite.pipeline.ingest import IngestOptions
    from semsearch_sqlite.pipeline.ingest import ingest as run_ingest

    options = IngestOptions(
        backbone=backbone,
        weights=weights,
        layer=layer,
        glove=glove,
        vocab_size=vocab_size,
        vocab_file=vocab_file,
        labels_file=labels_file,
        method=method,
        batch_size=batch_size,
        originals=originals,
        prune=False if no_prune else (True if prune else None),
        strict=strict,
        rebuild=rebuild,
        follow_links=follow_links,
        ray=use_ray,
    )
    if prune and no_prune:
        raise click.UsageError("give --prune or --no-prune, not both")
    if max_pixels:
        options.max_pixels = max_pixels
    bar = _Bar(quiet)
    try:
        stats = run_ingest(images, db, options, bar)
    except KeyboardInterrupt:
        bar.close()
        click.echo(
            f"Interrupted: every finished batch is stored in {db}; run the same command again to resume.", err=True
        )
        sys.exit(130)
    finally:
        bar.close()
    _report_ingest(stats, images, quiet)


def _report_ingest(stats: Any, images: Path, quiet: bool) -> None:
    """What an ingest did: removals and failures always, the summary unless ``quiet``; an
    error when it kept missing photos rather than remove a large share of the collection."""
    for path in stats.removed_paths:  # never silent, even with --quiet
        echo(f"Removed {path} (no longer in {images})", err=True)
    if not quiet or stats.failed or stats.problems or stats.removed:
        click.echo(stats.summary(), err=True)
    if not quiet and stats.semantic:
        click.echo(_semantic_line(stats.semantic), err=True)
    if stats.kept_missing:
        shown = ", ".join(stats.kept_missing[:5]) + (", ..." if len(stats.kept_missing) > 5 else "")
        raise click.ClickException(
            clean(
                f"{len(stats.kept_missing)} stored photos under {images} are missing from it ({shown}); they were "
                "kept, as that is a large share of the collection. To remove them run the same command with --prune; "
                "to keep them and silence this, --no-prune"
            )
        )


def _semantic_line(report: dict[str, Any]) -> str:
    """One line on the fitted word-space model: method, data, train/validation cosine."""
    fit = {**report, **(report.get("projection_report") or {})}
    parts = [f"word space: {report.get('method')}"]
    for key, name in (
        ("labelled", "labelled images"),
        ("label_count", "labels"),
        ("train_cosine", "train cosine"),
        ("val_cosine", "validation cosine"),
        ("train_accuracy", "train accuracy"),
        ("match_strong_distance", "strong-match distance"),
        ("seconds", "seconds"),
    ):
        value = fit.get(key)
        if value is not None:
            parts.append(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}")
    if report.get("skipped_labels"):
        parts.append(f"labels with no known word (left out): {', '.join(report['skipped_labels'])}")
    return ", ".join(parts)


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--glove", type=click.Path(exists=True, dir_okay=False), help="GloVe .txt or .zip (default: bundled glove.6B.50d)"
)
@click.option("--vocab-size", type=click.IntRange(100), help="Keep the N most frequent words [default: 50000]")
@click.option("--vocab-file", type=click.Path(exists=True, dir_okay=False), help="Extra words to keep, one per line")
@click.option("--rebuild", is_flag=True, help="Allow a word space of other dimensions (refits every image)")
@click.option("-q", "--quiet", is_flag=True)
@handle_errors
def vocab(
    db: Path, glove: str | None, vocab_size: int | None, vocab_file: str | None, rebuild: bool, quiet: bool
) -> None:
    """Store word vectors in DB (created if missing), so it answers word queries.

    \b
    semsearch-sqlite vocab words.db --vocab-size 100000
    semsearch-sqlite words words.db ocean
    """
    from semsearch_sqlite.pipeline.train import refresh_semantic, refresh_vocabulary
    from semsearch_sqlite.storage.store import writing
    from semsearch_sqlite.storage.vec0 import VEC_VISUAL
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
@click.option(
    "--labels", "labels_file", type=click.Path(exists=True, dir_okay=False), help="CSV of path,label to train on"
)
@click.option("--epochs", type=click.IntRange(1), help="Epochs for mlp")
@click.option(
    "--tags", "n_tags", type=click.IntRange(0, 100), default=10, show_default=True, help="Tags stored per image"
)
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
        if labels is None:  # fitted on the stored labels: the next ingest can add photos to it
            from semsearch_sqlite.pipeline.update import record_fit

            with store.atomic():
                record_fit(store)
    if not quiet:
        click.echo(_semantic_line(report), err=True)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("query")
@output_options
@where_option
@feedback_options
@click.option("--all", "show_all", is_flag=True, help="List the weaker matches too, after the strong ones.")
@handle_errors
def search(
    db: str, query: str, k: int, as_json: bool, where: str | None, like: str | None, unlike: str | None, show_all: bool
) -> None:
    """Text -> images: images nearest to QUERY ("cat sofa", "2:cat -dog").

    Prints how many strong matches there are and those; --all adds the weaker ones
    (--json always has every hit, with its match and score)."""
    with open_collection(db) as photos:
        results = photos.search(query, k, allow_unknown=True, where=where, like=like, unlike=unlike)
        if as_json or csv_requested():
            emit(results, IMAGE_COLUMNS, as_json)  # inside: CSV reads the collection's folder
            return
    if results.unknown:
        echo(unknown_warning(results), err=True)
    click.echo(strong_summary(results.strong or 0, len(results.hits), show_all), err=True)
    shown = results.hits if show_all else results.hits[: results.strong or 0]
    if shown:
        echo_table([{**h.as_dict(), "score": score_text(h.score)} for h in shown], SEARCH_COLUMNS)


def strong_summary(strong: int, hits: int, show_all: bool) -> str:
    """The line above a text search's table: how many strong matches, and what --all adds."""
    if strong == 0:
        head = "no close match"
    else:
        head = f"{strong}{'+' if strong == hits else ''} strong match{'es' if strong != 1 else ''}"
    if show_all or strong == hits:
        return head
    return f"{head} ({hits - strong} weaker: add --all to list them)"


def score_text(score: float | None) -> str:
    """A hit's score as a person reads it: ``87%``."""
    return "" if score is None else f"{round(100 * score)}%"


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("image")
@click.option("--space", type=click.Choice(["visual", "semantic"]), default="visual", show_default=True)
@output_options
@where_option
@feedback_options
@handle_errors
def similar(
    db: str, image: str, space: str, k: int, as_json: bool, where: str | None, like: str | None, unlike: str | None
) -> None:
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

    Its most probable classes come first, then the kinds WordNet says they are, each
    with its confidence."""
    with open_collection(db) as photos:
        emit(photos.tags(image, k), TAG_COLUMNS, as_json)


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
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    help="Cosine distance in the visual space below which photos are duplicates "
    "[default: 0.12; lower finds only bursts and exact copies]",
)
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
@csv_option
@handle_errors
def duplicates(db: str, threshold: float | None, as_json: bool) -> None:
    """Groups of near-identical photos (resized, recompressed or lightly cropped copies).

    Each group starts with the suggested keeper (most pixels, then largest file, then
    earliest date); the others follow by distance to it."""
    from semsearch_sqlite.queries.duplicates import groups_as_json

    with open_collection(db) as photos:
        results = photos.duplicates(threshold)
        if csv_requested():
            echo_csv(results, DUPLICATE_COLUMNS, as_json)
            return
        if as_json:
            click.echo(json.dumps(groups_as_json(results), indent=2))
            return
        echo(results.note)  # the summary first, on the same stream as the table it introduces
        echo_table([duplicate_row(h.as_dict()) for h in results.hits], DUPLICATE_COLUMNS)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def info(db: str, as_json: bool) -> None:
    """What DB holds: counts (photos with a date, with a place), dimensions, sources, sizes."""
    from semsearch_sqlite.queries.info import describe, human_lines

    with open_readonly(db) as store:
        data = describe(store)
    if as_json:  # for programs: sizes in bytes
        click.echo(json.dumps(data, indent=2))
        return
    for line in human_lines(data):
        echo(line)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--zero-shot",
    type=click.FloatRange(0, 0.9),
    default=0.25,
    show_default=True,
    help="Share of classes held out of training and queried by name",
)
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
    from semsearch_sqlite.queries.info import summary_rows
    from semsearch_sqlite.storage.store import Store, writing

    with Store.open(db, readonly=True) if no_save else writing(db) as store:
        figures = run_evaluate(
            store, zero_shot=zero_shot, seed=seed, methods=methods or ("auto", "conse"), save=not no_save
        )
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return

    def avg(d: dict[str, float] | None) -> str:
        return "-" if not d else f"{sum(d.values()) / len(d):.3f}"

    click.echo(f"{figures['images']} labelled images, {figures['classes']} classes")
    click.echo(
        f"image->image P@10: visual {avg(figures['visual_p_at_10'])}, semantic {avg(figures.get('semantic_p_at_10'))}"
    )
    if "text" in figures:
        text = figures["text"]
        click.echo(
            f"text->image (stored model): P@10 {avg({c: v['p_at_10'] for c, v in text.items()})}, "
            f"AP {avg({c: v['ap'] for c, v in text.items()})}; tag@5 {figures['tag_at_5']:.3f}"
        )
    zs = figures["zero_shot"]
    echo(f"zero-shot: held out {', '.join(zs['held_out']) or 'nothing'} (seed {zs['seed']})")
    echo_table(summary_rows(figures), list(summary_rows(figures)[0]))


# how SQLite refuses a write on a connection under storage.store.read_only_guard
_READ_ONLY_REFUSALS = ("readonly", "not authorized", "authorization denied", "too many attached")


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
    from semsearch_sqlite.storage.store import Store, read_only_guard

    with Store.open(db, readonly=not write) as store:
        register_functions(store.conn)
        if not write:
            read_only_guard(store.conn)
        try:
            cur = store.conn.execute(sql, dict(params))
            columns = [d[0] for d in cur.description or []]
            rows = [dict(zip(columns, r)) for r in cur.fetchall()]
        except sqlite3.Error as e:
            message = clean(e)
            if not write and any(m in message for m in _READ_ONLY_REFUSALS):
                message += f"; {db} is opened read-only: add --write to change it"
            raise click.ClickException(message) from e
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
