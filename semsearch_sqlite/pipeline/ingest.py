"""``ingest``: a folder of images -> one database file.

Per batch, in one transaction: the image rows, their display copy and thumbnail, their
backbone features and ImageNet class probabilities. A kill at any point loses at most
the batch in flight; the next run skips what is stored (path + size + mtime, then
sha256) and finishes the job. A file that failed is remembered (path, size, mtime,
error) and reported, not retried, until it changes. Once every image is embedded, the
new photos get semantic vectors and tags from the stored word-space model, smoothed over
their visual neighbours, and so do the photos whose neighbours changed
(``pipeline/update.py``); the model is refit, and every photo rewritten, only when labels
changed enough to matter. A few photos are embedded by the numpy EfficientNet-Lite0 (no
TensorFlow import); a run with nothing changed writes nothing.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semsearch_sqlite.extras import INGEST_MODULES, RELATED_MODULES, require_ingest

# Ingesting needs the [ingest] extra's Pillow, CNN and word relatedness model: a reader-only
# install says so here, with the fix, before anything (a new database file included) is made.
require_ingest("ingest", {**INGEST_MODULES, **RELATED_MODULES})

from semsearch_sqlite.errors import ImageError, StoreError  # noqa: E402
from semsearch_sqlite.media.files import (  # noqa: E402
    DEFAULT_MAX_PIXELS,
    OUTSIDE_LINK,
    discover_paths,
    label_for,
    normalise_label,
    read_labels_csv,
    sha256_file,
    stat_files,
)
from semsearch_sqlite.storage.models import CLASSIFIER_MODEL  # noqa: E402
from semsearch_sqlite.storage.rows import label_counts, stored_hashes  # noqa: E402
from semsearch_sqlite.storage.store import Store, encode_f32, now, writing  # noqa: E402
from semsearch_sqlite.storage.vec0 import VEC_SEMANTIC, VEC_VISUAL  # noqa: E402

if TYPE_CHECKING:
    from semsearch_sqlite.pipeline.prepare import Prepared, PrepareSpec

# Pillow (media.exif, pipeline.prepare) is imported where a file is read: a run with
# nothing to embed lists the folder and reads rows only

DEFAULT_BACKBONE = "vgg16"
DEFAULT_BATCH = 32
METADATA_BATCH = 500  # EXIF rows written per transaction when filling old rows
# meta key: files that failed, path -> [size, mtime, error]; reported, not retried, until they change
FAILED_META = "failed_files"
# at most this many photos to embed: the numpy EfficientNet-Lite0 (no TensorFlow import,
# ~0.15 s an image) instead of the Keras one (5-8 s to import and build, then ~30 ms an image)
SMALL_BATCH = 24


class Progress(Protocol):
    """What ingest reports while it runs (the CLI draws a bar from it)."""

    def stage(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...

    def problem(self, path: str, reason: str) -> None: ...


class NullProgress:
    """Reports nothing."""

    def stage(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def problem(self, path: str, reason: str) -> None:
        pass


@dataclass
class IngestOptions:
    """Settings of one ingest run (the CLI's options)."""

    backbone: str | None = None
    weights: str | None = None
    layer: str | None = None
    glove: str | None = None
    vocab_size: int | None = None
    vocab_file: str | None = None
    labels_file: str | None = None
    batch_size: int = DEFAULT_BATCH
    originals: bool = False
    # remove rows of files missing from the folder: None (default) unless that is a large
    # share of the collection (then kept and reported), True always (--prune), False never
    prune: bool | None = None
    strict: bool = False
    rebuild: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    tags: int = 10
    method: str | None = None
    workers: int = 2
    follow_links: bool = False  # follow symlinks that lead outside the folder too
    ray: bool = False  # decode + embed on a Ray cluster (RAY_ADDRESS, else a local one)


@dataclass
class IngestStats:
    """What a run did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    embedded: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    problems: list[tuple[str, str]] = field(default_factory=list)
    semantic: dict[str, Any] | None = None
    outside_links: list[str] = field(default_factory=list)  # left out, reported once each
    removed_paths: list[str] = field(default_factory=list)  # every row removed, by stored path
    kept_missing: list[str] = field(default_factory=list)  # missing files kept: too many to remove unasked

    @property
    def images_per_second(self) -> float:
        """Embedding speed (decode, CNN and writes; model loading excluded)."""
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: counts, time and speed."""
        return (
            f"{self.added} added, {self.updated} updated, {self.moved} moved, {self.unchanged} unchanged, "
            f"{self.removed} removed, {self.failed} failed in {self.seconds:.1f}s"
            f" ({self.images_per_second:.1f} images/s)"
        )


@dataclass
class _Item:
    path: Path
    rel: str
    label: str | None
    size: int
    mtime: float
    image_id: int | None = None  # existing row to replace
    sha256: str | None = None


# one embedded batch: its items, each one's Prepared (or why it failed), and the
# features/probabilities of the Prepared ones, in order
EmbeddedBatch = tuple[list[_Item], list["Prepared | str"], np.ndarray, np.ndarray | None]
# batches decoded ahead of the model, and embedded batches waiting for the writer
DECODE_AHEAD = 2
WRITE_BEHIND = 2


def ingest(
    images_dir: str | os.PathLike[str],
    db_path: str | os.PathLike[str],
    options: IngestOptions | None = None,
    progress: Progress | None = None,
) -> IngestStats:
    """Add, update and remove the images of ``images_dir`` in the database ``db_path``."""
    options = options or IngestOptions()
    progress = progress or NullProgress()
    root = Path(images_dir)
    if not root.is_dir():
        raise ImageError(str(root), "not a folder of images; give the folder that holds them")
    if options.ray:
        from semsearch_sqlite.pipeline.distributed import import_ray

        import_ray()  # before anything is written: one line naming the extra
    started = time.perf_counter()
    existed = Path(db_path).exists() and Path(db_path).stat().st_size > 0
    try:
        with writing(db_path) as store:
            stats = _Run(store, root, options, progress).run()
    except BaseException:
        if not existed:
            _remove_if_photoless(Path(db_path))
        raise
    stats.seconds = time.perf_counter() - started
    return stats


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector. Reading a 100k-photo folder makes ~1M objects
    (names, stat results, rows) and no cycles, and each collection on the way walks all
    that survived: ~0.05 s of a 1 s no-op run."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _remove_if_photoless(path: Path) -> None:
    """Delete a database this run created when it holds no photo (a first ingest that
    failed early would otherwise leave a file of vocabulary only)."""
    import sqlite3

    try:
        conn = sqlite3.connect(path)
        try:
            count = conn.execute("select count(*) from images").fetchone()[0]
        except sqlite3.OperationalError:
            count = 0  # no images table yet
        finally:
            conn.close()
    except sqlite3.Error:
        return
    if count == 0:
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
            name.unlink(missing_ok=True)


# a run that would remove more than this share of the collection (and at least
# PRUNE_ASK_MIN photos) keeps them and says so, unless pruning was asked for (--prune)
PRUNE_ASK_SHARE = 0.25
PRUNE_ASK_MIN = 5


class _Run:
    def __init__(self, store: Store, root: Path, options: IngestOptions, progress: Progress):
        self.store, self.options, self.progress = store, options, progress
        self.folder = root.resolve()
        self.root, self.scope, self.label_root = self.folder, "", self.folder
        self.stats = IngestStats()
        self._backbone: Any = None
        self._warm_error: Exception | None = None
        self._small = False  # few photos to embed: the numpy backbone, when there is one
        self._failures: dict[str, list[Any]] = {}  # this run's failed files
        self._fixed: set[str] = set()  # files stored this run (failed ones that now read)
        # what ``_plan`` read: rows whose file is gone (path -> (path, id, size, mtime,
        # label)) and the row count
        self._gone: dict[str, tuple[Any, ...]] = {}
        self._stored_count = 0

    def _place_folder(self) -> None:
        """Where the ingested folder sits in the collection: the collection's root (stored
        paths are relative to it) becomes the common parent of its folders, and the rows
        under this folder (``scope``) are the only ones this run may move or remove."""
        stored = self.store.get_meta("images_root")
        old = Path(stored) if stored else None
        if old is None or old == self.folder or not old.is_dir():
            return  # a new collection, the same folder, or the collection's folder moved here
        if self.folder.is_relative_to(old):
            self.root = self.label_root = old
            self.scope = self.folder.relative_to(old).as_posix()
            return
        common = Path(os.path.commonpath([old, self.folder]))
        moved_under = old.relative_to(common).as_posix()
        with self.store.atomic():
            # the stored paths move under the new, common root (one rename, ids unchanged)
            self.store.conn.execute("update images set path = ? || '/' || path", [moved_under])
            self.store.set_meta("images_root", str(common))
            self.store.bump_generation()
        self.root = common
        self.scope = "" if common == self.folder else self.folder.relative_to(common).as_posix()

    def _in_scope(self, path: str) -> bool:
        return not self.scope or path.startswith(self.scope + "/")

    # -- steps ---------------------------------------------------------------------------------
    def run(self) -> IngestStats:
        self._check_backbone()
        self._place_folder()
        self.progress.stage("reading the folder", None)
        with _collector_paused():
            rels, labels, todo = self._read_folder()
        # The CNN loads (and traces its graph) on another core while the vocabulary loads.
        warming = self._warm_up(todo) if todo else None
        try:
            self._ensure_words({lab for lab in labels if lab})
        finally:
            if warming is not None:
                warming.join()
        if todo:
            self._embed(todo)
        self._remember_failures(rels)
        changed = self._prune() or bool(todo) or self.stats.moved or self.stats.updated
        self._fill_metadata()
        wrote = self._refresh_semantics() if self.store.vec_dim(VEC_VISUAL) else False
        if self.store.get_meta("images_root") != str(self.root):
            with self.store.atomic():
                self.store.set_meta("images_root", str(self.root))
        if changed or wrote:
            from semsearch_sqlite.vectors.upkeep import refresh_indexes

            self.progress.stage("updating the search indexes", None)
            refresh_indexes(self.store)
        return self.stats

    def _read_folder(self) -> tuple[list[str], list[str | None], list[_Item]]:
        """The folder's files (paths relative to the root), their labels, and those to embed."""
        found = self._discover()
        under = os.path.join(str(self.root), "")
        # by string, once: pathlib's relative_to costs seconds at 100k files
        rels = [(p[len(under) :] if p.startswith(under) else self._rel(Path(p))) for p in found]
        if os.sep != "/":
            rels = [rel.replace(os.sep, "/") for rel in rels]
        labels = self._labels(found)
        return rels, labels, self._skip_known_failures(self._plan(found, rels, labels))

    def _refresh_semantics(self) -> bool:
        """Semantic vectors and tags for what changed: the stored model projects new photos
        and only they and their neighbours are re-smoothed (``pipeline/update.py``), unless
        labels changed enough to refit. True when anything was written."""
        from semsearch_sqlite.pipeline import update

        reason = update.refit_reason(self.store, self.options.method)
        if reason is None:
            done = update.update_semantic(self.store, self.options.tags, self.progress.stage)
            if done is not None:
                return bool(done["fresh"] or done["resmoothed"])
        from semsearch_sqlite.pipeline.train import refresh_semantic

        self.progress.stage("fitting word space", None)
        self.stats.semantic = refresh_semantic(self.store, method=self.options.method, tags=self.options.tags)
        self.progress.stage("storing the neighbour graph", None)
        with self.store.atomic():
            update.record_fit(self.store)
        return True

    # -- files that failed: remembered (path, size, mtime, error) and reported, not retried
    def _known_failures(self) -> dict[str, list[Any]]:
        stored = self.store.get_meta(FAILED_META)
        return dict(stored) if isinstance(stored, dict) else {}

    def _skip_known_failures(self, todo: list[_Item]) -> list[_Item]:
        """Leave out files that failed before and haven't changed since; report them again."""
        failed = self._known_failures()
        if not failed or self.options.rebuild:
            return todo
        out = []
        for item in todo:
            seen = failed.get(item.rel)
            if seen is not None and seen[0] == item.size and seen[1] == item.mtime:
                self._problem(item.path, f"{seen[2]} (unchanged since it failed; not retried)")
            else:
                out.append(item)
        return out

    def _remember_failures(self, rels: list[str]) -> None:
        """Store this run's failures of files in the folder (and forget the ones gone or fixed)."""
        failed = self._known_failures()
        if not failed and not self._failures:
            return
        present = set(rels)
        new = {rel: v for rel, v in failed.items() if rel in present and rel not in self._fixed}
        new.update(self._failures)
        if new != failed:
            with self.store.atomic():
                self.store.set_meta(FAILED_META, new)

    def _check_backbone(self) -> None:
        stored = self.store.get_meta("backbone")
        wanted = self.options.backbone
        if wanted and wanted != stored:  # the name as recorded needs no lookup (nor model.cnn's imports)
            from semsearch_sqlite.model.cnn import canonical_backbone

            wanted = canonical_backbone(wanted)
        if stored and wanted and wanted != stored:
            if not self.options.rebuild:
                raise StoreError(
                    f"{self.store.path}: its images were embedded with backbone {stored!r}, not {wanted!r}; "
                    "vector spaces can't be mixed: add --rebuild to re-embed every image"
                )
            self._clear_vectors()
        elif self.options.rebuild:
            self._clear_vectors()

    def _clear_vectors(self) -> None:
        self.store.forget_embeddings((VEC_VISUAL, VEC_SEMANTIC))

    def backbone(self, report: bool = True) -> Any:
        if self._warm_error is not None:
            raise self._warm_error
        if self._backbone is None:
            from semsearch_sqlite.model.cnn import load_backbone, load_query_backbone

            name, weights, layer = self._backbone_args()
            if report:
                self.progress.stage(f"loading backbone {name}", None)
            load = load_query_backbone if self._small else load_backbone
            self._backbone = load(name, weights=weights, layer=layer)
        return self._backbone

    def _warm_up(self, todo: list[_Item]) -> threading.Thread:
        """Load the backbone in a thread, and trace the first batch's shape (not for --ray:
        the driver never runs it); errors are raised by the next ``backbone()``."""
        # a few photos added to a collection: no TensorFlow (same features, see effnet_numpy)
        self._small = (
            len(todo) <= SMALL_BATCH
            and not (self.options.ray or self.options.rebuild)
            and bool(self.store.get_meta("backbone"))
        )

        self.progress.stage(f"loading backbone {self._backbone_args()[0]}", None)

        def work() -> None:
            try:
                backbone = self.backbone(report=False)
                if not self.options.ray and not self._small:
                    h, w = backbone.input_size
                    backbone.predict(np.zeros((min(len(todo), max(1, self.options.batch_size)), h, w, 3), np.float32))
            except Exception as e:  # noqa: BLE001 - re-raised in the writer thread
                self._warm_error = e

        thread = threading.Thread(target=work, name="semsearch-warm-up", daemon=True)
        thread.start()
        return thread

    def _discover(self) -> list[str]:
        result = discover_paths(self.folder, follow_links=self.options.follow_links)
        for path, reason in result.problems:
            self._problem(path, reason)
        for link in result.outside_links:
            self.stats.outside_links.append(str(link))
            self.progress.problem(str(link), OUTSIDE_LINK.format(target=os.path.realpath(link)))
        return result.files

    def _labels(self, files: list[str]) -> list[str | None]:
        """Each file's label (in the order of ``files``): from the labels file, else its folder."""
        if self.options.labels_file:
            table = read_labels_csv(self.options.labels_file)
            out: list[str | None] = []
            for text in files:
                p = Path(text)
                out.append(table.get(p.relative_to(self.folder).as_posix()) or table.get(str(p.resolve())))
            return out
        # by string, once per folder: pathlib's relpath/relative_to cost seconds at 100k files
        by_folder: dict[str, str | None] = {}
        for text in files:
            parent = text[: text.rfind(os.sep)]
            if parent not in by_folder:
                by_folder[parent] = self._folder_label(text)
        return [by_folder[text[: text.rfind(os.sep)]] for text in files]

    def _folder_label(self, text: str) -> str | None:
        """The label of the file at path ``text`` from its folder's name (see :func:`label_for`)."""
        under = os.path.join(str(self.label_root), "")
        if not text.startswith(under):
            return label_for(text, self.label_root)
        parts = text[len(under) :].replace(os.sep, "/").rsplit("/", 2)
        if len(parts) < 2:
            return None  # directly in the root: no label
        return normalise_label(parts[-2]) or None

    def _rel(self, path: Path) -> str:
        text, under = os.fspath(path), os.path.join(str(self.root), "")
        if text.startswith(under):
            return text[len(under) :].replace(os.sep, "/")
        return path.relative_to(self.root).as_posix()

    def _ensure_words(self, labels: set[str]) -> None:
        opts = self.options
        asked = opts.glove or opts.vocab_size or opts.vocab_file or opts.rebuild
        from semsearch_sqlite.text.related import related_current

        if (
            not asked
            and self.store.get_meta("words_lookup_count")
            and labels <= set(label_counts(self.store.conn))
            and related_current(self.store)
        ):
            return  # each label's words were made sure of when it was stored: no need to read 50k words
        from semsearch_sqlite.pipeline.train import refresh_vocabulary
        from semsearch_sqlite.text.glove import read_vocab_file
        from semsearch_sqlite.text.query import tokenize

        extra = read_vocab_file(opts.vocab_file) if opts.vocab_file else []
        label_words = sorted({t for lab in labels for t in tokenize(lab)})
        if refresh_vocabulary(
            self.store,
            opts.glove,
            opts.vocab_size,
            extra,
            label_words,
            rebuild=opts.rebuild,
            on_load=lambda: self.progress.stage("loading word vectors", None),
            on_related=lambda: self.progress.stage("embedding the words for associations", None),
        ):
            # a new word space makes every semantic vector stale
            self.store.drop_vec_table(VEC_SEMANTIC)

    def _plan(self, files: list[str], rels: list[str], labels: list[str | None]) -> list[_Item]:
        """The files to embed; unchanged files (same size and mtime as stored) are only
        counted, and touched or moved ones (same bytes) get their row updated. One read of
        the rows' small columns: hashes are fetched only for files that may be known."""
        conn = self.store.conn
        # path -> (path, id, size, mtime, label), from the index images_file (not the rows)
        rows = conn.execute("select path, id, size, mtime, label from images").fetchall()
        existing = dict(zip(map(itemgetter(0), rows), rows))
        self._stored_count = len(existing)
        todo: list[_Item] = []
        label_updates = []
        unchanged = matched = 0
        for p, rel, label, st in zip(files, rels, labels, stat_files(files)):
            row = existing.get(rel)
            matched += row is not None
            if isinstance(st, OSError):
                self._problem(p, f"cannot read ({st.strerror})")
                continue
            if row is not None and row[2] == st.st_size and row[3] == st.st_mtime:
                unchanged += 1
                if row[4] != label:
                    label_updates.append((label, row[1]))
                continue
            todo.append(_Item(Path(p), rel, label, st.st_size, st.st_mtime, image_id=row[1] if row else None))
        self.stats.unchanged += unchanged
        if label_updates:
            with self.store.atomic():
                conn.executemany("update images set label = ? where id = ?", label_updates)
                self.store.bump_generation()
            self.stats.updated += len(label_updates)
        # rows of this folder whose file is gone: moved (below) or removed (``_prune``)
        if matched < len(existing):
            found = set(rels)
            self._gone = {rel: r for rel, r in existing.items() if rel not in found and self._in_scope(rel)}
        return self._known_bytes(todo, existing) if todo else todo

    def _known_bytes(self, todo: list[_Item], existing: dict[str, tuple[Any, ...]]) -> list[_Item]:
        """``todo`` less the files whose bytes are already stored (touched, or moved or
        renamed from a gone row): those need no CNN, only their row updated."""
        conn = self.store.conn
        gone = self._gone
        known = [r[1] for r in gone.values()] + [i.image_id for i in todo if i.image_id is not None]
        hashes = stored_hashes(conn, known)
        # a hash stored twice: the newest row's (as a scan in id order finds it last)
        by_hash = {hashes[r[1]]: r for r in sorted(gone.values(), key=itemgetter(1))}
        remaining = []
        for item in todo:
            if item.image_id is None and not by_hash:
                remaining.append(item)  # new, and nothing gone it could be: hashed as it is read
                continue
            try:
                item.sha256 = sha256_file(item.path)
            except OSError as e:
                self._problem(item.path, f"cannot read ({e.strerror})")
                continue
            if item.image_id is not None:
                row = existing[item.rel]
                if hashes[item.image_id] == item.sha256 and row[2] != -1:
                    with self.store.atomic():
                        conn.execute(
                            "update images set size = ?, mtime = ?, label = ?, updated_at = ? where id = ?",
                            [item.size, item.mtime, item.label, now(), item.image_id],
                        )
                    self.stats.unchanged += 1
                    continue
            elif item.sha256 in by_hash and by_hash[item.sha256][2] != -1:
                row = by_hash.pop(item.sha256)
                with self.store.atomic():
                    conn.execute(
                        "update images set path = ?, size = ?, mtime = ?, label = ?, updated_at = ? where id = ?",
                        [item.rel, item.size, item.mtime, item.label, now(), row[1]],
                    )
                    self.store.bump_generation()
                del gone[row[0]]
                self.stats.moved += 1
                continue
            remaining.append(item)
        return remaining

    def _prune(self) -> bool:
        """Remove the rows whose file is gone from the folder (``_plan`` found them)."""
        if self.options.prune is False:
            return False
        stale = [(r[1], rel) for rel, r in self._gone.items()]
        if not stale:
            return False
        stored = self._stored_count + self.stats.added
        if self.options.prune is None and len(stale) >= PRUNE_ASK_MIN and len(stale) > PRUNE_ASK_SHARE * stored:
            self.stats.kept_missing = sorted(path for _, path in stale)
            return False
        with self.store.atomic():
            delete_images(self.store, [i for i, _ in stale])
        self.stats.removed += len(stale)
        self.stats.removed_paths = sorted(path for _, path in stale)
        return True

    def _fill_metadata(self) -> None:
        """EXIF of stored images never read (a database from before the metadata columns,
        or rows whose file was unchanged): read the headers only, no re-embedding."""
        missing = self.store.images_without_metadata()
        if not missing:
            return
        from semsearch_sqlite.media import exif

        self.progress.stage("reading photo metadata", len(missing))
        for start in range(0, len(missing), METADATA_BATCH):
            batch = missing[start : start + METADATA_BATCH]
            values = [
                (i, exif.read_metadata(self.root / rel).as_dict()) for i, rel in batch if (self.root / rel).is_file()
            ]
            with self.store.atomic():
                self.store.set_photo_metadata(values)
            self.progress.advance(len(batch))

    # -- embedding -----------------------------------------------------------------------------
    def _embed(self, todo: list[_Item]) -> None:
        from semsearch_sqlite.pipeline.prepare import PrepareSpec

        backbone = self.backbone()
        if not self._small:  # the numpy pass embeds for a collection that has its backbone recorded
            self._record_backbone(backbone)
        self.store.ensure_vec_table(VEC_VISUAL, backbone.dim)
        self.progress.stage("embedding", len(todo))
        started = time.perf_counter()
        spec = PrepareSpec(
            backbone.preprocessor,
            backbone.input_size,
            max_pixels=self.options.max_pixels,
            originals=self.options.originals,
        )
        batch_size = max(1, self.options.batch_size)
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        if self.options.ray:
            from semsearch_sqlite.pipeline.distributed import ray_embedded_batches

            source = ray_embedded_batches(batches, spec, self._backbone_args(), batch_size)
        else:
            source = local_embedded_batches(batches, spec, backbone, self.options.workers)
        # This thread is the one writer: batches arrive decoded and embedded, in order.
        # closing(): an error here (--strict, a full disk) stops the threads or Ray at once.
        with contextlib.closing(source):
            for items, results, features, probs in source:
                good = []
                for item, result in zip(items, results):
                    if isinstance(result, str):
                        self._problem(item.path, result, item)
                    else:
                        good.append((item, result))
                if good:
                    self._write_batch(good, features, probs)
                self.progress.advance(len(items))
        self.stats.embed_seconds += time.perf_counter() - started

    def _backbone_args(self) -> tuple[str, str | None, str | None]:
        store = self.store
        return (
            self.options.backbone or store.get_meta("backbone") or DEFAULT_BACKBONE,
            self.options.weights or store.get_meta("backbone_weights_path"),
            self.options.layer or store.get_meta("backbone_layer"),
        )

    def _problem(self, path: Path | str, reason: str, item: _Item | None = None) -> None:
        if item is not None:  # a file that failed to read: remembered, not retried while unchanged
            self._failures[item.rel] = [item.size, item.mtime, reason]
        self.stats.failed += 1
        self.stats.problems.append((str(path), reason))
        self.progress.problem(str(path), reason)
        if self.options.strict:
            raise ImageError(str(path), reason + " (--strict stops at the first bad file)")

    def _record_backbone(self, backbone: Any) -> None:
        prov = backbone.provenance()
        with self.store.atomic():
            self.store.update_meta(
                {
                    "backbone": backbone.name,
                    "backbone_dim": backbone.dim,
                    "backbone_layer": backbone.layer,
                    "backbone_weights_path": self.options.weights or self.store.get_meta("backbone_weights_path"),
                    "backbone_weights_sha256": backbone.weights_sha256,
                    "backbone_preprocessing": backbone.preprocessing,
                    "backbone_provenance": prov,
                }
            )
            head = backbone.classifier_weights()
            if head is not None and self.store.load_model(CLASSIFIER_MODEL) is None:
                kernel, bias = head
                self.store.save_model(
                    CLASSIFIER_MODEL,
                    "dense",
                    {"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32)},
                    {"backbone": backbone.name, "classes": 1000},
                )

    def _write_batch(
        self, prepared: list[tuple[_Item, Prepared]], features: np.ndarray, probs: np.ndarray | None
    ) -> None:
        store, conn = self.store, self.store.conn
        stamp = now()
        with store.atomic():
            ids = []
            for it, p in prepared:
                values = dict(
                    path=it.rel,
                    label=it.label,
                    sha256=p.sha256,
                    size=it.size,
                    mtime=it.mtime,
                    width=p.width,
                    height=p.height,
                    mime=p.mime,
                    thumbnail=p.thumb[0],
                    thumb_width=p.thumb[2],
                    thumb_height=p.thumb[3],
                    updated_at=stamp,
                    **p.metadata.as_dict(),
                    metadata_read_at=stamp,
                )
                if it.image_id is not None:
                    sets = ", ".join(f"{k} = :{k}" for k in values)
                    conn.execute(f"update images set {sets} where id = :id", {**values, "id": it.image_id})
                    image_id = it.image_id
                    self.stats.updated += 1
                else:
                    cols = ", ".join(values) + ", added_at"
                    marks = ", ".join(f":{k}" for k in values) + ", :added_at"
                    cur = conn.execute(f"insert into images ({cols}) values ({marks})", {**values, "added_at": stamp})
                    image_id = int(cur.lastrowid)
                    self.stats.added += 1
                ids.append(image_id)
                self._fixed.add(it.rel)
                conn.execute(
                    "insert or replace into image_files(image_id, display, display_mime, display_width, "
                    "display_height, is_original) values (?, ?, ?, ?, ?, ?)",
                    [image_id, p.display[0], p.display[1], p.display[2], p.display[3], int(p.original)],
                )
            store.write_vectors(VEC_VISUAL, ids, features)
            if probs is not None:
                conn.executemany(
                    "insert or replace into image_classes(image_id, probs) values (?, ?)",
                    ((i, encode_f32(pr)) for i, pr in zip(ids, probs)),
                )
            # the semantic vectors of re-embedded images are stale until the refit
            store.delete_vectors(VEC_SEMANTIC, ids)
            store.bump_generation()
        self.stats.embedded += len(ids)


def local_embedded_batches(
    batches: list[list[_Item]], spec: PrepareSpec, backbone: Any, workers: int
) -> Iterator[EmbeddedBatch]:
    """Decode in ``workers`` threads and run the model in another, so decoding, the CNN
    and the caller's writes overlap (Pillow, numpy, TensorFlow and SQLite release the GIL).

    Yields batches in order; closing the generator stops both.
    """
    from semsearch_sqlite.pipeline.prepare import try_prepare

    out: queue.Queue[Any] = queue.Queue(maxsize=WRITE_BEHIND)
    stop = threading.Event()
    done = object()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def model_loop(pool: ThreadPoolExecutor) -> None:
        try:
            window: deque[list[Future[Prepared | str]]] = deque()
            for i, batch in enumerate(batches):
                while len(window) <= DECODE_AHEAD and i + len(window) < len(batches):
                    window.append(
                        [pool.submit(try_prepare, it.path, spec, it.sha256) for it in batches[i + len(window)]]
                    )
                results = [f.result() for f in window.popleft()]
                tensors = [r.tensor for r in results if not isinstance(r, str)]
                if tensors:
                    features, probs = backbone.predict(np.stack(tensors))
                else:
                    features, probs = np.zeros((0, backbone.dim), np.float32), None
                if stop.is_set() or not put((batch, results, features, probs)):
                    return
            put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the writer thread, raised there
            put(e)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="semsearch-decode") as pool:
        thread = threading.Thread(target=model_loop, args=(pool,), name="semsearch-model", daemon=True)
        thread.start()
        try:
            while True:
                got = out.get()
                if got is done:
                    return
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            stop.set()
            thread.join()
            pool.shutdown(cancel_futures=True)


def delete_images(store: Store, ids: list[int]) -> None:
    """Delete images and everything keyed by their ids (call inside a transaction)."""
    conn = store.conn
    params = [(i,) for i in ids]
    for table in ("tags",):
        conn.executemany(f"delete from {table} where image_id = ?", params)
    for table in ("image_files", "image_classes"):
        conn.executemany(f"delete from {table} where image_id = ?", params)
    store.delete_vectors(VEC_VISUAL, ids)
    store.delete_vectors(VEC_SEMANTIC, ids)
    conn.executemany("delete from images where id = ?", params)
    store.bump_generation()
