"""Voxels the user set by hand in a session's mask (e.g. painted with Slicer's Segment Editor between two clicks):
painted voxels stay inside and erased ones outside for the rest of the session, whatever later clicks predict.

:class:`HandEdits` holds them over one bounding region; a session keeps it in its state (undo and reset take it
back with the edit) and applies it after every paste. numpy and SimpleITK only; regions are ``(index_start,
size)`` in SimpleITK index order (x, y, z), voxel arrays z-y-x, as everywhere in the engine.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from . import regions
from .errors import InputError
from .regions import Region, read_region, write_region, zyx_slices


@dataclass(frozen=True)
class HandEdits:
    """Over ``region``: ``painted`` voxels are kept inside the mask, ``erased`` ones outside (bool, z-y-x)."""

    region: Region
    painted: np.ndarray
    erased: np.ndarray

    def merged(self, region: Region, painted: np.ndarray, erased: np.ndarray) -> "HandEdits":
        """These edits followed by a newer one over ``region`` (the newer one wins where both set a voxel)."""
        both = regions.union(self.region, region)
        old_p, old_e, new_p, new_e = (_within(values, r, both) for values, r in
                                      ((self.painted, self.region), (self.erased, self.region),
                                       (painted, region), (erased, region)))  # fmt: skip
        return HandEdits(both, new_p | (old_p & ~new_e), new_e | (old_e & ~new_p))

    def hold(self, mask: sitk.Image, region: Region, changed: np.ndarray) -> np.ndarray:
        """After a paste into ``region`` of ``mask`` (``changed``: its flips, bool z-y-x over ``region``), put
        the held voxels back in ``mask``; returns the paste's flips with that correction."""
        overlap = regions.intersection(self.region, region)
        if overlap is None:
            return changed
        own = _relative(overlap, self.region)
        values = read_region(mask, overlap)
        fix = (self.painted[own] & (values == 0)) | (self.erased[own] & (values != 0))
        if fix.any():
            values[fix] ^= 1
            write_region(mask, overlap, values)
            changed = changed.copy()
            changed[_relative(overlap, region)] ^= fix
        return changed


def merge(edits: Optional[HandEdits], region: Region, painted: np.ndarray, erased: np.ndarray) -> HandEdits:
    """``edits`` (None: none yet) followed by a newer hand edit."""
    if edits is None:
        return HandEdits(region, painted, erased)
    return edits.merged(region, painted, erased)


def checked(region: Sequence, painted: np.ndarray, erased: np.ndarray,
            size: Sequence[int]) -> Tuple[Region, np.ndarray, np.ndarray]:  # fmt: skip
    """A hand edit as the session takes it: ``region`` inside an image of ``size`` (x, y, z) voxels, ``painted``
    and ``erased`` bool arrays shaped like it (z, y, x) that never both set a voxel; InputError otherwise."""
    try:
        start, extent = (tuple(int(v) for v in part) for part in region)
    except (TypeError, ValueError) as exc:
        raise InputError(f"a hand edit's region must be ((x, y, z), (sx, sy, sz)), got {region!r}") from exc
    box = (start, extent)
    if len(start) != 3 or len(extent) != 3 or min(extent) < 1 or regions.clip(box, size) != box:
        raise InputError(f"a hand edit's region {box} lies outside the image ({tuple(size)} voxels)")
    shape = extent[::-1]
    painted, erased = (np.asarray(values, dtype=bool) for values in (painted, erased))
    if painted.shape != shape or erased.shape != shape:
        raise InputError(f"a hand edit's voxels must be {shape} (z, y, x) for its region, got "
                         f"{painted.shape} and {erased.shape}")  # fmt: skip
    if (painted & erased).any():
        raise InputError("a hand edit cannot both paint and erase the same voxel")
    return box, painted, erased


def _relative(inner: Region, outer: Region) -> Tuple[slice, slice, slice]:
    """numpy (z, y, x) slices of ``inner`` within an array covering ``outer``."""
    return zyx_slices((tuple(np.subtract(inner[0], outer[0])), inner[1]))


def _within(values: np.ndarray, region: Region, into: Region) -> np.ndarray:
    """``values`` of ``region`` placed in a False array covering ``into`` (which contains ``region``)."""
    out = np.zeros(into[1][::-1], dtype=bool)
    out[_relative(region, into)] = values
    return out
