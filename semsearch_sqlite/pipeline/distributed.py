"""``ingest --ray``: decoding and embedding as Ray Data batch inference; writing stays here.

The driver (this process) plans the run as usual and sends only the new and changed
files. Ray tasks read and decode them (:func:`.prepare.try_prepare`, the function local
ingest uses), actors each load the backbone once and embed, on a GPU when the cluster
has them, and the results stream back in order to the driver, the single writer, which
commits batch by batch as before: a killed driver leaves a consistent file and the same
command resumes. ``RAY_ADDRESS`` (Ray's own convention) picks the cluster; without it a
local one starts for the run. The image folder must be readable at the same path on
every node (a shared or synced folder).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from semsearch_sqlite.errors import SemsearchError
from semsearch_sqlite.media.exif import PhotoMetadata
from semsearch_sqlite.pipeline.prepare import Prepared, PrepareSpec, try_prepare

RAY_MISSING = "--ray needs Ray: pip install 'semsearch-sqlite[ray]'"
# CPU-only clusters: one model actor per this many CPUs, the rest decode
CPUS_PER_CPU_ACTOR = 2
# a decode task holds a batch of file bytes, reduced pictures and model inputs
DECODE_TASK_MEMORY = 256 * 1024 * 1024
NOT_ON_WORKER = "; with --ray the folder must be at the same path on every node"


class RayError(SemsearchError):
    """Ray is missing or the cluster can't run the job."""


def import_ray() -> Any:
    """Ray, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra
    except ImportError:
        raise RayError(RAY_MISSING) from None
    return ray


def ray_embedded_batches(
    batches: list[list[Any]], spec: PrepareSpec, backbone_args: tuple[str, str | None, str | None], batch_size: int
) -> Iterator[tuple[list[Any], list[Prepared | str], np.ndarray, np.ndarray | None]]:
    """The embedded batches of ``batches`` (ingest's items), computed on a Ray cluster, in order.

    Uses the Ray connection this process already has, else connects to ``RAY_ADDRESS``,
    else starts a local cluster (shut down again at the end).
    """
    ray = import_ray()
    items = [item for batch in batches for item in batch]
    if not items:
        return
    started_here = not ray.is_initialized()
    if started_here:
        _init(ray)
    try:
        yield from _run(ray, items, spec, backbone_args, batch_size)
    finally:
        if started_here:
            ray.shutdown()


def _init(ray: Any) -> None:
    from semsearch_sqlite.model.keras_env import quiet_fd2

    # Ray's C++ core logs notices to fd 2 (they'd break into the progress bar); errors still raise
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    # Ray reads RAY_ADDRESS itself; without it, init() starts a local cluster
    with quiet_fd2():
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    for name in ("ray", "ray.data"):  # Ray's notices would break into the progress bar
        logging.getLogger(name).setLevel(logging.ERROR)


def actor_resources(resources: dict[str, float]) -> dict[str, Any]:
    """How many model actors to run, and what each asks for: one per GPU when the cluster
    has GPUs, else one per ``CPUS_PER_CPU_ACTOR`` CPUs (the other CPUs decode)."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return {"actors": gpus, "num_gpus": 1, "num_cpus": 1}
    cpus = int(resources.get("CPU", 1))
    return {"actors": max(1, cpus // CPUS_PER_CPU_ACTOR), "num_cpus": 1}


def _run(
    ray: Any, items: list[Any], spec: PrepareSpec, backbone_args: tuple[str, str | None, str | None], batch_size: int
) -> Iterator[tuple[list[Any], list[Prepared | str], np.ndarray, np.ndarray | None]]:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own
    ctx.execution_options.preserve_order = True  # same ids as a local run, and a killed run leaves a prefix
    rows = [{"i": n, "path": str(Path(it.path).resolve()), "sha256": it.sha256 or ""} for n, it in enumerate(items)]
    blocks = max(1, -(-len(rows) // batch_size))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    # The memory request, unlike the actors' arguments, also keeps Ray from fusing the
    # two stages into the actors: decoding overlaps the model instead of queueing behind it.
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"spec": spec},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
        memory=DECODE_TASK_MEMORY,
    )
    wanted = actor_resources(ray.cluster_resources())
    ds = ds.map_batches(
        Embedder,
        fn_constructor_args=backbone_args,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=wanted.pop("actors")),
        **wanted,
    )
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        idx = [int(i) for i in out["i"]]
        results = [_prepared(out, j) if out["ok"][j] else str(out["reason"][j]) for j in range(len(idx))]
        ok = np.asarray(out["ok"], bool)
        features = np.asarray(out["features"], np.float32)[ok]
        probs = np.asarray(out["probs"], np.float32)[ok] if "probs" in out else None
        yield [items[i] for i in idx], results, features, probs


_FIELDS = (
    "sha256",
    "width",
    "height",
    "mime",
    "thumb",
    "thumb_mime",
    "thumb_width",
    "thumb_height",
    "display",
    "display_mime",
    "display_width",
    "display_height",
    "original",
    "metadata",
)


def decode_batch(batch: dict[str, np.ndarray], spec: PrepareSpec) -> dict[str, np.ndarray]:
    """A Ray task: read and prepare a batch of files, one row per file (failures keep their
    row, with ``ok`` false and the reason)."""
    n = len(batch["path"])
    h, w = spec.input_size
    cols: dict[str, list[Any]] = {k: [] for k in ("ok", "reason", *_FIELDS)}
    tensors = np.zeros((n, h, w, 3), np.float32)
    for j, (path, sha) in enumerate(zip(batch["path"], batch["sha256"])):
        r = try_prepare(Path(str(path)), spec, str(sha) or None)
        if isinstance(r, str):
            if "no such file" in r:
                r += f" on {socket.gethostname()}{NOT_ON_WORKER}"
            values: tuple[Any, ...] = (False, r, "", 0, 0, "", b"", "", 0, 0, b"", "", 0, 0, False, "{}")
        else:
            tensors[j] = r.tensor
            # the EXIF travels as JSON text: one plain column, whatever fields it holds
            values = (
                True,
                "",
                r.sha256,
                r.width,
                r.height,
                r.mime,
                *r.thumb,
                *r.display,
                r.original,
                json.dumps(r.metadata.as_dict()),
            )
        for k, v in zip(cols, values):
            cols[k].append(v)
    out = {k: np.array(v, dtype=object if k in ("thumb", "display") else None) for k, v in cols.items()}
    out["i"] = np.asarray(batch["i"], np.int64)
    out["tensor"] = tensors
    return out


class Embedder:
    """A Ray actor: loads the backbone once, then embeds batch after batch."""

    def __init__(self, name: str, weights: str | None, layer: str | None):
        from semsearch_sqlite.model.cnn import load_backbone

        self.backbone = load_backbone(name, weights=weights, layer=layer)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        n, dim = len(ok), self.backbone.dim
        features = np.zeros((n, dim), np.float32)
        probs = None
        if ok.any():
            f, p = self.backbone.predict(np.asarray(batch["tensor"], np.float32)[ok])
            features[ok] = f
            if p is not None:
                probs = np.zeros((n, p.shape[1]), np.float32)
                probs[ok] = p
        out = {k: v for k, v in batch.items() if k != "tensor"}  # the tensors needn't travel back
        out["features"] = features
        if self.backbone.has_probs:  # every batch has the same columns, failed rows or not
            out["probs"] = probs if probs is not None else np.zeros((n, 1000), np.float32)
        return out


def _prepared(out: dict[str, np.ndarray], j: int) -> Prepared:
    g = {k: out[k][j] for k in _FIELDS}
    return Prepared(
        sha256=str(g["sha256"]),
        width=int(g["width"]),
        height=int(g["height"]),
        mime=str(g["mime"]),
        thumb=(bytes(g["thumb"]), str(g["thumb_mime"]), int(g["thumb_width"]), int(g["thumb_height"])),
        display=(bytes(g["display"]), str(g["display_mime"]), int(g["display_width"]), int(g["display_height"])),
        original=bool(g["original"]),
        tensor=np.zeros(0, np.float32),
        metadata=PhotoMetadata(**json.loads(str(g["metadata"]) or "{}")),
    )
