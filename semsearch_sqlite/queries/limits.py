"""The one rule for how many results a query may ask for (``k``), for every face: a
whole number from 1; more than the most a query answers (``MAX_K``, or a page's
configured ``max_k``) gives that most. The CLI's ``-k``, the pages' ``?k=``, Python's
``k=`` and the SQL functions' ``k`` all mean the same, and refuse the same values."""

from __future__ import annotations

from typing import Any

from semsearch_sqlite.errors import QueryError
from semsearch_sqlite.vectors.matrix import MAX_K, clamp_k


def result_count(k: Any, default: int = 10, maximum: int = MAX_K) -> int:
    """``k`` as a number of results: None or empty gives ``default``; a whole number
    from 1 (``"5"``, ``5.0``), at most ``maximum``. Anything else is a QueryError
    ("k must be at least 1, not 0"), the same message wherever it was typed."""
    if k is None or (isinstance(k, str) and not k.strip()):
        return min(default, maximum)
    return min(clamp_k(k, default), maximum)


def k_problem(k: Any) -> str | None:
    """Why ``k`` is refused (:func:`result_count`'s message), or None when it is fine."""
    try:
        result_count(k)
    except QueryError as e:
        return str(e)
    return None
