"""The model's region of interest (ROI): a 128³ grid at 1.5 mm, and the normalised crop on it.

Geometry reproduces the official preprocessing (torchio ``Resample(1.5)`` → ``ToCanonical()`` →
``CropOrPad(128³)`` around the target → ``ZNormalization(masking x > 0)``) without resampling the
whole volume: the ROI grid is computed from the image header alone, then only those 128³ voxels are
interpolated from the original image (linear, with SimpleITK's rules: by its resampler on a CPU, by separable
per-axis passes on a GPU, see :func:`interpolated`).

Conventions used throughout:

* physical points are LPS millimetres (SimpleITK); callers with RAS points use :mod:`.coordinates`;
* a direction matrix is 3x3 with one column per image axis (SimpleITK stores it row-major);
* "index order" is SimpleITK's (x, y, z) = (i, j, k); numpy arrays from ``GetArrayFromImage`` are z-y-x;
* the ROI array handed to the network is in the ROI's own index order ``[i, j, k]``, where the ROI axes
  are the image's axes permuted/flipped to the closest R, A, S order (as ``ToCanonical`` does), so the
  click coordinates the prompt encoder gets are ROI indices (i, j, k), as ``torch.argwhere`` gives them.
"""

import functools
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from .coordinates import RAS_TO_LPS, lps_to_ras
from .interpolation import sample
from .modeling import IMAGE_SIZE
from .regions import Index3

ROI_SPACING = 1.5
"""Isotropic spacing of the model input, mm (the training resolution)."""


def voxel_to_ras(image: sitk.Image, index_xyz: Sequence[float]) -> Tuple[float, float, float]:
    """RAS mm of a (continuous) voxel index of ``image`` given in SimpleITK index order (x, y, z)."""
    lps = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index_xyz])
    return tuple(float(v) for v in lps_to_ras(lps))


@dataclass(frozen=True)
class Grid:
    """A 3-D voxel grid: size/spacing in index order (x, y, z), origin in LPS mm, direction columns per axis."""

    size: Index3
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]  # row-major 3x3, as SimpleITK

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(
            tuple(int(v) for v in image.GetSize()),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    @property
    def matrix(self) -> np.ndarray:
        """3x3 map from index offsets (x, y, z) to LPS mm: direction · diag(spacing)."""
        return np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)

    @property
    def inverse(self) -> np.ndarray:
        """3x3 map from LPS offsets (mm) to index offsets (x, y, z), as ITK computes it (see :func:`itk_inverse`)."""
        return itk_inverse(tuple(float(v) for v in self.spacing), tuple(float(v) for v in self.direction))

    def to_physical(self, index: np.ndarray) -> np.ndarray:
        """Continuous indices ``[..., 3]`` (x, y, z) → LPS points ``[..., 3]``."""
        return np.asarray(index, dtype=float) @ self.matrix.T + np.asarray(self.origin)

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """LPS points ``[..., 3]`` → continuous indices ``[..., 3]`` (x, y, z)."""
        inverse = np.linalg.inv(self.matrix)
        return (np.asarray(points, dtype=float) - np.asarray(self.origin)) @ inverse.T

    def resampler(self, interpolator: int = sitk.sitkLinear, default: float = 0.0) -> sitk.ResampleImageFilter:
        """SimpleITK's resampler onto this grid's voxel centres, float32 output, ``default`` outside the source."""
        resampler = sitk.ResampleImageFilter()
        resampler.SetSize(list(self.size))
        resampler.SetOutputSpacing(self.spacing)
        resampler.SetOutputOrigin(self.origin)
        resampler.SetOutputDirection(self.direction)
        resampler.SetInterpolator(interpolator)
        resampler.SetDefaultPixelValue(default)
        resampler.SetOutputPixelType(sitk.sitkFloat32)
        return resampler

    def reference(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        """An image with this geometry (its pixels are only allocated, never meant to be read)."""
        image = sitk.Image(list(self.size), pixel_type)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@functools.lru_cache(maxsize=64)
def itk_inverse(spacing: Tuple[float, float, float], direction: Tuple[float, ...]) -> np.ndarray:
    """ITK's physical-point-to-index matrix of a grid, read back from SimpleITK (a read-only array).

    ITK inverts direction · diag(spacing) by SVD, which differs from numpy's inverse in the last bits (and
    leaves ~1e-16 off-axis terms on some permuted anisotropic grids); whether a voxel on an exact tie with
    a grid's face is inside depends on those bits. With the origin at 0, the continuous index of each unit
    point is one column of the matrix, exactly.
    """
    probe = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    probe.SetSpacing(spacing)
    probe.SetDirection(direction)
    columns = [probe.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in unit)) for unit in np.eye(3)]
    matrix = np.asarray(columns, dtype=float).T
    matrix.setflags(write=False)
    return matrix


@dataclass(frozen=True)
class Roi:
    """A 128³ ROI: its grid (1.5 mm, axes in closest-RAS order) and the part that lies inside the image.

    ``valid_lo``/``valid_hi`` bound, per ROI axis, the ROI indices covered by the resampled image;
    outside them the model input is zero (the padding of ``CropOrPad``).
    """

    grid: Grid
    valid_lo: Index3
    valid_hi: Index3
    signs: Index3 = (1, 1, 1)
    """Per ROI axis: +1 when it runs along its image axis, -1 when against it (a flip)."""

    def index_of(self, point_lps: Sequence[float]) -> np.ndarray:
        """Continuous ROI index (i, j, k) of an LPS point."""
        return self.grid.to_index(np.asarray(point_lps, dtype=float))

    def voxel_of(self, point_lps: Sequence[float]) -> np.ndarray:
        """Nearest ROI voxel (i, j, k) of an LPS point, as integers (may lie outside the ROI).

        Ties round up along the image's axes (as :func:`lattice_index`), hence down on flipped ROI axes:
        a point centred on its target voxel then always gets index 64.
        """
        index = self.index_of(point_lps)
        signs = np.asarray(self.signs)
        return np.where(signs > 0, np.floor(index + 0.5), np.ceil(index - 0.5)).astype(int)

    def contains(self, point_lps: Sequence[float]) -> bool:
        """True when the point's nearest voxel is a ROI voxel.

        Clicks are inside the image; one in the image's outer half-voxel rim may map just past the
        resampled part (``valid_hi``) yet still belongs to this ROI.
        """
        voxel = self.voxel_of(point_lps)
        return bool(np.all(voxel >= 0) and np.all(voxel < IMAGE_SIZE))


def direction_matrix(image_or_grid: Union[sitk.Image, Grid]) -> np.ndarray:
    """3x3 direction (LPS), one column per image axis."""
    direction = image_or_grid.GetDirection() if isinstance(image_or_grid, sitk.Image) else image_or_grid.direction
    return np.asarray(direction, dtype=float).reshape(3, 3)


def canonical_axes(direction_lps: np.ndarray) -> Tuple[Index3, Index3]:
    """For each RAS axis (R, A, S): the image axis closest to it and its sign (+1 same way, -1 opposite).

    The rule of nibabel's ``io_orientation`` used by torchio's ``ToCanonical``: take the closest
    rotation (polar decomposition), visit image axes from the most to the least clearly aligned, and
    give each the still-free world axis with the largest component.
    """
    ras = RAS_TO_LPS @ direction_lps
    u, _, vt = np.linalg.svd(ras)
    rotation = u @ vt
    axis_of = [0, 0, 0]
    sign_of = [1, 1, 1]
    for image_axis in np.argsort(np.min(-(rotation**2), axis=0), kind="stable"):
        column = rotation[:, image_axis]
        world_axis = int(np.argmax(np.abs(column)))
        axis_of[world_axis] = int(image_axis)
        sign_of[world_axis] = 1 if column[world_axis] > 0 else -1
        rotation[world_axis, :] = 0
    return tuple(axis_of), tuple(sign_of)


def resampled_lattice(grid: Grid) -> Tuple[np.ndarray, np.ndarray]:
    """Size and origin (LPS) of the image resampled to 1.5 mm the way torchio ``Resample(1.5)`` places it.

    torchio keeps the image's axes, takes ``floor(size * spacing / 1.5)`` voxels and centres the new
    grid on the old one (centre = midpoint of the first and last voxel centres).
    """
    size = np.asarray(grid.size, dtype=float)
    spacing = np.asarray(grid.spacing, dtype=float)
    direction = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    new_size = np.floor(size * spacing / ROI_SPACING)
    new_size[size == 1] = 1
    centre = np.asarray(grid.origin) + direction @ ((size - 1) * spacing) / 2
    new_origin = centre - direction @ ((new_size - 1) / 2 * ROI_SPACING)
    return new_size.astype(int), new_origin


def lattice_index(grid: Grid, points_lps: np.ndarray) -> np.ndarray:
    """Nearest voxel of the 1.5 mm lattice (image axes) for LPS points ``[N, 3]``, clamped into the lattice."""
    size, origin = resampled_lattice(grid)
    lattice = Grid(tuple(size.tolist()), (ROI_SPACING,) * 3, tuple(origin.tolist()), grid.direction)
    index = np.floor(lattice.to_index(np.atleast_2d(points_lps)) + 0.5).astype(int)
    return np.clip(index, 0, size - 1)


def roi_for_lattice_box(grid: Grid, lo: np.ndarray, hi: np.ndarray) -> Roi:
    """The ROI ``CropOrPad(128)`` cuts around the lattice box ``[lo, hi)`` (image axes, half-open).

    In canonical order the window starts at ``floor((a + b) / 2) - 64`` for a box ``[a, b)`` — for a
    single voxel ``t`` the target lands on ROI index 64. A flipped axis counts from the far end.
    """
    size, origin = resampled_lattice(grid)
    direction = direction_matrix(grid)
    axis_of, sign_of = canonical_axes(direction)
    first = np.zeros(3)  # lattice index (image axes) of ROI voxel (0, 0, 0)
    columns = np.zeros((3, 3))
    valid_lo, valid_hi = [], []
    for roi_axis, (axis, sign) in enumerate(zip(axis_of, sign_of)):
        a, b = int(lo[axis]), int(hi[axis])
        if sign < 0:
            a, b = size[axis] - b, size[axis] - a
        start = (a + b) // 2 - IMAGE_SIZE // 2
        first[axis] = start if sign > 0 else size[axis] - 1 - start
        columns[:, roi_axis] = direction[:, axis] * sign
        valid_lo.append(int(np.clip(-start, 0, IMAGE_SIZE)))
        valid_hi.append(int(np.clip(size[axis] - start, 0, IMAGE_SIZE)))
    roi_origin = origin + direction @ (first * ROI_SPACING)
    roi_grid = Grid(
        (IMAGE_SIZE,) * 3, (ROI_SPACING,) * 3, tuple(roi_origin.tolist()), tuple(columns.reshape(-1).tolist())
    )
    return Roi(roi_grid, tuple(valid_lo), tuple(valid_hi), tuple(int(s) for s in sign_of))


def roi_for_points(grid: Grid, points_lps: Iterable[Sequence[float]]) -> Roi:
    """The ROI centred (as ``CropOrPad`` with a mask) on the lattice bounding box of the points."""
    index = lattice_index(grid, np.asarray(list(points_lps), dtype=float).reshape(-1, 3))
    return roi_for_lattice_box(grid, index.min(axis=0), index.max(axis=0) + 1)


def fits_in_roi(grid: Grid, points_lps: Sequence[Sequence[float]]) -> bool:
    """True when one ROI centred on the points' bounding box contains all of them."""
    roi = roi_for_points(grid, points_lps)
    return all(roi.contains(p) for p in points_lps)


def interpolated(
    image: sitk.Image,
    grid: Grid,
    keep: Optional[Sequence[np.ndarray]] = None,
    device: Optional[torch.device] = None,
    separable: Optional[bool] = None,
) -> torch.Tensor:
    """``image`` linearly interpolated (SimpleITK's rules) at the voxel centres of ``grid``, whose axes are the
    image's own (a ROI grid): float32 ``[i, j, k]`` on ``device``, 0 outside the image and where ``keep[axis]``
    (one boolean per grid index along each axis) is False.

    On a CPU by SimpleITK's resampler: multi-threaded C++ that reads only each sample's neighbours, ~1.4x
    faster here than the separable passes, which read every image voxel under the grid. On a GPU by those
    passes (:func:`~SAMMed3DLib.interpolation.sample`) on the device, with one upload of the image block the
    grid covers. Both give the same numbers (tests). ``separable`` forces one method (default: by device).
    """
    on_cpu = device is None or torch.device(device).type == "cpu"
    if separable if separable is not None else not on_cpu:
        return sample(sitk.GetArrayViewFromImage(image), Grid.of(image), grid, keep, device)
    # Resampled in the grid's own axis order: ITK then reads the image along its rows. On a grid with the
    # axes reversed (no transposing copy) the reads ran across slices, 4-6x slower.
    resampled = grid.resampler().Execute(image)
    values = np.ascontiguousarray(sitk.GetArrayViewFromImage(resampled).transpose(2, 1, 0))  # [i, j, k]
    for axis, rows in enumerate(keep or ()):
        index = [slice(None)] * 3
        index[axis] = ~np.asarray(rows, dtype=bool)
        values[tuple(index)] = 0
    return torch.from_numpy(values)


def extract_intensities_tensor(image: sitk.Image, roi: Roi, device: Optional[torch.device] = None) -> torch.Tensor:
    """Raw intensities on the ROI grid, float32 ``[i, j, k]`` on ``device``; zero where the resampled image
    would not reach (outside ``valid_lo``/``valid_hi``). See :func:`interpolated`: only the image block
    under the ROI goes to a GPU, once per ROI (the embedding of a ROI is cached, so a ROI is extracted once).
    Arithmetic in float64 rounded to float32 (torchio interpolates in the input pixel type, which rounds
    integer images to whole units; the difference is below one unit).
    """
    return interpolated(image, roi.grid, valid_rows(roi), device)


def valid_rows(roi: Roi) -> List[np.ndarray]:
    """Per ROI axis, which of its 128 indices lie between ``valid_lo`` and ``valid_hi`` (where the official
    resampled image reaches)."""
    return [(np.arange(IMAGE_SIZE) >= lo) & (np.arange(IMAGE_SIZE) < hi) for lo, hi in zip(roi.valid_lo, roi.valid_hi)]


def extract_intensities(image: sitk.Image, roi: Roi) -> np.ndarray:
    """:func:`extract_intensities_tensor` on the CPU, as a numpy array ``[i, j, k]``."""
    return extract_intensities_tensor(image, roi).numpy()


def znormalize_tensor(values: torch.Tensor) -> torch.Tensor:
    """``(v - mean) / std`` with mean and unbiased std over voxels > 0, as torchio ``ZNormalization``
    (statistics in float64, result float32, on the values' device).

    torchio returns NaN (no voxel > 0, or only one) or raises (std 0); the engine instead falls back
    to statistics over the whole crop, and to mere centring when the crop is constant. (torchio's
    whole-volume resampling leaves ~1e-13 instead of 0 at the edge of a zero background, which its
    ``x > 0`` counts; so on such images the statistics differ slightly, by a constant offset.)
    """
    values = values.float()
    mean, std = _statistics(values[values > 0] if values.is_cuda else values.numpy()[values.numpy() > 0])
    if std == 0.0:
        mean, std = _statistics(values.reshape(-1) if values.is_cuda else values.numpy().reshape(-1))
    values = values - mean
    return values / std if std > 0 else values


def _statistics(values: Union[torch.Tensor, np.ndarray]) -> Tuple[float, float]:
    """Mean and unbiased std (0 for fewer than two values) in float64. A CPU tensor comes as its numpy
    view: numpy's boolean selection and reductions are single passes, torch's are several here."""
    if isinstance(values, torch.Tensor):
        values = values.double()
        return float(values.mean()) if values.numel() else 0.0, float(values.std()) if values.numel() > 1 else 0.0
    mean = float(values.mean(dtype=np.float64)) if values.size else 0.0
    return mean, float(values.std(ddof=1, dtype=np.float64)) if values.size > 1 else 0.0


def znormalize(values: np.ndarray) -> np.ndarray:
    """:func:`znormalize_tensor` of a numpy array (float32 result)."""
    return znormalize_tensor(torch.from_numpy(np.asarray(values, dtype=np.float32))).numpy()


def model_input_tensor(image: sitk.Image, roi: Roi, device: Optional[torch.device] = None) -> torch.Tensor:
    """The network's input on the ROI: normalised float32 ``[128, 128, 128]`` in ROI index order (i, j, k),
    computed on ``device``."""
    return znormalize_tensor(extract_intensities_tensor(image, roi, device))


def model_input(image: sitk.Image, roi: Roi) -> np.ndarray:
    """:func:`model_input_tensor` on the CPU, as a numpy array."""
    return model_input_tensor(image, roi).numpy()


def roi_image(values: np.ndarray, roi: Roi) -> sitk.Image:
    """A ``[i, j, k]`` ROI array as a SimpleITK image with the ROI's true geometry and index axes (i, j, k),
    for saving and inspection."""
    return sitk.PermuteAxes(roi_image_kji(values, roi), [2, 1, 0])


def roi_image_kji(values: np.ndarray, roi: Roi) -> sitk.Image:
    """The same voxels in space as :func:`roi_image` without reordering them (no copy of a transposed
    array): the image's index axes are (k, j, i), so its spacing and direction columns are the ROI's reversed.
    For resampling, where the index order does not matter."""
    image = sitk.GetImageFromArray(np.asarray(values, dtype=np.float32))
    image.SetSpacing(roi.grid.spacing[::-1])
    image.SetOrigin(roi.grid.origin)
    image.SetDirection(np.asarray(roi.grid.direction).reshape(3, 3)[:, ::-1].ravel().tolist())
    return image
