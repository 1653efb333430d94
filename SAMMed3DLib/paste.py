"""From the network's logits on a ROI back to the mask on the original image grid, and back again.

The official code thresholds the 128³ upsampled logits and maps the binary mask back with
nearest-neighbour interpolation. Here the logits themselves are interpolated (linear) onto the
original voxels inside the ROI's extent and thresholded at 0, which gives smoother boundaries at the
original resolution; voxels outside the ROI keep their previous value.

Arrays from SimpleITK are z-y-x; ROI arrays are in ROI index order ``[i, j, k]``; regions are
``(index_start, size)`` in SimpleITK index order (x, y, z).
"""

from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from torch.nn import functional as F

from . import regions
from .modeling import LOW_RES_SIZE as LOW_RES  # side of the decoder's logit grid: the network defines it
from .regions import Region
from .roi import ROI_SIZE, Grid, Roi, resample_onto, roi_image_kji, to_roi_order

PROMPT_LOGIT = 8.0
"""Magnitude of the logits a binary mask becomes when it is given as a mask prompt."""


def upsample(low_res: torch.Tensor) -> np.ndarray:
    """Decoder logits ``[1, 1, 32, 32, 32]`` → float32 ``[128, 128, 128]`` (trilinear, align_corners=False)."""
    full = F.interpolate(low_res.float(), size=(ROI_SIZE,) * 3, mode="trilinear", align_corners=False)
    return full[0, 0].cpu().numpy()


def roi_box_region(grid: Grid, roi: Roi, lo: np.ndarray, hi: np.ndarray) -> Optional[Region]:
    """Image voxels (x, y, z region, clipped) whose centres may fall in the ROI voxels ``[lo, hi]`` (inclusive)."""
    # Half a ROI voxel beyond the outer centres reaches the ROI's faces.
    bounds = [(a - 0.5, b + 0.5) for a, b in zip(lo, hi)]
    corners = np.array([[x, y, z] for x in bounds[0] for y in bounds[1] for z in bounds[2]])
    index = grid.to_index(roi.grid.to_physical(corners))
    start = np.floor(index.min(axis=0)).astype(int)
    stop = np.ceil(index.max(axis=0)).astype(int) + 1
    return regions.clip(regions.from_bounds(start, stop), grid.size)


def nonzero_region(mask: sitk.Image, within: Optional[Region]) -> Optional[Region]:
    """Bounding region of the mask's non-zero voxels inside ``within``."""
    if within is None:
        return None
    values = sitk.GetArrayViewFromImage(mask)[_slices(within)]
    axes_any = [np.flatnonzero(values.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(a) == 0 for a in axes_any):
        return None
    lo_zyx = np.array([a[0] for a in axes_any])
    hi_zyx = np.array([a[-1] + 1 for a in axes_any])
    return regions.from_bounds(lo_zyx[::-1] + within[0], hi_zyx[::-1] + within[0])


def _slices(region: Region) -> Tuple[slice, slice, slice]:
    """numpy (z, y, x) slices of a SimpleITK-order region."""
    (x, y, z), (sx, sy, sz) = region
    return slice(z, z + sz), slice(y, y + sy), slice(x, x + sx)


def read_region(mask: sitk.Image, region: Region) -> np.ndarray:
    """A copy of the mask's voxels in ``region`` (z, y, x)."""
    return np.array(sitk.GetArrayViewFromImage(mask)[_slices(region)])


def write_region(mask: sitk.Image, region: Region, values: np.ndarray) -> None:
    """Write z-y-x ``values`` into ``region`` of ``mask`` in place (no copy of the whole mask)."""
    (x, y, z), (sx, sy, sz) = region
    mask[x : x + sx, y : y + sy, z : z + sz] = sitk.GetImageFromArray(np.ascontiguousarray(values, dtype=np.uint8))


def positive_region(grid: Grid, roi: Roi, positive: np.ndarray) -> Optional[Region]:
    """Image region that may hold the ROI voxels set in boolean ``positive`` ``[i, j, k]`` (one ROI voxel of margin)."""
    if not positive.any():
        return None
    lo = [np.flatnonzero(positive.any(axis=tuple(a for a in range(3) if a != axis)))[[0, -1]] for axis in range(3)]
    lo, hi = np.array([v[0] for v in lo]) - 1, np.array([v[1] for v in lo]) + 1
    return roi_box_region(grid, roi, np.clip(lo, 0, ROI_SIZE - 1), np.clip(hi, 0, ROI_SIZE - 1))


def paste_logits(
    mask: sitk.Image, roi: Roi, logits: np.ndarray, *, union: bool = False, known: Optional[Region] = None
) -> Tuple[Optional[Region], Optional[np.ndarray]]:
    """Write ``logits > 0`` (``[i, j, k]`` on the ROI) into ``mask`` in place, within the ROI's extent.

    Inside the ROI the prediction replaces the mask (``union=True``: only adds). ``known`` bounds the
    mask's non-zero voxels (an over-estimate is fine; None: unknown, an empty size: none). Returns
    (region, changed), ``changed`` the z-y-x boolean array of the voxels of ``region`` that flipped, or
    (None, None) when nothing can change.
    """
    grid = Grid.of(mask)
    footprint = roi_box_region(grid, roi, np.zeros(3), np.full(3, ROI_SIZE - 1))
    positive = logits > 0
    region = positive_region(grid, roi, positive)
    if not union:
        region = regions.union(region, regions.intersection(footprint, footprint if known is None else known))
    if region is None:
        return None, None
    before = read_region(mask, region)
    after = before.copy()
    _fill_blocks(after, grid, region, roi, logits, positive, union)
    changed = before != after
    write_region(mask, region, after)  # last: a failure before it leaves the mask untouched
    return region, changed


def _fill_blocks(
    values: np.ndarray, grid: Grid, region: Region, roi: Roi, logits: np.ndarray, positive: np.ndarray, union: bool
) -> None:
    """Set the z-y-x ``values`` of ``region`` from the logits (``positive``: ``logits > 0``).

    Linear interpolation is a convex combination of the 8 surrounding ROI voxels, so a block whose
    stencil voxels are all positive (or all ≤ 0) and lie inside the ROI is filled without interpolating;
    only blocks on the boundary of the object or of the ROI are resampled, and the cost follows the
    object's surface rather than its volume. When most blocks are on a boundary (a ragged mask), one
    resampling of the whole region is faster than many small ones.
    """
    edges = _block_edges(region)
    lo, hi = _block_roi_bounds(grid, roi, region, edges)
    covered = np.all((lo >= -0.5) & (hi <= ROI_SIZE - 0.5), axis=-1)
    outside = np.any((hi < -0.5) | (lo > ROI_SIZE - 0.5), axis=-1)
    any_positive, any_other = _stencil_signs(positive, lo, hi)
    full = covered & ~any_other
    empty = covered & ~any_positive
    mixed = ~(outside | full | empty)
    interpolator = _BlockInterpolator(grid, roi_image_kji(logits, roi), union)
    if mixed.mean() > MIXED_FRACTION:
        interpolator(values, region)
        return
    for b in np.argwhere(~outside):
        b = tuple(b)
        (x0, x1), (y0, y1), (z0, z1) = ((int(edges[a][b[a]]), int(edges[a][b[a] + 1])) for a in range(3))
        target = values[z0:z1, y0:y1, x0:x1]
        if full[b]:
            target[...] = 1
        elif empty[b]:
            if not union:
                target[...] = 0
        else:
            start = (region[0][0] + x0, region[0][1] + y0, region[0][2] + z0)
            interpolator(target, (start, (x1 - x0, y1 - y0, z1 - z0)))


MIXED_FRACTION = 0.3
"""Above this share of boundary blocks the whole region is resampled at once (multi-threaded)."""
BLOCK = 32
"""Side, in image voxels, of the blocks the paste classifies."""


def _block_edges(region: Region) -> List[np.ndarray]:
    """Per image axis (x, y, z): block boundaries relative to the region start."""
    return [np.append(np.arange(0, n, BLOCK), n) for n in region[1]]


def _block_roi_bounds(grid: Grid, roi: Roi, region: Region, edges: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Continuous ROI index bounds ``[bx, by, bz, 3]`` (min, max) of each block's voxel centres.

    The map image index → ROI index is affine, so each bound is a sum of per-axis extremes.
    """
    to_roi = np.linalg.inv(roi.grid.matrix) @ grid.matrix  # image index offsets → ROI index offsets
    offset = roi.grid.to_index(grid.to_physical(np.asarray(region[0], dtype=float)))
    shape = [len(e) - 1 for e in edges]
    lo = np.broadcast_to(offset, (*shape, 3)).copy()
    hi = lo.copy()
    for axis in range(3):
        first = edges[axis][:-1].astype(float)
        last = edges[axis][1:].astype(float) - 1
        a = first[:, None] * to_roi[:, axis]  # [blocks along axis, 3 ROI axes]
        b = last[:, None] * to_roi[:, axis]
        view = [1, 1, 1, 3]
        view[axis] = -1
        lo += np.minimum(a, b).reshape(view)
        hi += np.maximum(a, b).reshape(view)
    return lo, hi


def _stencil_signs(positive: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per block: whether any ROI voxel of its interpolation stencil is positive, and whether any is not.

    Decided on ``CELL``³ cells of the ROI (a summed-area table of 32³ cells instead of 128³ voxels):
    a block's stencil is widened to whole cells, so a block may be called mixed when it is not (it is
    then interpolated, with the same result), never uniform when it is not.
    """
    n = ROI_SIZE // CELL
    # Four consecutive booleans along k read as one uint32: non-zero if any is set, all-ones if all are.
    runs = np.ascontiguousarray(positive).view(np.uint32).reshape(n, CELL, n, CELL, n)
    any_positive = (runs != 0).any(axis=(1, 3))
    any_other = (runs != ALL_FOUR).any(axis=(1, 3))
    start = np.clip(np.floor(lo), 0, ROI_SIZE - 1).astype(int) // CELL
    stop = np.clip(np.ceil(hi), 0, ROI_SIZE - 1).astype(int) // CELL + 1
    return _box_any(any_positive, start, stop), _box_any(any_other, start, stop)


CELL = 4
"""Side, in ROI voxels, of the cells that classify paste blocks (4 booleans = one uint32)."""
ALL_FOUR = np.frombuffer(np.ones(CELL, dtype=bool).tobytes(), dtype=np.uint32)[0]


def _box_any(flags: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Whether any of ``flags`` is set in each box ``[start, stop)`` (``[..., 3]`` arrays), by a summed-area table."""
    table = np.zeros(tuple(n + 1 for n in flags.shape), dtype=np.int64)
    table[1:, 1:, 1:] = flags.cumsum(0).cumsum(1).cumsum(2)
    count = np.zeros(start.shape[:-1], dtype=np.int64)
    for corner in np.ndindex(2, 2, 2):
        index = tuple(np.where(c, stop[..., a], start[..., a]) for a, c in enumerate(corner))
        count += (-1) ** (3 - sum(corner)) * table[index]
    return count > 0


class _BlockInterpolator:
    """Linear interpolation of the logits (SimpleITK) onto parts of the image grid; one filter reused."""

    def __init__(self, grid: Grid, source: sitk.Image, union: bool) -> None:
        self.grid = grid
        self.source = source
        self.union = union
        self.resampler = sitk.ResampleImageFilter()
        self.resampler.SetOutputSpacing(grid.spacing)
        self.resampler.SetOutputDirection(grid.direction)
        self.resampler.SetInterpolator(sitk.sitkLinear)
        self.resampler.SetDefaultPixelValue(float("nan"))
        self.resampler.SetOutputPixelType(sitk.sitkFloat32)

    def __call__(self, target: np.ndarray, block: Region) -> None:
        """Fill z-y-x ``target`` (the voxels of ``block``); voxels outside the ROI keep their value."""
        self.resampler.SetSize([int(n) for n in block[1]])
        self.resampler.SetOutputOrigin(tuple(self.grid.to_physical(np.asarray(block[0], dtype=float)).tolist()))
        resampled = self.resampler.Execute(self.source)
        values = sitk.GetArrayViewFromImage(resampled)  # a view: ``resampled`` stays referenced while used
        if self.union:
            target |= values > 0  # NaN (outside the ROI) compares False
            return
        outside = np.isnan(values)
        kept = target.copy() if outside.any() else None
        np.greater(values, 0, out=target.view(bool))
        if kept is not None:
            np.copyto(target, kept, where=outside)


def mask_to_prompt(mask: sitk.Image, roi: Roi) -> Optional[torch.Tensor]:
    """An existing binary mask as decoder-style logits ``[1, 1, 32, 32, 32]`` on the ROI, or None if empty there.

    The mask is sampled (linear) at the ROI's 1.5 mm voxels, averaged over 4³ blocks into the fraction
    of each 6 mm cell that is inside, and mapped to ``±PROMPT_LOGIT`` (0 at half coverage).
    """
    fraction = to_roi_order(resample_onto(mask, roi.grid, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    if not (fraction > 0).any():
        return None
    pooled = F.avg_pool3d(torch.from_numpy(np.clip(fraction, 0, 1))[None, None], kernel_size=ROI_SIZE // LOW_RES)
    return (pooled * 2 - 1) * PROMPT_LOGIT
