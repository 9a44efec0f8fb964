"""Relevance feedback (Rocchio): like/unlike ids move the query, from Python, the CLI and SQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch_sqlite.cli import cli
from semsearch_sqlite.errors import NotFoundError, QueryError
from semsearch_sqlite.queries.search import (
    ROCCHIO_LIKE,
    ROCCHIO_QUERY,
    ROCCHIO_UNLIKE,
    similar_images,
    similar_to_image,
    space_matrix,
    text_vector,
    visual_feedback,
)
from semsearch_sqlite.queries.sqlfuncs import register_functions
from semsearch_sqlite.storage.store import Store
from semsearch_sqlite.vectors.maths import unit
from semsearch_sqlite.vectors.rerank import FEEDBACK_SHORTLIST

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def db(dated_photos_db: Path) -> Path:
    return dated_photos_db


def ids_of(conn, label: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [r[0] for r in conn.execute("select id from images where label = ? order by id", [label])]


def test_rocchio_moves_the_query(db: Path) -> None:
    with Store.open(db) as s:
        conn = s.conn
        like, unlike = ids_of(conn, "car")[:2], ids_of(conn, "cat")[:1]
        m = space_matrix(conn, "semantic")
        q, _ = text_vector(conn, "sofa")
        moved = unit(
            ROCCHIO_QUERY * q
            + ROCCHIO_LIKE * np.mean([m.vector(i) for i in like], axis=0)
            - ROCCHIO_UNLIKE * m.vector(unlike[0])
        )
        # then the text search's visual re-ranking of its shortlist
        want = [i for i, _ in visual_feedback(conn, m.top_k(moved, FEEDBACK_SHORTLIST, exclude=set(unlike)))[:5]]
        hits = similar_images(conn, "sofa", 5, like=like, unlike=unlike).hits
        assert [h.image_id for h in hits] == want
        assert unlike[0] not in [h.image_id for h in hits]
        # liking cars pulls cars up
        before = [h.label for h in similar_images(conn, "sofa", 5).hits].count("car")
        assert [h.label for h in hits].count("car") >= before
        assert (
            similar_images(conn, "sofa", 5, like="", unlike=None).as_dict() == similar_images(conn, "sofa", 5).as_dict()
        )
        visual = similar_to_image(conn, ids_of(conn, "dog")[0], 4, "visual", like=like, unlike=unlike).hits
        assert len(visual) == 4 and unlike[0] not in [h.image_id for h in visual]


def test_cli_and_sql_agree_with_python(db: Path) -> None:
    with Store.open(db) as s:
        like, unlike = ids_of(s.conn, "dog")[:2], ids_of(s.conn, "car")[:2]
        want = [h.image_id for h in similar_images(s.conn, "cat", 4, like=like, unlike=unlike).hits]
        register_functions(s.conn)
        sql = s.conn.execute(
            "select image_id from similar_images('cat', 4, ?, ?)", [",".join(map(str, like)), json.dumps(unlike)]
        ).fetchall()
        assert [r[0] for r in sql] == want
    r = CliRunner().invoke(
        cli,
        [
            "search",
            str(db),
            "cat",
            "-k",
            "4",
            "--json",
            "--like",
            ",".join(map(str, like)),
            "--unlike",
            ",".join(map(str, unlike)),
        ],
    )
    assert r.exit_code == 0, r.output
    assert [h["image_id"] for h in json.loads(r.stdout)["hits"]] == want


def test_bad_feedback_ids(db: Path) -> None:
    with Store.open(db) as s:
        with pytest.raises(QueryError, match="like/unlike take image ids such as 12,15, not 'x'"):
            similar_images(s.conn, "cat", 3, like="1,x")
        with pytest.raises(NotFoundError, match="no image with id 9999"):
            similar_images(s.conn, "cat", 3, unlike=[9999])
    r = CliRunner().invoke(cli, ["search", str(db), "cat", "--like", "one"])
    assert r.exit_code == 1 and r.stderr == "Error: like/unlike take image ids such as 12,15, not 'one'\n"
