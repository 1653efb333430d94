"""Linear interpolation between an image grid and a ROI grid, separable: one small matrix per axis.

A ROI's axes are the image's own axes, permuted and flipped (``ToCanonical`` keeps obliquity), at
another spacing. So the map from a ROI index to an image index is, per axis, a scale and an offset, and
trilinear interpolation from one grid onto the other factors into three 1-D interpolations: an array
is resampled by three contractions with per-axis matrices (rows: target voxels, columns: source voxels).

Geometry (where the grids lie) comes from :class:`SAMMed3DLib.roi.Grid`; this module only does the
arithmetic, with the rules of SimpleITK's linear interpolator (``itk::LinearInterpolateImageFunction``
inside ``itk::ResampleImageFilter``): a point is inside the source when its continuous index ``c`` along
every axis satisfies ``-0.5 <= c < n - 0.5`` (the voxels' extent, not their centres), and within the
outer half-voxel rim the border voxel's value is used (clamped, no extrapolation). Outside, the caller
decides (the default value, or "keep what is there").

Axis conventions: "index order" is SimpleITK's (x, y, z); numpy arrays of SimpleITK images are z-y-x,
so index axis ``a`` is numpy dimension ``2 - a``.
"""

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np
import torch

if TYPE_CHECKING:
    from .roi import Grid

AXIS_TOLERANCE = 1e-6
"""Largest off-axis component (relative) for which two grids count as sharing their axes."""


@dataclass(frozen=True)
class AxisMap:
    """One target axis: the source axis it runs along and ``source index = scale * target index + offset``."""

    source_axis: int
    scale: float
    offset: float

    def coordinates(self, target_indices: np.ndarray) -> np.ndarray:
        """Continuous source indices (float64) of the given target indices along this axis."""
        return self.scale * np.asarray(target_indices, dtype=float) + self.offset


def axis_maps(source: "Grid", target: "Grid") -> Tuple[AxisMap, AxisMap, AxisMap]:
    """Per target axis (index order), its map onto the source grid; ValueError when the grids' axes
    are not the same lines (then no separable interpolation exists)."""
    affine = np.linalg.inv(source.matrix) @ target.matrix  # target index offsets → source index offsets
    offset = source.to_index(np.asarray(target.origin, dtype=float))
    maps = []
    for axis in range(3):
        column = affine[:, axis]
        along = int(np.argmax(np.abs(column)))
        if np.abs(np.delete(column, along)).max() > AXIS_TOLERANCE * abs(column[along]):
            raise ValueError(f"target axis {axis} is not along a source axis (column {column.tolist()})")
        maps.append(AxisMap(along, float(column[along]), float(offset[along])))
    if sorted(m.source_axis for m in maps) != [0, 1, 2]:
        raise ValueError("two target axes run along the same source axis")
    return tuple(maps)


def inside(coordinates: np.ndarray, size: int) -> np.ndarray:
    """Which continuous indices lie in the extent of ``size`` voxels (SimpleITK's ``IsInsideBuffer``)."""
    return (coordinates >= -0.5) & (coordinates < size - 0.5)


def linear_taps(coordinates: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first voxel, second voxel, weight of the second) of 1-D linear interpolation at continuous indices,
    clamped to the border voxels as SimpleITK does in the outer half-voxel rim (callers mask what is outside)."""
    clamped = np.clip(coordinates, 0.0, size - 1.0)
    first = np.minimum(np.floor(clamped).astype(np.int64), size - 1)
    return first, np.minimum(first + 1, size - 1), clamped - first


def linear_matrix(coordinates: np.ndarray, size: int, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Dense float64 matrix ``[len(coordinates), size]``: row r interpolates linearly at ``coordinates[r]``.

    Rows are zero where ``rows`` (default: :func:`inside`) is False.
    """
    first, second, weight = linear_taps(coordinates, size)
    keep = inside(coordinates, size) if rows is None else rows
    matrix = np.zeros((len(coordinates), size))
    index = np.arange(len(coordinates))
    np.add.at(matrix, (index, first), np.where(keep, 1.0 - weight, 0.0))
    np.add.at(matrix, (index, second), np.where(keep, weight, 0.0))
    return matrix


def upsample_matrix(size: int, factor: int) -> np.ndarray:
    """``[size * factor, size]``: torch's linear upsampling with ``align_corners=False`` along one axis
    (source coordinate ``(o + 0.5) / factor - 0.5``, clamped at 0 and at the last voxel)."""
    coordinates = (np.arange(size * factor) + 0.5) / factor - 0.5
    return linear_matrix(coordinates, size, rows=np.ones(size * factor, dtype=bool))


def support(matrix: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per row, the first and one past the last non-zero column (0, 0 for an all-zero row)."""
    nonzero = matrix != 0
    any_ = nonzero.any(axis=1)
    first = np.where(any_, np.argmax(nonzero, axis=1), 0)
    last = np.where(any_, matrix.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
    return first, last


@dataclass(frozen=True)
class Taps:
    """Two-tap linear interpolation rows along one axis: row r is
    ``w_first[r] * source[first[r]] + w_second[r] * source[second[r]]`` (both weights 0: a zero row)."""

    first: np.ndarray
    second: np.ndarray
    w_first: np.ndarray
    w_second: np.ndarray

    @classmethod
    def at(cls, coordinates: np.ndarray, size: int, keep: np.ndarray) -> "Taps":
        """Taps at continuous indices into ``size`` voxels; rows outside the source or not in ``keep`` are zero."""
        first, second, weight = linear_taps(coordinates, size)
        rows = inside(coordinates, size) & keep
        return cls(first, second, np.where(rows, 1.0 - weight, 0.0), np.where(rows, weight, 0.0))

    def span(self) -> Tuple[int, int]:
        """The source voxels the non-zero rows read: ``[lo, hi)`` (empty when every row is zero)."""
        used = (self.w_first != 0) | (self.w_second != 0)
        if not used.any():
            return 0, 0
        return int(self.first[used].min()), int(self.second[used].max()) + 1

    def shifted(self, lo: int) -> "Taps":
        """The same taps reading from a block that starts at source voxel ``lo`` (unused rows read voxel 0)."""
        used = (self.w_first != 0) | (self.w_second != 0)
        return Taps(
            np.where(used, self.first - lo, 0), np.where(used, self.second - lo, 0), self.w_first, self.w_second
        )

    def apply(self, values: torch.Tensor, dim: int) -> torch.Tensor:
        """``values`` (any dtype, any device) interpolated along ``dim``: float32, ``len(rows)`` long there."""
        device = values.device
        shape = [1] * values.dim()
        shape[dim] = -1
        a = values.index_select(dim, torch.as_tensor(self.first, device=device)).float()
        b = values.index_select(dim, torch.as_tensor(self.second, device=device)).float()
        a.mul_(torch.as_tensor(self.w_first, dtype=torch.float32, device=device).reshape(shape))
        return a.addcmul_(b, torch.as_tensor(self.w_second, dtype=torch.float32, device=device).reshape(shape))


def sample(
    volume_zyx: np.ndarray,
    source: "Grid",
    target: "Grid",
    keep: Optional[Sequence[np.ndarray]] = None,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """``volume_zyx`` (the z-y-x voxels of an image on ``source``) linearly interpolated at the voxel centres
    of ``target``: float32 on ``device``, in ``target``'s index order ``[i, j, k]``; 0 outside the source and
    where ``keep[axis]`` (one boolean per target index along each target axis) is False.

    Only the block of source voxels the samples read is handed to torch (without a copy on the CPU, one
    upload on a GPU); each axis is then one two-tap interpolation (index_select and a weighted sum).
    """
    maps = axis_maps(source, target)
    taps = []  # per numpy dimension d of the volume: (target axis along it, taps over the source voxels)
    for d in range(3):
        axis = next(t for t, m in enumerate(maps) if m.source_axis == 2 - d)
        coordinates = maps[axis].coordinates(np.arange(target.size[axis]))
        rows = np.ones(target.size[axis], dtype=bool) if keep is None else np.asarray(keep[axis], dtype=bool)
        taps.append((axis, Taps.at(coordinates, source.size[2 - d], rows)))
    spans = [t.span() for _, t in taps]
    if any(lo == hi for lo, hi in spans):
        return torch.zeros(tuple(target.size), dtype=torch.float32, device=device)
    block = _as_tensor(volume_zyx[tuple(slice(lo, hi) for lo, hi in spans)]).to(device)
    # Shrink first along the axis that shrinks most: the later passes then run on less data.
    order = sorted(range(3), key=lambda d: len(taps[d][1].first) / (spans[d][1] - spans[d][0]))
    for d in order:
        block = taps[d][1].shifted(spans[d][0]).apply(block, d)
    axes = [axis for axis, _ in taps]  # target axis of each dimension of ``block``
    return block.permute([axes.index(t) for t in range(3)]).contiguous()


def _as_tensor(values: np.ndarray) -> torch.Tensor:
    """A torch view of a (possibly read-only) numpy array; it is only read, never written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(values)
