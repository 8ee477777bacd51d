"""Array helpers on the scan's hot path.

Why not ``np.unique``: since numpy 2.3 it hashes, which costs ten to fifteen times a sort on
the few thousand ids a message has (0.6 ms against 0.04 ms for 4,000 ids, measured), and it
ran three times per scan.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sorted_distinct"]


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values in ascending order, as ``np.unique`` gives them (a new array)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
