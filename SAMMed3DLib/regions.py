"""Axis-aligned voxel regions of an image: ``(index_start, size)`` in SimpleITK index order (x, y, z).

Plain numpy, no torch and no Slicer, so that the engine and the MRML adapter share one definition.
``None`` stands for an empty region throughout.
"""

from typing import Optional, Sequence, Tuple

import numpy as np

Index3 = Tuple[int, int, int]
Region = Tuple[Index3, Index3]
"""(index_start, size) in SimpleITK index order (x, y, z)."""


def from_bounds(lo: Sequence[float], hi: Sequence[float]) -> Optional[Region]:
    """The half-open box ``[lo, hi)`` as a region, or None when it is empty along any axis."""
    if np.any(np.asarray(hi) <= np.asarray(lo)):
        return None
    return tuple(int(v) for v in lo), tuple(int(h - v) for v, h in zip(lo, hi))


def union(a: Optional[Region], b: Optional[Region]) -> Optional[Region]:
    """The bounding region of two regions."""
    if a is None or b is None:
        return a if b is None else b
    lo = np.minimum(a[0], b[0])
    hi = np.maximum(np.add(a[0], a[1]), np.add(b[0], b[1]))
    return from_bounds(lo, hi)


def intersection(a: Optional[Region], b: Optional[Region]) -> Optional[Region]:
    """The voxels two regions share."""
    if a is None or b is None:
        return None
    lo = np.maximum(a[0], b[0])
    hi = np.minimum(np.add(a[0], a[1]), np.add(b[0], b[1]))
    return from_bounds(lo, hi)


def clip(region: Optional[Region], size: Sequence[int]) -> Optional[Region]:
    """``region`` cut to an image of ``size`` voxels (x, y, z)."""
    return intersection(region, ((0, 0, 0), tuple(int(n) for n in size)))
