"""Axis-aligned voxel regions of an image: ``(index_start, size)`` in SimpleITK index order (x, y, z).

Plain numpy and SimpleITK, no torch and no Slicer, so that the engine, the torch-free client and the MRML
adapter share one definition. ``None`` stands for an empty region throughout.
"""

import ctypes
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

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


def zyx_slices(region: Region) -> Tuple[slice, slice, slice]:
    """numpy (z, y, x) slices of a region (its numpy array of an image is z-y-x)."""
    (x, y, z), (sx, sy, sz) = region
    return slice(z, z + sz), slice(y, y + sy), slice(x, x + sx)


def read_region(image: sitk.Image, region: Region) -> np.ndarray:
    """A copy of the image's voxels in ``region`` (z, y, x), read by SimpleITK's region extraction, which reads the
    pixel buffer as it is: a numpy view of an image that shares its buffer (a session's mask snapshot) would
    first copy the whole volume (~40 ms for 512 x 512 x 300)."""
    index, size = region
    part = sitk.RegionOfInterest(image, [int(n) for n in size], [int(i) for i in index])
    return sitk.GetArrayFromImage(part)


def writable_voxels(image: sitk.Image) -> np.ndarray:
    """The image's z-y-x voxels as a writable numpy view of its own pixel buffer (no copy).

    SimpleITK shares a buffer between an image and its copies until one is modified; taking the view first
    makes this image's buffer its own (as ``GetArrayViewFromImage`` does), so copies made before keep their
    voxels (the session's mask snapshots). Valid until SimpleITK next copies or modifies ``image``: take it
    anew for every write, and keep ``image`` alive while using it.
    """
    view = sitk.GetArrayViewFromImage(image)  # read-only, and now unshared
    buffer = (ctypes.c_char * view.nbytes).from_address(view.__array_interface__["data"][0])
    return np.frombuffer(buffer, dtype=view.dtype).reshape(view.shape)


def write_region(image: sitk.Image, region: Region, values: np.ndarray) -> None:
    """Write z-y-x ``values`` into ``region`` of ``image`` in place (no copy of the whole image)."""
    writable_voxels(image)[zyx_slices(region)] = values
