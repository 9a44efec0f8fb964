"""The process-wide cache of things read from database files (vector matrices, word
spaces, table-function results, loaded backbones): one LRU with one lock, and one load
at a time per key so that concurrent first queries share the work."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ProcessCache(Generic[V]):
    """An LRU of at most ``entries`` values.

    Each key has a ``group`` (e.g. one table of one file); storing a value drops the
    group's other entries, which are older versions of the same thing.
    """

    def __init__(self, entries: int):
        self.entries = entries
        self._items: OrderedDict[Hashable, tuple[Hashable, V]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable) -> V | None:
        """The cached value of ``key``, or None."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: Hashable, value: V, group: Hashable = None) -> None:
        """Store ``value`` under ``key``, replacing the other entries of ``group``."""
        with self._lock:
            if group is not None:
                for stale in [k for k, (g, _) in self._items.items() if g == group and k != key]:
                    del self._items[stale]
            self._items[key] = (group, value)
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def get_or_load(self, key: Hashable, load: Callable[[], V], group: Hashable = None) -> V:
        """The cached value of ``key``, loading it (once, whoever asks at the same time) if missing."""
        hit = self.get(key)
        if hit is not None:
            return hit
        with self._lock:
            lock = self._loading.setdefault(group if group is not None else key, threading.Lock())
        with lock:
            hit = self.get(key)
            if hit is None:
                hit = load()
                self.put(key, hit, group)
        return hit

    def keys(self) -> list[Hashable]:
        """The keys held now, oldest first."""
        with self._lock:
            return list(self._items)

    def forget(self, group: Hashable) -> None:
        """Drop every entry of ``group``."""
        with self._lock:
            for stale in [k for k, (g, _) in self._items.items() if g == group]:
                del self._items[stale]

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
