"""Synthetic volumes for the engine tests: small, deterministic, with known ground truth.

All makers return SimpleITK images (LPS geometry); helpers convert between RAS points and voxels.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from SAMMed3DLib import metrics
from SAMMed3DLib.coordinates import ras_to_lps
from SAMMed3DLib.roi import voxel_to_ras

BACKGROUND = 100.0
OBJECT = 300.0


def make_image(
    values_zyx: np.ndarray,
    spacing: Sequence[float] = (3.0, 3.0, 3.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Optional[Sequence[float]] = None,
    pixel_type=np.int16,
) -> sitk.Image:
    """A SimpleITK image from a z-y-x array and its geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(values_zyx).astype(pixel_type))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    return image


def physical_grid(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, ``[z, y, x, 3]``."""
    size = image.GetSize()
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    index = np.stack([xx, yy, zz], -1).astype(float)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return index @ matrix.T + np.asarray(image.GetOrigin())


def like(image: sitk.Image, values_zyx: np.ndarray, pixel_type=np.int16) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(values_zyx).astype(pixel_type))
    out.CopyInformation(image)
    return out


def with_noise(truth: np.ndarray, seed: int = 0, sigma: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(truth, OBJECT, BACKGROUND) + rng.normal(0, sigma, truth.shape)


def sphere_phantom(
    size: Tuple[int, int, int] = (64, 64, 64),
    spacing: Sequence[float] = (3.0, 3.0, 3.0),
    centre_ras: Sequence[float] = (-90.0, -90.0, 90.0),
    radius: float = 30.0,
    direction: Optional[Sequence[float]] = None,
    seed: int = 0,
) -> Tuple[sitk.Image, sitk.Image]:
    """(image, truth) of a bright sphere (``radius`` mm around ``centre_ras``) in noisy background; size is x, y, z."""
    reference = make_image(np.zeros(size[::-1]), spacing, direction=direction)
    points = physical_grid(reference)
    truth = np.linalg.norm(points - ras_to_lps(centre_ras), axis=-1) <= radius
    return like(reference, with_noise(truth, seed)), like(reference, truth, np.uint8)


def _sphere_pair(size, centre_a_ras, centre_b_ras, seed: int) -> Tuple[sitk.Image, sitk.Image, sitk.Image]:
    """(image, truth A, truth B): two 18 mm spheres on a 3 mm grid of ``size`` (x, y, z)."""
    reference = make_image(np.zeros(size[::-1]), (3.0, 3.0, 3.0))
    points = physical_grid(reference)
    a = np.linalg.norm(points - ras_to_lps(centre_a_ras), axis=-1) <= 18
    b = np.linalg.norm(points - ras_to_lps(centre_b_ras), axis=-1) <= 18
    return like(reference, with_noise(a | b, seed)), like(reference, a, np.uint8), like(reference, b, np.uint8)


def two_spheres_phantom(seed: int = 0) -> Tuple[sitk.Image, sitk.Image, sitk.Image]:
    """(image, truth A, truth B): two separate spheres 60 mm apart, both inside one ROI."""
    return _sphere_pair((64, 48, 48), (-60, -72, 72), (-120, -72, 72), seed)


def cylinder_phantom(length: float = 400.0, radius: float = 15.0, seed: int = 0) -> Tuple[sitk.Image, sitk.Image]:
    """(image, truth) of a cylinder along S, ``length`` mm long, centred in a 3 mm volume taller than it."""
    size = (32, 32, int(length / 3) + 30)
    reference = make_image(np.zeros(size[::-1]), (3.0, 3.0, 3.0))
    points = physical_grid(reference)
    centre = reference.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size])
    offset = points - np.asarray(centre)
    truth = (np.linalg.norm(offset[..., :2], axis=-1) <= radius) & (np.abs(offset[..., 2]) <= length / 2)
    return like(reference, with_noise(truth, seed)), like(reference, truth, np.uint8)


def centre_ras(truth: sitk.Image) -> Tuple[float, float, float]:
    """RAS mm of the voxel of ``truth`` nearest its centroid."""
    voxels = np.argwhere(sitk.GetArrayViewFromImage(truth) > 0)
    nearest = voxels[np.argmin(np.linalg.norm(voxels - voxels.mean(0), axis=1))]
    return voxel_to_ras(truth, nearest[::-1].tolist())


def dice(a: sitk.Image, b: sitk.Image) -> float:
    """The engine's Dice of two masks on one grid (non-zero = inside)."""
    return metrics.dice(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


def far_spheres_phantom(seed: int = 0) -> Tuple[sitk.Image, sitk.Image, sitk.Image]:
    """(image, truth A, truth B): two spheres 270 mm apart along S — too far for one 192 mm ROI."""
    return _sphere_pair((24, 24, 120), (-36, -36, 45), (-36, -36, 315), seed)
