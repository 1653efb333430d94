"""From the network's logits on a ROI back to the mask on the original image grid, and back again.

The official code upsamples the 32³ logits to 128³ (trilinear, ``align_corners=False``), thresholds
them and maps the binary mask back with nearest-neighbour interpolation. Here the upsampled logits
themselves are interpolated (linear, with SimpleITK's rules) onto the original voxels inside the ROI's
extent and thresholded at 0, which gives smoother boundaries at the original resolution; voxels whose
centre lies outside the ROI keep their value.

Both steps are separable (the ROI's axes are the image's axes, see :mod:`.interpolation`), so
"upsample, then interpolate" is one matrix per image axis (image voxels × 32, at most 3–4 non-zeros a
row) applied to the 32³ logits by three contractions on the logits' device; the last one runs in
slabs of a few image slices that stay in cache, with the threshold and the comparison with the
previous mask done per slab.

Arrays from SimpleITK are z-y-x; ROI arrays are in ROI index order ``[i, j, k]``; regions are
``(index_start, size)`` in SimpleITK index order (x, y, z).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
from torch.nn import functional as F

from . import regions
from .interpolation import axis_maps, inside, linear_matrix, matmul, support, upsample_matrix
from .modeling import IMAGE_SIZE, LOW_RES_SIZE
from .regions import Region, writable_voxels, zyx_slices
from .roi import Grid, Roi, interpolated

PROMPT_LOGIT = 8.0
"""Magnitude of the logits a binary mask becomes when it is given as a mask prompt."""
SLAB_VALUES = 1 << 20
"""Interpolated values per slab of the last contraction on a CPU (4 MB of float32, in cache: ~13 image slices
of the benchmark's ROI; thinner slabs make the products too skinny for the CPU's GEMM: 1 MB slabs took
twice as long)."""

Logits = Union[torch.Tensor, np.ndarray]


def upsample(low_res: torch.Tensor) -> np.ndarray:
    """Decoder logits ``[1, 1, 32, 32, 32]`` → float32 ``[128, 128, 128]`` (trilinear, align_corners=False)."""
    full = F.interpolate(low_res.float(), size=(IMAGE_SIZE,) * 3, mode="trilinear", align_corners=False)
    return full[0, 0].cpu().numpy()


@dataclass(frozen=True)
class _Axis:
    """One image axis of a paste: the ROI axis along it and the interpolation rows of the ROI's extent."""

    roi_axis: int
    start: int
    """First image index whose voxel centre lies in the ROI (SimpleITK's half-voxel rule)."""
    matrix: np.ndarray
    """``[rows, side]`` float64: logits along ``roi_axis`` → image voxels ``start, start + 1, ...``."""

    def rows_reading(self, lo: int, hi: int) -> Tuple[int, int]:
        """Image indices ``[a, b)`` whose rows read a logit in ``[lo, hi)`` (empty: a == b)."""
        first, last = support(self.matrix)
        hit = np.flatnonzero((first < hi) & (last > lo))
        if len(hit) == 0:
            return self.start, self.start
        return self.start + int(hit[0]), self.start + int(hit[-1]) + 1


def _paste_axes(grid: Grid, roi: Roi, side: int) -> Optional[List[_Axis]]:
    """Per image axis (x, y, z): the paste's :class:`_Axis` for logits of ``side``³ over the ROI
    (32: the decoder's, upsampled on the way; 128: already upsampled); None if the ROI misses the image."""
    upsampling = upsample_matrix(side, IMAGE_SIZE // side) if side != IMAGE_SIZE else np.eye(IMAGE_SIZE)
    upsampling = torch.from_numpy(upsampling)
    axes = []
    for axis, mapping in enumerate(axis_maps(roi.grid, grid)):
        coordinates = mapping.coordinates(np.arange(grid.size[axis]))
        rows = np.flatnonzero(inside(coordinates, IMAGE_SIZE))  # one run: the map is monotonic
        if len(rows) == 0:
            return None
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        # Through torch, not numpy: numpy's BLAS would wake threads of its own for this product, and they
        # spin for ~0.1 s after it, slowing the network's next step on a small machine.
        matrix = matmul(torch.from_numpy(linear_matrix(coordinates[lo:hi], IMAGE_SIZE)), upsampling).numpy()
        axes.append(_Axis(mapping.source_axis, lo, matrix))
    return axes


def _logit_grid(logits: Logits) -> torch.Tensor:
    """Logits as a float32 ``[s, s, s]`` tensor (ROI order), s = 32 (decoder output) or 128 (upsampled)."""
    values = torch.as_tensor(logits).float()
    values = values.reshape(values.shape[-3:])
    if values.shape[0] not in (LOW_RES_SIZE, IMAGE_SIZE) or len(set(values.shape)) != 1:
        raise ValueError(f"logits must be [1, 1, 32, 32, 32] or [128, 128, 128], got {tuple(values.shape)}")
    return values


def paste_logits(
    mask: sitk.Image, roi: Roi, logits: Logits, *, union: bool = False, known: Optional[Region] = None
) -> Tuple[Optional[Region], Optional[np.ndarray]]:
    """Write ``logits > 0`` into ``mask`` in place, within the ROI's extent.

    ``logits``: the decoder's ``[1, 1, 32, 32, 32]`` (any device; the interpolation runs there), or the
    upsampled ``[128, 128, 128]`` (ROI order ``[i, j, k]``). Inside the ROI the prediction replaces the
    mask (``union=True``: only adds). ``known`` bounds the mask's non-zero voxels (an over-estimate is
    fine; None: unknown, an empty size: none). Returns (region, changed), ``changed`` the z-y-x boolean
    array of the voxels of ``region`` that flipped, or (None, None) when nothing can change.
    """
    grid = Grid.of(mask)
    values = _logit_grid(logits)
    axes = _paste_axes(grid, roi, values.shape[0])
    if axes is None:
        return None, None
    region = _paste_region(axes, values, union, known)
    if region is None:
        return None, None
    voxels = writable_voxels(mask)[zyx_slices(region)]
    return region, _interpolate_threshold_into(values, axes, region, voxels, union)


def _paste_region(axes: List[_Axis], values: torch.Tensor, union: bool, known: Optional[Region]) -> Optional[Region]:
    """The image voxels a paste may change: those whose stencil reads a positive logit, plus (replacing)
    the known non-zero voxels inside the ROI's extent."""
    footprint = regions.from_bounds([a.start for a in axes], [a.start + len(a.matrix) for a in axes])
    positive = (values > 0).cpu().numpy()  # small (32³): its bounding box is read on the host
    region = None
    if positive.any():
        extent = [np.flatnonzero(positive.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
        bounds = [a.rows_reading(int(extent[a.roi_axis][0]), int(extent[a.roi_axis][-1]) + 1) for a in axes]
        region = regions.from_bounds([b[0] for b in bounds], [b[1] for b in bounds])
    if not union:
        region = regions.union(region, regions.intersection(footprint, footprint if known is None else known))
    return regions.intersection(region, footprint)


def _interpolate_threshold_into(
    values: torch.Tensor, axes: List[_Axis], region: Region, voxels: np.ndarray, union: bool
) -> np.ndarray:
    """Write into ``voxels`` (the mask's z-y-x voxels of ``region``, in place) the logits interpolated there,
    thresholded at 0 (``union``: or-ed with what is there); returns where they changed (z-y-x booleans).
    Slab by slab, each compared and written while in cache; if anything fails, the slabs already written are
    flipped back, so the mask is as before."""
    device = values.device
    x, y, z = (_rows(a, region, n).to(device) for n, a in enumerate(axes))
    # Logits permuted to the image's z-y-x [k, j, i], then the two small contractions, one product each:
    # over j → [Y, k, i] → [k, Y, i], then over i → [k, Y, X] (laid out as the slabs below read it).
    s = values.shape[0]
    permuted = values.permute([axes[2].roi_axis, axes[1].roi_axis, axes[0].roi_axis])
    rows_y = matmul(y, permuted.permute(1, 0, 2).reshape(s, s * s))  # [Y, k * i]
    rows_y = rows_y.reshape(len(y), s, s).permute(1, 0, 2).reshape(s * len(y), s)  # [k * Y, i]
    partial = matmul(rows_y, x.T).reshape(s, -1)  # [k, Y * X]
    changed = np.empty(voxels.shape, dtype=bool)
    first, last = support(z.cpu().numpy())
    slab = min(max(1, SLAB_VALUES // partial.shape[1]), len(z)) if device.type == "cpu" else len(z)
    buffer = torch.empty((slab, partial.shape[1]), dtype=torch.float32, device=device)
    positive = np.empty((slab, *voxels.shape[1:]), dtype=bool)
    written = 0
    try:
        for z0 in range(0, len(z), slab):
            z1 = min(z0 + slab, len(z))
            k0, k1 = int(first[z0:z1].min()), int(last[z0:z1].max())  # the band of logit slices these rows read
            slab_values = matmul(z[z0:z1, k0:k1], partial[k0:k1], out=buffer[: z1 - z0])
            now = positive[: z1 - z0]
            _positive_into(slab_values, now.reshape(z1 - z0, -1))
            target = voxels[z0:z1].view(bool)
            if union:
                now |= target
            np.not_equal(now, target, out=changed[z0:z1])
            target[...] = now
            written = z1
    except BaseException:
        flipped = voxels[:written].view(bool)
        flipped ^= changed[:written]
        raise
    return changed


def _rows(axis: _Axis, region: Region, index_axis: int) -> torch.Tensor:
    """The float32 interpolation rows of ``axis`` for the region's voxels along image axis ``index_axis``."""
    lo = region[0][index_axis] - axis.start
    return torch.from_numpy(axis.matrix[lo : lo + region[1][index_axis]].astype(np.float32))


def _positive_into(values: torch.Tensor, out: np.ndarray) -> None:
    """``values > 0`` written into the boolean array ``out`` (host memory)."""
    if values.device.type == "cpu":
        np.greater(values.numpy(), 0, out=out)  # numpy's comparison is several times faster than torch's here
    else:
        out[...] = (values > 0).cpu().numpy()


def nonzero_region(mask: sitk.Image, within: Optional[Region]) -> Optional[Region]:
    """Bounding region of the mask's non-zero voxels inside ``within``."""
    if within is None:
        return None
    values = sitk.GetArrayViewFromImage(mask)[zyx_slices(within)]
    axes_any = [np.flatnonzero(values.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(a) == 0 for a in axes_any):
        return None
    lo_zyx = np.array([a[0] for a in axes_any])
    hi_zyx = np.array([a[-1] + 1 for a in axes_any])
    return regions.from_bounds(lo_zyx[::-1] + within[0], hi_zyx[::-1] + within[0])


def mask_to_prompt(mask: sitk.Image, roi: Roi, device: Optional[torch.device] = None) -> Optional[torch.Tensor]:
    """An existing binary mask as decoder-style logits ``[1, 1, 32, 32, 32]`` on the ROI (on ``device``), or
    None if empty there.

    The mask is sampled (linear, as SimpleITK would, 0 outside the image) at the ROI's 1.5 mm voxels,
    averaged over 4³ blocks into the fraction of each 6 mm cell that is inside, and mapped to
    ``±PROMPT_LOGIT`` (0 at half coverage).
    """
    fraction = interpolated(mask, roi.grid, device=device)
    if not bool((fraction > 0).any()):
        return None
    pooled = F.avg_pool3d(fraction.clamp_(0, 1)[None, None], kernel_size=IMAGE_SIZE // LOW_RES_SIZE)
    return (pooled * 2 - 1) * PROMPT_LOGIT
