"""The vec0 vector tables: their names and DDL, and reading them back fast.

``select key, embedding from vec_x`` costs ~1 ms per 4096-d row, so whole tables are
read from vec0's own shadow tables (``vec_x_chunks`` holds each chunk's validity bitmap
and rowids, ``vec_x_vector_chunks00`` its vectors as one BLOB), after checking that their
layout is the one this code knows; anything unexpected falls back to the SQL read.
Readers hand back raw float32 rows; a ``transform`` (e.g. row normalisation) is applied
block by block while the data is in cache.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from semsearch_sqlite.storage.rows import table_exists

log = logging.getLogger("semsearch_sqlite")

# vec0 tables are named here and created lazily once their dimensions are known.
VEC_VISUAL = "vec_visual"
VEC_SEMANTIC = "vec_semantic"
VEC_WORDS = "vec_words"
VEC_TABLES = (VEC_VISUAL, VEC_SEMANTIC, VEC_WORDS)
VEC_KEYS = {VEC_VISUAL: "image_id", VEC_SEMANTIC: "image_id", VEC_WORDS: "word_id"}
# rows per block when copying a table: a few MB, so a block stays in cache
BLOCK_CELLS = 1 << 22

Transform = Callable[[np.ndarray], np.ndarray]


def _identity(block: np.ndarray) -> np.ndarray:
    return block


def block_rows(dim: int) -> int:
    """Rows per copy block for ``dim``-d vectors."""
    return max(1, BLOCK_CELLS // max(dim, 1))


def check_vec_name(table: str) -> None:
    if table not in VEC_KEYS:
        raise ValueError(f"unknown vector table {table!r}")


def vec_table_dim(conn: sqlite3.Connection, table: str) -> int | None:
    """The dimension of vec0 table ``table`` on ``conn``, or None if it doesn't exist."""
    row = conn.execute("select sql from sqlite_master where type = 'table' and name = ?", [table]).fetchone()
    if row is None:
        return None
    match = re.search(r"float\[(\d+)\]", row[0] or "")
    return int(match.group(1)) if match else None


def read_vectors_sql(conn: sqlite3.Connection, table: str) -> tuple[np.ndarray, np.ndarray]:
    """All ``(ids, matrix)`` of vec0 table ``table`` on ``conn``, through SQL."""
    check_vec_name(table)
    dim = vec_table_dim(conn, table)
    if dim is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    key = VEC_KEYS[table]
    rows = conn.execute(f"select {key}, embedding from {table} order by {key}").fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
    return ids, matrix


# -- reading vec0 ----------------------------------------------------------------------------
class RowSource:
    """The rows of a vec0 table: ``ids`` (in the source's own order) plus readers."""

    ids: np.ndarray
    dim: int

    transform: Transform = staticmethod(_identity)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The (transformed) vectors of the given row numbers."""
        raise NotImplementedError

    def fill(self, out: np.ndarray, targets: np.ndarray | None) -> bool:
        """Write every row's (transformed) vector to ``out[targets[i]]`` (``out[i]`` when None).

        False when the table changed under the read (the caller retries).
        """
        raise NotImplementedError


class SqlRows(RowSource):
    """Fallback: ``select key, embedding ... order by key`` (slow, always works)."""

    def __init__(self, conn: sqlite3.Connection, table: str, transform: Transform | None = None):
        self.ids, self._raw = read_vectors_sql(conn, table)
        self.dim = self._raw.shape[1] if self._raw.ndim == 2 else 0
        if transform is not None:
            self.transform = transform

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.transform(np.array(self._raw[rows], dtype=np.float32))

    def fill(self, out: np.ndarray, targets: np.ndarray | None) -> bool:
        step = block_rows(self.dim)
        for s in range(0, len(self.ids), step):
            block = self.transform(np.array(self._raw[s : s + step], dtype=np.float32))
            if targets is None:
                out[s : s + len(block)] = block
            else:
                out[targets[s : s + len(block)]] = block
        self._raw = np.zeros((0, self.dim), dtype=np.float32)  # done: free it
        return True


_CHUNKS_SQL = re.compile(
    r'^CREATE TABLE "?(\w+)_chunks"?\s*\(\s*chunk_id INTEGER PRIMARY KEY AUTOINCREMENT\s*,\s*size INTEGER NOT NULL\s*,'
    r"\s*validity BLOB NOT NULL\s*,\s*rowids BLOB NOT NULL\s*\)$",
    re.IGNORECASE,
)


class ChunkRows(RowSource):
    """vec0's shadow tables read directly: one BLOB per 1024 vectors."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        table: str,
        dim: int,
        meta: list[tuple[int, int, bytes, bytes]],
        ids: np.ndarray,
        where: list[tuple[int, np.ndarray]],
    ):
        self.conn = conn
        self.table = table
        self.dim = dim
        self._meta = meta
        self.ids = ids
        self._where = where  # per chunk: (first row number, valid offsets)

    @classmethod
    def open(
        cls, conn: sqlite3.Connection, table: str, dim: int, transform: Transform | None = None
    ) -> ChunkRows | None:
        """The chunk reader of ``table``, or None when the layout isn't the known one."""
        try:
            shadow = dict(
                conn.execute(
                    "select name, sql from sqlite_master where type = 'table' and name in (?, ?, ?, ?)",
                    [f"{table}_chunks", f"{table}_rowids", f"{table}_vector_chunks00", f"{table}_vector_chunks01"],
                ).fetchall()
            )
            if (
                f"{table}_vector_chunks01" in shadow
                or f"{table}_rowids" not in shadow
                or f"{table}_vector_chunks00" not in shadow
                or not _CHUNKS_SQL.match((shadow.get(f"{table}_chunks") or "").strip())
            ):
                return None
            rows = conn.execute(
                f'select (select count(*) from "{table}_rowids"), chunk_id, size, validity, rowids '
                f'from "{table}_chunks" order by chunk_id'
            ).fetchall()
        except sqlite3.Error:
            return None
        expected = rows[0][0] if rows else conn.execute(f'select count(*) from "{table}_rowids"').fetchone()[0]
        meta, where, id_parts, at = [], [], [], 0
        for _, chunk_id, size, validity, rowids in rows:
            if (
                not isinstance(size, int)
                or size <= 0
                or not isinstance(validity, bytes)
                or not isinstance(rowids, bytes)
                or len(validity) != (size + 7) // 8
                or len(rowids) != 8 * size
            ):
                return None
            valid = np.flatnonzero(np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little", count=size))
            meta.append((chunk_id, size, validity, rowids))
            where.append((at, valid))
            id_parts.append(np.frombuffer(rowids, "<i8")[valid])
            at += len(valid)
        ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int64)
        ordered = np.sort(ids)
        if at != expected or (len(ordered) > 1 and not (ordered[1:] != ordered[:-1]).all()):
            return None
        src = cls(conn, table, dim, meta, ids.astype(np.int64), where)
        if transform is not None:
            src.transform = transform
        return src

    def _chunk_rows(self, i: int, blob: Any) -> np.ndarray | None:
        _, size, _, _ = self._meta[i]
        if not isinstance(blob, bytes) or len(blob) != 4 * size * self.dim:
            return None
        src = np.frombuffer(blob, "<f4").reshape(size, self.dim)
        valid = self._where[i][1]
        block = src[valid] if len(valid) < size else src.copy()
        return self.transform(block)

    def chunk_of(self, rows: np.ndarray) -> np.ndarray:
        """The chunk (index into this reader's chunks) holding each row number."""
        firsts = np.array([w[0] for w in self._where], dtype=np.int64)
        return np.searchsorted(firsts, rows, side="right") - 1

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        firsts = np.array([w[0] for w in self._where], dtype=np.int64)
        chunk_of = self.chunk_of(rows)
        sql = f'select vectors from "{self.table}_vector_chunks00" where rowid = ?'
        for c in np.unique(chunk_of).tolist():
            got = self.conn.execute(sql, [self._meta[c][0]]).fetchone()
            block = self._chunk_rows(c, got[0] if got else None)
            if block is None:
                raise sqlite3.DatabaseError(f"{self.table}: chunk {self._meta[c][0]} changed while reading")
            mine = np.flatnonzero(chunk_of == c)
            out[mine] = block[rows[mine] - firsts[c]]
        return out

    def fill(self, out: np.ndarray, targets: np.ndarray | None) -> bool:
        t = self.table
        # one statement, so one snapshot; vectors table first and no ORDER BY, so that
        # SQLite streams the BLOBs instead of sorting them in a temporary b-tree
        cur = self.conn.execute(
            f'select c.chunk_id, c.validity, c.rowids, v.vectors from "{t}_vector_chunks00" v '
            f'cross join "{t}_chunks" c on c.chunk_id = v.rowid'
        )
        slot = {m[0]: i for i, m in enumerate(self._meta)}
        seen = np.zeros(len(self._meta), dtype=bool)
        for chunk_id, validity, rowids, blob in cur:
            i = slot.get(chunk_id)
            if i is None or seen[i] or self._meta[i][2] != validity or self._meta[i][3] != rowids:
                cur.close()
                return False
            block = self._chunk_rows(i, blob)
            if block is None:
                cur.close()
                return False
            seen[i] = True
            first = self._where[i][0]
            if targets is None:
                out[first : first + len(block)] = block
            else:
                out[targets[first : first + len(block)]] = block
        return bool(seen.all())


def read_vectors(conn: sqlite3.Connection, table: str) -> tuple[np.ndarray, np.ndarray]:
    """All ``(ids, matrix)`` of vec0 table ``table`` (ids ascending, raw float32 rows),
    read from vec0's chunks: 30x faster at 100k x 4096-d. Falls back
    to the SQL read when the layout is unexpected or a writer keeps changing the table."""
    dim = vec_table_dim(conn, table)
    if dim is not None:
        for _ in range(2):
            src = ChunkRows.open(conn, table, dim)
            if src is None:
                break
            order = np.argsort(src.ids, kind="stable")
            targets = np.empty(len(order), dtype=np.int64)
            targets[order] = np.arange(len(order))
            out = np.empty((len(order), dim), dtype=np.float32)
            if src.fill(out, targets):
                return src.ids[order], out
    return read_vectors_sql(conn, table)


def open_rows(
    conn: sqlite3.Connection, table: str, dim: int, *, fast: bool = True, transform: Transform | None = None
) -> RowSource:
    """The fastest reader that works for ``table``; ``transform`` is applied to every block."""
    if fast:
        src = ChunkRows.open(conn, table, dim, transform)
        if src is not None:
            return src
        log.info("semsearch: reading %s through SQL (unexpected vec0 layout)", table)
    return SqlRows(conn, table, transform)


def count_rows(conn: sqlite3.Connection, table: str) -> int:
    """Number of rows of vec0 table ``table``."""
    check_vec_name(table)
    try:  # vec0's id table: a plain b-tree, much cheaper to count than the vec0 table
        return int(conn.execute(f'select count(*) from "{table}_rowids"').fetchone()[0])
    except sqlite3.OperationalError:
        return int(conn.execute(f'select count(*) from "{table}"').fetchone()[0])


# -- streaming vec0 chunk by chunk -------------------------------------------------------------
def chunk_ids(conn: sqlite3.Connection, table: str) -> list[int]:
    """The ids of vec0 table ``table``'s chunks, in order ([] when it has none)."""
    check_vec_name(table)
    try:
        return [r[0] for r in conn.execute(f'select chunk_id from "{table}_chunks" order by chunk_id')]
    except sqlite3.OperationalError:
        return []


def read_chunks(
    conn: sqlite3.Connection, table: str, dim: int, chunks: list[int] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, raw float32 rows)`` of each chunk of ``table`` (``chunks``: only those),
    one chunk at a time and all from one statement, so one snapshot. Raises
    :class:`sqlite3.DatabaseError` when a chunk isn't in the layout this code knows."""
    check_vec_name(table)
    sql = (
        f'select c.chunk_id, c.size, c.validity, c.rowids, v.vectors from "{table}_vector_chunks00" v '
        f'cross join "{table}_chunks" c on c.chunk_id = v.rowid'
    )
    args: list[int] = []
    if chunks is not None:
        if not chunks:
            return
        sql += f" where v.rowid in ({','.join('?' * len(chunks))})"
        args = [int(c) for c in chunks]
    for chunk_id, size, validity, rowids, blob in conn.execute(sql, args):
        if (
            not isinstance(size, int)
            or not isinstance(validity, bytes)
            or not isinstance(rowids, bytes)
            or not isinstance(blob, bytes)
            or len(validity) != (size + 7) // 8
            or len(rowids) != 8 * size
            or len(blob) != 4 * size * dim
        ):
            raise sqlite3.DatabaseError(f"{table}: chunk {chunk_id} is not in the expected vec0 layout")
        valid = np.flatnonzero(np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little", count=size))
        block = np.frombuffer(blob, "<f4").reshape(size, dim)[valid]
        yield np.frombuffer(rowids, "<i8")[valid].astype(np.int64), block


def read_vectors_by_id(conn: sqlite3.Connection, table: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids found, raw float32 rows)`` of the given ids of vec0 table ``table``
    through SQL (slow per row: ~1 ms at 4096-d; for a few rows)."""
    check_vec_name(table)
    key = VEC_KEYS[table]
    got = (
        conn.execute(
            f"select {key}, embedding from {table} where {key} in ({','.join(str(int(i)) for i in ids)})"
        ).fetchall()
        if len(ids)
        else []
    )
    found = np.fromiter((r[0] for r in got), dtype=np.int64, count=len(got))
    dim = vec_table_dim(conn, table) or 0
    return found, np.frombuffer(b"".join(r[1] for r in got), "<f4").reshape(len(got), dim)


# -- float rows: a plain copy of a big table's vectors, for exact rescoring -------------------------
# vec0 keeps 1024 vectors in one BLOB; reading a few hundred scattered vectors from it
# costs ~1 s, from a plain table keyed by id ~15 ms (warm) or ~65 ms (cold): the compact
# search path keeps this copy. Store.write_vectors / delete_vectors keep it in step, in
# the writer's transaction.
#
# A row is a float32 scale followed by the vector in int16 (2 * dim + 4 bytes: 9.4 KB
# on disk at 4096-d with 64 KB pages, instead of 21.8 KB): each component is rounded to
# a multiple of the scale, max |component| / 32767, so a rescored cosine moves by ~1e-6
# (never more than 0.5 * sqrt(dim) / 32767, 1e-3 at 4096-d). int16, not float16: the
# same size, and numpy turns int16 into float32 fast enough that reading the copy costs
# what the float32 one did, where float16 cost 2.5x. Rows of 4 * dim bytes are the
# float32 copy earlier versions wrote: still read as they are, and rewritten compact
# when the index is next rebuilt.
COMPACT_MIN_DIM = 8  # below this a compact row (2 * dim + 4) could be as long as a float32 one
INT16_MAX = 32767


def float_row_bytes(dim: int) -> int:
    """Bytes of one row of the float-row copy written now (scale + int16; tiny dims float32)."""
    return 2 * dim + 4 if dim >= COMPACT_MIN_DIM else 4 * dim


def encode_float_rows(vectors: np.ndarray) -> list[bytes]:
    """The copy's row BLOBs of ``vectors`` (see above)."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < COMPACT_MIN_DIM:
        return [v.astype("<f4").tobytes() for v in np.atleast_2d(x)]
    top = np.abs(x).max(axis=1).astype(np.float64)
    scale = np.where(top > 0, top / INT16_MAX, 1.0)
    q = np.clip(np.rint(x / scale[:, None]), -INT16_MAX, INT16_MAX).astype("<i2")
    return [t.tobytes() + r.tobytes() for t, r in zip(scale.astype("<f4"), q)]


def decode_float_rows(blobs: list[bytes], dim: int) -> np.ndarray:
    """float32 rows ``[len(blobs), dim]`` of copy rows, compact or float32 (each
    :func:`float_row_is_valid`)."""
    width = float_row_bytes(dim)
    if blobs and width != 4 * dim and all(len(b) == width for b in blobs):  # the usual case: no copies
        return _decode_compact(b"".join(blobs), len(blobs), dim)
    out = np.empty((len(blobs), dim), dtype=np.float32)
    compact = [i for i, b in enumerate(blobs) if len(b) != 4 * dim]
    full = [i for i, b in enumerate(blobs) if len(b) == 4 * dim]
    if full:
        out[full] = np.frombuffer(b"".join(blobs[i] for i in full), "<f4").reshape(len(full), dim)
    if compact:
        out[compact] = _decode_compact(b"".join(blobs[i] for i in compact), len(compact), dim)
    return out


def _decode_compact(buf: bytes, n: int, dim: int) -> np.ndarray:
    width = 2 * dim + 4
    scale = np.ndarray((n,), "<f4", buffer=buf, strides=(width,))
    q = np.ndarray((n, dim), "<i2", buffer=buf, offset=4, strides=(width, 2))
    return q.astype(np.float32) * scale[:, None]


def float_row_is_valid(blob: Any, dim: int) -> bool:
    """Whether ``blob`` is a row of the copy for ``dim``-d vectors (either form)."""
    return isinstance(blob, bytes) and len(blob) in (4 * dim, float_row_bytes(dim))


def float_rows_table(table: str) -> str:
    """The name of ``table``'s float-row copy."""
    check_vec_name(table)
    return f"{table}_floats"


def has_float_rows(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` has a float-row copy."""
    name = float_rows_table(table)
    return table_exists(conn, name)


def create_float_rows(conn: sqlite3.Connection, table: str) -> None:
    """Create ``table``'s (empty) float-row copy if missing (inside a transaction)."""
    conn.execute(
        f'create table if not exists "{float_rows_table(table)}" (id integer primary key, embedding blob not null)'
    )


def drop_float_rows(conn: sqlite3.Connection, table: str) -> None:
    """Drop ``table``'s float-row copy if it exists (inside a transaction)."""
    conn.execute(f'drop table if exists "{float_rows_table(table)}"')


def write_float_rows(conn: sqlite3.Connection, table: str, ids: Any, vectors: np.ndarray) -> None:
    """Insert or replace rows of ``table``'s float-row copy (compact form, see above)."""
    conn.executemany(
        f'insert or replace into "{float_rows_table(table)}"(id, embedding) values (?, ?)',
        ((int(i), b) for i, b in zip(ids, encode_float_rows(vectors))),
    )


def delete_float_rows(conn: sqlite3.Connection, table: str, ids: Any) -> None:
    """Delete rows of ``table``'s float-row copy."""
    conn.executemany(f'delete from "{float_rows_table(table)}" where id = ?', ((int(i),) for i in ids))


def read_float_rows(
    conn: sqlite3.Connection, table: str, ids: np.ndarray, dim: int, *, fallback: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids found, float32 rows)`` of the given ids: from the float-row copy (int16
    precision, or float32 in copies written before), and (``fallback``) from vec0 for
    any the copy lacks."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    want = ",".join(str(int(i)) for i in ids)
    try:
        got = conn.execute(f'select id, embedding from "{float_rows_table(table)}" where id in ({want})').fetchall()
    except sqlite3.OperationalError:
        got = []
    got = [r for r in got if float_row_is_valid(r[1], dim)]
    found = np.fromiter((r[0] for r in got), dtype=np.int64, count=len(got))
    rows = decode_float_rows([r[1] for r in got], dim)
    missing = np.setdiff1d(np.asarray(ids, dtype=np.int64), found) if fallback else []
    if len(missing):
        more_ids, more = read_vectors_by_id(conn, table, missing)
        if len(more_ids):
            found = np.concatenate([found, more_ids])
            rows = np.concatenate([rows, more.reshape(len(more_ids), dim)])
    return found, rows


# -- compact codes: one row per IVF list ------------------------------------------------------------
def code_lists_table(table: str) -> str:
    """The name of ``table``'s compact-code lists."""
    check_vec_name(table)
    return f"{table}_codes"


def has_code_lists(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` has stored compact-code lists."""
    name = code_lists_table(table)
    return table_exists(conn, name)


def write_code_lists(
    conn: sqlite3.Connection,
    table: str,
    stamp: str,
    lists: Iterable[tuple[int, np.ndarray, np.ndarray]],
    *,
    replace_all: bool = False,
) -> None:
    """Store ``(list number, ids int64, codes uint8 rows)`` per list under ``stamp``
    (inside a transaction); ``replace_all`` first deletes every stored list. Lists not
    written keep their rows and get the new stamp."""
    name = code_lists_table(table)
    conn.execute(
        f'create table if not exists "{name}" (list integer primary key, stamp text not null, '
        "count integer not null, ids blob not null, codes blob not null)"
    )
    if replace_all:
        conn.execute(f'delete from "{name}"')
    conn.executemany(
        f'insert or replace into "{name}"(list, stamp, count, ids, codes) values (?, ?, ?, ?, ?)',
        (
            (int(i), stamp, len(ids), np.asarray(ids, "<i8").tobytes(), np.ascontiguousarray(codes, np.uint8).tobytes())
            for i, ids, codes in lists
        ),
    )
    conn.execute(f'update "{name}" set stamp = ? where stamp != ?', [stamp, stamp])


def read_code_lists(conn: sqlite3.Connection, table: str) -> Iterator[tuple[int, str, int, bytes, bytes]]:
    """``(list number, stamp, count, ids BLOB, codes BLOB)`` of each stored list, in order."""
    try:
        cur = conn.execute(f'select list, stamp, count, ids, codes from "{code_lists_table(table)}" order by list')
    except sqlite3.OperationalError:
        return
    yield from cur


def drop_code_lists(conn: sqlite3.Connection, table: str) -> None:
    """Drop ``table``'s compact-code lists if stored (inside a transaction)."""
    conn.execute(f'drop table if exists "{code_lists_table(table)}"')
