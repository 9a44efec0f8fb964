"""Whether a database file changed under this process's caches.

Cache keys hold :func:`cache_version`: the writers' ``generation`` (bumped by every
pipeline step) and a per-file epoch that moves whenever any change made outside those
writers may have happened: another connection or process committed (``PRAGMA
data_version`` of a connection we have seen moved), or the file and its ``-wal`` differ
from when we last looked (for a connection seen for the first time). Writes this
connection made itself (``total_changes`` moved) are the writers' business, so a writer's
own matrices stay cached between its transactions.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from semsearch_sqlite.storage.rows import database_key, generation

_lock = threading.Lock()
# database key -> (epoch, file stamp when last looked)
_epochs: dict[str, tuple[int, tuple[int, ...]]] = {}
# id(connection) -> (data_version, total_changes) when last looked
_connections: dict[int, tuple[int, int]] = {}
_MAX_CONNECTIONS = 10_000  # ids of closed connections are forgotten past this many


def _file_stamp(path: str) -> tuple[int, ...]:
    stamp: list[int] = []
    for name in (path, path + "-wal"):
        try:
            st = os.stat(name)
            stamp += [st.st_ino, st.st_size, st.st_mtime_ns]
        except OSError:
            stamp += [0, 0, 0]
    return tuple(stamp)


def change_epoch(conn: sqlite3.Connection, db: str | None = None) -> int:
    """A number that moves whenever the file behind ``conn`` (whose ``database_key`` is
    ``db``, when the caller has it) may have been changed by someone else since this
    process last looked (0 for in-memory databases)."""
    db = db or database_key(conn)
    if db.startswith("memory:"):
        return 0
    version = conn.execute("pragma data_version").fetchone()[0]
    total = conn.total_changes
    stamp = _file_stamp(db)
    with _lock:
        epoch, last_stamp = _epochs.get(db, (0, stamp))
        seen = _connections.get(id(conn))
        if seen is None:
            moved = stamp != last_stamp
        else:
            moved = seen[0] != version or (stamp != last_stamp and seen[1] == total)
        if len(_connections) >= _MAX_CONNECTIONS:
            _connections.clear()
        _connections[id(conn)] = (version, total)
        _epochs[db] = (epoch + 1 if moved else epoch, stamp)
        return epoch + 1 if moved else epoch


def cache_version(conn: sqlite3.Connection, db: str | None = None) -> tuple[int, int]:
    """What a cached result of ``conn``'s file is keyed on: ``(generation, epoch)``."""
    return generation(conn), change_epoch(conn, db)
