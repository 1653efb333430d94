"""Overlap measures of binary masks (plain numpy, no torch and no Slicer, so every room can use them)."""

import numpy as np
from numpy.typing import ArrayLike


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice overlap ``2 |A ∩ B| / (|A| + |B|)`` of two masks of the same shape (non-zero = inside, any axis
    order as long as both share it); 1.0 when both are empty."""
    x, y = np.asarray(a) != 0, np.asarray(b) != 0
    if x.shape != y.shape:
        raise ValueError(f"Dice of masks of different shapes {x.shape} and {y.shape}")
    total = int(np.count_nonzero(x)) + int(np.count_nonzero(y))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(x & y)) / total
