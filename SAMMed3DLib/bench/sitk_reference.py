"""The ROI extraction, paste and mask prompt done by SimpleITK's resampler: the engine's earlier method,
kept as an independent reference for the identity tests and the ``bench-session`` paste ratio.

The engine computes the same things by separable interpolation (:mod:`SAMMed3DLib.interpolation`);
here every voxel is interpolated by ``itk::ResampleImageFilter`` with the linear interpolator. Arrays
from SimpleITK are z-y-x; ROI arrays are ``[i, j, k]``; regions ``(index_start, size)`` in (x, y, z).
"""

from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from torch.nn import functional as F

from .. import regions
from ..modeling import IMAGE_SIZE, LOW_RES_SIZE
from ..paste import PROMPT_LOGIT
from ..regions import Region, read_region, write_region
from ..roi import Grid, Roi, roi_image_kji


def to_roi_order(volume: sitk.Image) -> np.ndarray:
    """A SimpleITK image's voxels as a float32 array in index order ``[x, y, z]`` (a copy)."""
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(volume).transpose(2, 1, 0), dtype=np.float32)


def extract_intensities(image: sitk.Image, roi: Roi) -> np.ndarray:
    """Raw intensities on the ROI grid, float32 ``[i, j, k]``, zero outside ``valid_lo``/``valid_hi``."""
    values = to_roi_order(roi.grid.resampler().Execute(image))
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(0, roi.valid_lo[axis])
        values[tuple(index)] = 0
        index[axis] = slice(roi.valid_hi[axis], None)
        values[tuple(index)] = 0
    return values


def footprint(grid: Grid, roi: Roi) -> Optional[Region]:
    """Image voxels (clipped) whose centres may fall in the ROI: its corners ± half a ROI voxel, rounded out."""
    bounds = [(-0.5, IMAGE_SIZE - 0.5)] * 3
    corners = np.array([[x, y, z] for x in bounds[0] for y in bounds[1] for z in bounds[2]])
    index = grid.to_index(roi.grid.to_physical(corners))
    start = np.floor(index.min(axis=0)).astype(int)
    stop = np.ceil(index.max(axis=0)).astype(int) + 1
    return regions.clip(regions.from_bounds(start, stop), grid.size)


def interpolate_logits(grid: Grid, roi: Roi, logits: np.ndarray, region: Region) -> np.ndarray:
    """The ``[i, j, k]`` ROI logits linearly interpolated at the image voxels of ``region`` (z-y-x float32),
    NaN where a voxel centre lies outside the ROI."""
    origin = tuple(grid.to_physical(np.asarray(region[0], dtype=float)).tolist())
    target = Grid(tuple(int(n) for n in region[1]), grid.spacing, origin, grid.direction)
    resampler = target.resampler(default=float("nan"))
    return sitk.GetArrayFromImage(resampler.Execute(roi_image_kji(np.asarray(logits, np.float32), roi)))


def paste_logits(
    mask: sitk.Image, roi: Roi, logits: np.ndarray, *, union: bool = False
) -> Tuple[Optional[Region], Optional[np.ndarray]]:
    """Write ``logits > 0`` (upsampled ``[128, 128, 128]``) into ``mask`` in place over the ROI's whole extent
    (outside-ROI voxels keep their value); returns (region, changed z-y-x booleans)."""
    grid = Grid.of(mask)
    region = footprint(grid, roi)
    if region is None:
        return None, None
    values = interpolate_logits(grid, roi, logits, region)
    before = read_region(mask, region)
    positive = values > 0  # NaN compares False
    if union:
        after = before | positive
    else:
        after = np.where(np.isnan(values), before, positive).astype(np.uint8)
    write_region(mask, region, after)
    return region, after != before


def mask_to_prompt(mask: sitk.Image, roi: Roi) -> Optional[torch.Tensor]:
    """The mask's coverage of each 6 mm cell of the ROI as ``±PROMPT_LOGIT`` logits ``[1, 1, 32, 32, 32]``."""
    fraction = to_roi_order(roi.grid.resampler().Execute(mask))
    if not (fraction > 0).any():
        return None
    pooled = F.avg_pool3d(torch.from_numpy(np.clip(fraction, 0, 1))[None, None], kernel_size=IMAGE_SIZE // LOW_RES_SIZE)
    return (pooled * 2 - 1) * PROMPT_LOGIT
