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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

if TYPE_CHECKING:
    from .roi import Grid

AXIS_TOLERANCE = 1e-6
"""Largest off-axis component (relative) for which two grids count as sharing their axes."""


@dataclass(frozen=True)
class AxisMap:
    """One target axis: the source axis it runs along and the arithmetic that gives its source indices.

    As ITK's resampler does it, to the last bit, so that a voxel on an exact tie with a source face
    (``c == n - 0.5``) falls on the same side: a target index ``i`` goes to the physical point
    ``origin + column * i`` (LPS mm), then to the source index ``row · (point - source_origin)``, term by term
    with ITK's own inverse matrix (``Grid.inverse``). Along the target's first axis (ITK's scanline) only the
    line's two ends are mapped so, and the indices between are ``start + (i / n) * (end - start)``, n the
    line's length. Exact for grids whose axes are the same lines; on an oblique pair the other target
    indices are taken as 0.
    """

    source_axis: int
    origin: Tuple[float, float, float]
    """Target origin, LPS mm."""
    column: Tuple[float, float, float]
    """LPS mm per target index along this axis (direction column × spacing)."""
    source_origin: Tuple[float, float, float]
    row: Tuple[float, float, float]
    """The source's physical-to-index row of ``source_axis``."""
    scanline: int = 0
    """The target's size along this axis when it is the target's first axis (ITK's scanline), else 0."""

    def coordinates(self, target_indices: np.ndarray) -> np.ndarray:
        """Continuous source indices (float64) of the given target indices along this axis."""
        indices = np.asarray(target_indices, dtype=float)
        if not self.scanline:
            return self._through_point(indices)
        start, end = self._through_point(np.array([0.0, float(self.scanline)]))
        return start + indices / float(self.scanline) * (end - start)

    def _through_point(self, indices: np.ndarray) -> np.ndarray:
        """Source indices of target indices through their physical points, in ITK's order of operations."""
        result = np.zeros_like(indices)
        for b in range(3):
            result = result + self.row[b] * ((self.origin[b] + self.column[b] * indices) - self.source_origin[b])
        return result


def axis_maps(source: "Grid", target: "Grid") -> Tuple[AxisMap, AxisMap, AxisMap]:
    """Per target axis (index order), its map onto the source grid; ValueError when the grids' axes
    are not the same lines (then no separable interpolation exists)."""
    affine = source.inverse @ target.matrix  # target index offsets → source index offsets
    maps = []
    for axis in range(3):
        column = affine[:, axis]
        along = int(np.argmax(np.abs(column)))
        if np.abs(np.delete(column, along)).max() > AXIS_TOLERANCE * abs(column[along]):
            raise ValueError(f"target axis {axis} is not along a source axis (column {column.tolist()})")
        maps.append(
            AxisMap(
                along,
                tuple(float(v) for v in target.origin),
                tuple(float(v) for v in target.matrix[:, axis]),
                tuple(float(v) for v in source.origin),
                tuple(float(v) for v in source.inverse[along]),
                int(target.size[0]) if axis == 0 else 0,
            )
        )
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


COLUMN_CHUNK = 16
"""Output columns per matrix product along the innermost dimension (a 128-row block then stays under
OpenBLAS's threshold for threading, ~262k multiply-adds)."""


def _taps(matrix: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first column, second column, their weights) of each row of a linear-interpolation matrix (at most
    two neighbouring non-zeros a row; a zero row reads column 0 with weight 0)."""
    first, last = support(matrix)
    second = np.maximum(last - 1, first)
    rows = np.arange(len(matrix))
    return first, second, matrix[rows, first], np.where(second > first, matrix[rows, second], 0.0)


def two_tap(
    values: torch.Tensor, dim: int, matrix: np.ndarray, dtype: torch.dtype, rowwise: Optional[bool] = None
) -> torch.Tensor:
    """``values`` with the outer dimension ``dim`` replaced by ``matrix @`` along it, for a linear-interpolation
    ``matrix``, in ``dtype``: row r is ``w0 * values[i] + w1 * values[i + 1]``.

    On a GPU, two gathers and one weighted sum over the whole array. On a CPU (``rowwise``, the default
    there), row by row in numpy on the same memory: each step's source rows (converted from the volume's
    type) and result stay in cache, and single-threaded ufuncs do not stall as torch's parallel kernels on
    small blocks do when the cores are shared (~10 ms a call under load).
    """
    first, second, w_first, w_second = _taps(matrix)
    moved = values.movedim(dim, 0)
    out = torch.empty((len(matrix), *moved.shape[1:]), dtype=dtype, device=values.device)
    if not (values.device.type == "cpu" if rowwise is None else rowwise):
        shape = [-1] + [1] * (values.dim() - 1)
        a, b = (moved.index_select(0, torch.from_numpy(i).to(values.device)).to(dtype) for i in (first, second))
        weights = [torch.from_numpy(w).to(values.device, dtype).reshape(shape) for w in (w_first, w_second)]
        torch.mul(a, weights[0], out=out)
        return out.addcmul_(b, weights[1]).movedim(0, dim)
    source, target = moved.numpy(), out.numpy()

    def rows(part: range) -> None:
        scratch = np.empty(target.shape[1:], dtype=target.dtype)
        for r in part:
            _row(source, first[r], second[r], w_first[r], w_second[r], target[r], scratch)

    in_parallel(len(matrix), rows)
    return out.movedim(0, dim)


def _row(source: np.ndarray, i: int, j: int, wi: float, wj: float, out: np.ndarray, scratch: np.ndarray) -> None:
    """``out = wi * source[i] + wj * source[j]`` (numpy, in place)."""
    np.multiply(source[i], wi, out=out)
    if wj != 0:
        out += np.multiply(source[j], wj, out=scratch)


def two_tap_then_innermost(
    values: torch.Tensor, dim: int, matrix: np.ndarray, innermost: np.ndarray, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`two_tap` along the outer ``dim``, then :func:`contract_innermost` with ``innermost``. On a CPU
    fused row by row: each interpolated row is contracted while it is in cache, and the intermediate array
    is never stored (less memory, no strided copies)."""
    if values.device.type != "cpu":
        return contract_innermost(two_tap(values, dim, matrix, dtype), innermost, dtype)
    first, second, w_first, w_second = _taps(matrix)
    moved = values.movedim(dim, 0)
    out = torch.empty((len(matrix), *moved.shape[1:-1], len(innermost)), dtype=dtype)
    source, target = moved.numpy(), out.numpy()
    columns = _column_chunks(innermost)

    def rows(part: range) -> None:
        row, scratch = np.empty(moved.shape[1:], dtype=target.dtype), np.empty(moved.shape[1:], dtype=target.dtype)
        for r in part:
            _row(source, first[r], second[r], w_first[r], w_second[r], row, scratch)
            for c0, c1, k0, k1 in columns:
                if k1 <= k0:
                    target[r, ..., c0:c1] = 0
                else:
                    # Small enough for a single-threaded BLAS call (no second thread pool wakes up).
                    np.matmul(row[..., k0:k1], innermost[c0:c1, k0:k1].T, out=target[r, ..., c0:c1])

    in_parallel(len(matrix), rows)
    return out.movedim(0, dim)


def in_parallel(count: int, work: Callable[[range], None]) -> None:
    """``work`` over ``range(count)`` split into one part per torch CPU thread, run on as many Python threads
    (numpy's ufuncs and BLAS release the GIL; each part writes only its own rows)."""
    threads = max(1, min(torch.get_num_threads(), count))
    if threads == 1:
        work(range(count))
        return
    bounds = np.linspace(0, count, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))


def _column_chunks(matrix: np.ndarray) -> List[Tuple[int, int, int, int]]:
    """Groups of ``COLUMN_CHUNK`` output columns (rows of ``matrix``) with the band of source columns they read:
    (c0, c1, k0, k1); k1 <= k0 when they read nothing."""
    first, last = support(matrix)
    chunks = []
    for c0 in range(0, len(matrix), COLUMN_CHUNK):
        c1 = min(c0 + COLUMN_CHUNK, len(matrix))
        chunks.append((c0, c1, int(first[c0:c1].min()), int(last[c0:c1].max())))
    return chunks


def contract_innermost(values: torch.Tensor, matrix: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """``values`` with its last dimension replaced by ``matrix @`` along it (``matrix`` banded), in ``dtype``:
    a few matrix products on the right over the band of columns each group of outputs reads."""
    weights = torch.from_numpy(matrix).to(values.device, dtype)
    out = torch.empty((*values.shape[:-1], len(matrix)), dtype=dtype, device=values.device)
    for c0, c1, k0, k1 in _column_chunks(matrix):
        if k1 <= k0:  # outputs that read nothing (outside the source)
            out[..., c0:c1] = 0
            continue
        band = values[..., k0:k1].to(dtype, memory_format=torch.contiguous_format).reshape(-1, k1 - k0)
        out[..., c0:c1] = matmul(band, weights[c0:c1, k0:k1].T).reshape(*out.shape[:-1], c1 - c0)
    return out


def matmul(a: torch.Tensor, b: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a @ b`` (2-D) on their device (``out``: contiguous, written in place). Through torch on the CPU too:
    its thread pool is the network's, whereas numpy's BLAS keeps threads of its own that spin after a call
    and slow the network's next steps on a small machine."""
    return torch.matmul(a, b, out=out)


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
    upload to a GPU), then each axis is one pass: two-tap sums along the outer axes, a banded matrix
    product along the innermost. The arithmetic is float64, rounded to
    float32 at the end, as SimpleITK's interpolator does.
    """
    maps = axis_maps(source, target)
    matrices, axes = [], []  # per numpy dimension d of the volume (source index axis 2 - d)
    for d in range(3):
        axis = next(t for t, m in enumerate(maps) if m.source_axis == 2 - d)
        coordinates = maps[axis].coordinates(np.arange(target.size[axis]))
        rows = inside(coordinates, source.size[2 - d])
        if keep is not None:
            rows &= np.asarray(keep[axis], dtype=bool)
        matrices.append(linear_matrix(coordinates, source.size[2 - d], rows))
        axes.append(axis)
    used = [np.flatnonzero(m.any(axis=0)) for m in matrices]
    if any(len(u) == 0 for u in used):
        return torch.zeros(tuple(target.size), dtype=torch.float32, device=device)
    spans = [(int(u[0]), int(u[-1]) + 1) for u in used]
    block = _as_tensor(volume_zyx[tuple(slice(lo, hi) for lo, hi in spans)]).to(device)
    local = [m[:, lo:hi] for m, (lo, hi) in zip(matrices, spans)]
    # The outer dimensions first (whole rows in memory order), the one that shrinks most leading; the
    # innermost last, on the smallest array.
    leading, following = sorted((0, 1), key=lambda d: local[d].shape[0] / local[d].shape[1])
    block = two_tap(block, leading, local[leading], torch.float64)
    block = two_tap_then_innermost(block, following, local[following], local[2], torch.float64)
    return block.permute([axes.index(t) for t in range(3)]).to(torch.float32, memory_format=torch.contiguous_format)


def _as_tensor(values: np.ndarray) -> torch.Tensor:
    """A torch view of a (possibly read-only) numpy array; it is only read, never written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(values)
