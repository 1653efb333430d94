"""Checks of what callers hand the engine: images, grids of companion images (masks, label maps), clicks.

Each check raises InputError with one message meant for the user, before any work is done. Geometry
conventions are those of :mod:`SAMMed3DLib.roi`: LPS millimetres, SimpleITK index order (x, y, z).
"""

from typing import List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .coordinates import lps_to_ras
from .errors import InputError
from .roi import ROI_SPACING, Grid, direction_matrix

GRID_TOLERANCE = 1e-3
"""Largest difference at which two grids count as the same: mm for spacing and origin, unitless for the
direction cosines (file formats that store the geometry in float32 round it well below this)."""
MIN_AXIS_ANGLE = 30.0
"""Smallest angle between two image axes accepted, degrees: a gantry tilt shears axes by up to ~30°, while
axes a degree apart come from a broken header and make every position along them meaningless."""
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_LABELS = 1000
"""Most distinct non-zero labels in a label map: anatomy atlases have a few hundred; more is an intensity image."""


def check_image(image: sitk.Image) -> None:
    """Raise InputError unless ``image`` is a 3-D scalar volume with a usable direction, finite and not constant."""
    if not isinstance(image, sitk.Image):
        raise InputError(f"expected a SimpleITK.Image, got {type(image).__name__}")
    if image.GetDimension() != 3:
        raise InputError(f"the image is {image.GetDimension()}-D; SAM-Med3D needs a 3-D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"the image has {image.GetNumberOfComponentsPerPixel()} components per voxel (vector/RGB); "
            "SAM-Med3D needs a scalar volume"
        )
    if min(image.GetSize()) < 2:
        raise InputError(f"the image size {image.GetSize()} is not a volume (an axis has fewer than 2 voxels)")
    _check_geometry(image)
    _check_values(image)


def _check_geometry(image: sitk.Image) -> None:
    """Finite positive spacing, finite origin, axes clearly apart, at least one model voxel along each axis."""
    spacing, origin = np.asarray(image.GetSpacing()), np.asarray(image.GetOrigin())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0) or not np.all(np.isfinite(origin)):
        raise InputError(f"the image's spacing {image.GetSpacing()} or origin {image.GetOrigin()} is not usable")
    direction = direction_matrix(image)
    # ITK refuses only an exactly singular matrix; nearly parallel axes are as unusable.
    if not np.all(np.isfinite(direction)) or _smallest_axis_angle(direction) < MIN_AXIS_ANGLE:
        raise InputError(
            f"the image's direction matrix {_rounded(image.GetDirection())} is degenerate: its axes must be unit "
            f"vectors at least {MIN_AXIS_ANGLE:g}° apart"
        )
    extent = spacing * np.asarray(image.GetSize())
    if np.any(extent < ROI_SPACING):
        raise InputError(
            f"the image measures {_rounded(extent)} mm along its axes, less than one {ROI_SPACING} mm model voxel "
            "along some axis (is the spacing in metres?)"
        )


def _smallest_axis_angle(direction: np.ndarray) -> float:
    """Smallest angle, in degrees, between two of the direction matrix's columns (0 unless all are unit vectors)."""
    norms = np.linalg.norm(direction, axis=0)
    if np.any(np.abs(norms - 1.0) > 1e-2):
        return 0.0
    unit = direction / norms
    cosines = np.abs(unit.T @ unit)[np.triu_indices(3, k=1)]
    return float(np.degrees(np.arccos(np.clip(cosines.max(), 0.0, 1.0))))


def _check_values(image: sitk.Image) -> None:
    values = sitk.GetArrayViewFromImage(image)
    if values.dtype.kind == "f":
        _check_float_range(values)
    first = values.flat[0]
    # Slice by slice, so that a real volume answers at its first slice instead of a whole-volume pass.
    if not any(bool((plane != first).any()) for plane in values):
        raise InputError(f"the image is empty: every voxel is {first:g}")


def _check_float_range(values: np.ndarray) -> None:
    """Finite, and within float32 range (the model input is float32): two passes, no copy."""
    low, high = float(values.min()), float(values.max())  # NaN anywhere makes both NaN
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError("the image contains NaN or infinite values")
    if max(-low, high) > FLOAT32_MAX:
        raise InputError(f"the image's values reach {max(-low, high):.3g}, beyond float32 range (3.4e38)")


def check_label_map(label: sitk.Image, image: sitk.Image, name: str) -> Tuple[np.ndarray, List[int]]:
    """(the label map as a z-y-x array, its non-zero labels) of ``label`` (``name`` in messages), checked: on
    ``image``'s grid, finite, whole numbers, at least one and at most MAX_LABELS labels. A float label map
    with whole values is accepted."""
    check_same_grid(label, image, name)
    values = sitk.GetArrayFromImage(label)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise InputError(f"{name} contains NaN or infinite values; a label map holds whole numbers")
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise InputError(
                f"{name} holds non-integer values (e.g. {fractional.flat[0]:g}); a label map holds whole numbers "
                "(is it a probability map or an intensity image?)"
            )
    elif values.dtype.kind not in "iub":
        raise InputError(f"{name} has voxels of type {values.dtype}; a label map holds whole numbers")
    labels = [int(v) for v in np.unique(values) if v != 0]
    if not labels:
        raise InputError(f"{name} has no labelled voxels")
    if len(labels) > MAX_LABELS:
        raise InputError(
            f"{name} has {len(labels)} different values; a label map has at most {MAX_LABELS} (is it an image?)"
        )
    return values, labels


def check_same_grid(other: sitk.Image, image: sitk.Image, name: str) -> None:
    """Raise InputError unless ``other`` (``name`` in the message, e.g. "the label map") is a 3-D scalar
    image on ``image``'s grid: the same size (x, y, z), and spacing, origin (LPS mm) and direction equal
    within :data:`GRID_TOLERANCE`. The message names the first property that differs."""
    if not isinstance(other, sitk.Image) or other.GetDimension() != 3 or other.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} must be a 3-D scalar image")
    if other.GetSize() != image.GetSize():
        raise InputError(
            f"{name} must lie on the image's grid, but its size {other.GetSize()} differs from the image's "
            f"{image.GetSize()}"
        )
    for label, getter, unit in (
        ("spacing", "GetSpacing", " mm"),
        ("origin", "GetOrigin", " mm"),
        ("direction", "GetDirection", ""),
    ):
        mine, theirs = getattr(other, getter)(), getattr(image, getter)()
        if not np.allclose(mine, theirs, rtol=0.0, atol=GRID_TOLERANCE):
            raise InputError(
                f"{name} must lie on the image's grid, but its {label} {_rounded(mine)}{unit} differs from the "
                f"image's {_rounded(theirs)}{unit}"
            )


def _rounded(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def check_point_inside(grid: Grid, point_lps: np.ndarray, label: str = "click") -> None:
    """Raise InputError unless the LPS point lies within the image (voxel extent, half a voxel past the centres)."""
    point_lps = np.asarray(point_lps, dtype=float)
    if point_lps.shape != (3,) or not np.all(np.isfinite(point_lps)):
        raise InputError(f"a {label} must be three finite coordinates in mm, got {point_lps.tolist()}")
    index = grid.to_index(point_lps)
    if np.any(index < -0.5) or np.any(index > np.asarray(grid.size) - 0.5):
        ras = lps_to_ras(point_lps)
        raise InputError(
            f"the {label} at RAS ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) mm is outside the image volume"
        )
