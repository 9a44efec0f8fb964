"""``ingest --ray`` on a real local Ray cluster (2 CPUs): the same database as a local
ingest, a killed driver resumes, and without Ray the flag says how to get it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch_sqlite.cli import cli
from semsearch_sqlite.pipeline.ingest import IngestOptions, ingest

from .helpers import check_consistent, make_folder, rows

RAY_CPUS = 2
# The driver of a --ray ingest, SIGKILLed once its first batch is committed.
CHILD = r"""
import os, signal, sys
from semsearch_sqlite.pipeline import ingest
images, db, backbone = sys.argv[1], sys.argv[2], sys.argv[3]
original = ingest._Run._write_batch
def write_then_die(self, *args, **kwargs):
    original(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
ingest._Run._write_batch = write_then_die
ingest.ingest(images, db, ingest.IngestOptions(backbone=backbone, batch_size=3, ray=True))
print("finished without being killed")
"""


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """One local Ray cluster for the module (starting one takes seconds); its address."""
    import ray  # the [test] extra installs it

    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _bad_file(folder: Path) -> Path:
    bad = folder / "dog" / "zz_broken.png"
    bad.write_bytes(b"not a picture")
    return bad


@pytest.mark.slow
def test_ray_ingest_matches_local_ingest(tmp_path: Path, tiny_backbone: str, ray_cluster: str) -> None:
    folder = make_folder(tmp_path / "images")
    bad = _bad_file(folder)
    local, remote = tmp_path / "local.db", tmp_path / "ray.db"
    a = ingest(folder, local, IngestOptions(backbone=tiny_backbone, batch_size=4))
    b = ingest(folder, remote, IngestOptions(backbone=tiny_backbone, batch_size=4, ray=True))
    assert (b.added, b.failed, b.embedded) == (a.added, a.failed, a.embedded) == (12, 1, 12)
    assert b.problems == a.problems == [(str(bad), "not an image (cannot identify format)")]
    want, got = rows(local), rows(remote)
    assert got["images"] == want["images"]  # ids, paths, labels, hashes, sizes
    assert got["files"] == want["files"]
    for space in ("visual", "semantic"):
        assert np.array_equal(got[space][0], want[space][0])
        assert np.allclose(got[space][1], want[space][1], atol=1e-5)
    assert got["tags"] == want["tags"]

    # incremental: only the changed file goes to the cluster
    make_folder(tmp_path / "other", per_class=1)
    (tmp_path / "other" / "cat" / "cat_0.png").replace(folder / "cat" / "cat_1.png")
    again = ingest(folder, remote, IngestOptions(ray=True))
    assert (again.updated, again.embedded, again.unchanged) == (1, 1, 11)


@pytest.mark.slow
def test_killed_ray_driver_leaves_a_consistent_file_and_the_rerun_finishes(
    tmp_path: Path, tiny_backbone: str, ray_cluster: str
) -> None:
    folder = make_folder(tmp_path / "images")
    reference = tmp_path / "ref.db"
    ingest(folder, reference, IngestOptions(backbone=tiny_backbone, batch_size=3))
    db = tmp_path / "k.db"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(db), tiny_backbone],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    check_consistent(db)
    with_rows = rows(db)
    assert len(with_rows["images"]) == 3  # the first batch, committed whole
    ingest(folder, db, IngestOptions(backbone=tiny_backbone, batch_size=3, ray=True))
    check_consistent(db)
    got, want = rows(db), rows(reference)
    assert got["images"] == want["images"]
    assert np.allclose(got["visual"][1], want["visual"][1], atol=1e-5)
    assert got["tags"] == want["tags"]


def test_ray_flag_without_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "images", per_class=1)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it isn't installed
    result = CliRunner().invoke(cli, ["ingest", str(folder), str(tmp_path / "p.db"), "--ray"])
    assert result.exit_code == 1
    assert result.output == "Error: --ray needs Ray: pip install 'semsearch-sqlite[ray]'\n"
    assert not (tmp_path / "p.db").exists()
