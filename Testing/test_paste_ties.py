"""Voxels on exact ties with a grid's face fall on SimpleITK's side, voxel for voxel.

SimpleITK's linear resampler counts a point as inside when its continuous index satisfies
``-0.5 <= c < n - 0.5``, with ``c`` computed through the physical point. On 1 mm images the 1.5 mm ROI's
faces land exactly on image voxel centres (``c == 127.5`` or ``-0.5``), so the paste, the ROI's input and
the mask prompt must do the same arithmetic as ITK to put those voxels on the same side. The reference
is SimpleITK's resampler onto the whole image grid (the paste) or onto the ROI grid (input, mask prompt).
"""

import functools
from typing import Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SAMMed3DLib import paste as P
from SAMMed3DLib import roi as R

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
PERMUTED = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# name: (size x, y, z at 1 mm, origin LPS mm, direction). Each is larger than half the 192 mm ROI along every
# axis, so a ROI centred at a corner or a face has faces inside the image.
IMAGES = {
    "issue-grid": ((160, 150, 120), (-80.0, -75.0, -60.0), IDENTITY),
    "ras": ((130, 120, 110), (64.5, 59.5, -54.5), RAS),
    "permuted": ((120, 130, 104), (-51.5, 60.0, -64.25), PERMUTED),
}


def _where(size: Tuple[int, int, int], code: str, step: int) -> Tuple[int, int, int]:
    """A voxel index from a code per axis (0: ``step`` voxels from the first, 1: the middle, 2: ``step`` voxels
    from the last). The ROI's lattice is 1.5 mm on a 1 mm image, so steps 0, 1, 2 place its faces on the three
    ways they can meet the image's voxels, exact ties included."""
    return tuple((step, n // 2, n - 1 - step)[int(c)] for c, n in zip(code, size))


CORNERS = ["000", "222", "020"]
FACES = ["211", "121", "112"]


@functools.cache
def image_of(name: str) -> sitk.Image:
    size, origin, direction = IMAGES[name]
    image = sitk.Image(list(size), sitk.sitkUInt8)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def roi_at(image: sitk.Image, index: Tuple[int, int, int]) -> R.Roi:
    return R.roi_for_points(R.Grid.of(image), [np.asarray(image.TransformIndexToPhysicalPoint(index))])


def simpleitk_inside(image: sitk.Image, roi: R.Roi) -> np.ndarray:
    """z-y-x: which image voxels SimpleITK's resampler finds inside the ROI (the ROI image as the paste's
    reference builds it)."""
    ones = R.roi_image_kji(np.ones((128, 128, 128), np.float32), roi)
    resampled = R.Grid.of(image).resampler(default=float("nan")).Execute(ones)
    return ~np.isnan(sitk.GetArrayFromImage(resampled))


def pasted(image: sitk.Image, roi: R.Roi, sign: float) -> np.ndarray:
    """z-y-x mask after pasting constant logits ``sign`` onto a mask of ``sign < 0`` everywhere: the voxels
    the paste counts inside the ROI are exactly those that flip."""
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    if sign < 0:
        mask += 1
    logits = torch.full((1, 1, 32, 32, 32), sign)
    P.paste_logits(mask, roi, logits)
    values = sitk.GetArrayFromImage(mask).astype(bool)
    return values if sign > 0 else ~values


def test_the_reported_tie_plane():
    """160×150×120 at 1 mm, origin (−80, −75, −60), click at voxel (3, 4, 2): the image plane z = 97 is at ROI
    index 127.5 exactly, outside for SimpleITK."""
    image = image_of("issue-grid")
    roi = roi_at(image, (3, 4, 2))
    face = R.Grid.of(image).to_physical(np.array([0.0, 0.0, 97.0]))
    assert roi.index_of(face)[2] == 127.5
    reference = simpleitk_inside(image, roi)
    assert not reference[97].any() and reference[96].any()
    np.testing.assert_array_equal(pasted(image, roi, 1.0), reference)


@pytest.mark.parametrize("step", [0, 1, 2])
@pytest.mark.parametrize("where", CORNERS + FACES)
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_paste_ties_equal_simpleitk(name, where, step):
    image = image_of(name)
    roi = roi_at(image, _where(image.GetSize(), where, step))
    reference = simpleitk_inside(image, roi)
    assert reference.any() and not reference.all()
    for sign in (1.0, -1.0):
        differ = pasted(image, roi, sign) != reference
        assert not differ.any(), f"{differ.sum()} voxels on the other side of the ROI's faces ({sign:+})"


@pytest.mark.parametrize("step", [0, 1, 2])
@pytest.mark.parametrize("where", ["000", "222"])
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_roi_input_and_mask_prompt_ties_equal_simpleitk(name, where, step):
    """The separable sampling (a GPU's ROI input and mask prompt) reads the image where SimpleITK's
    resampler does: ROI voxels on an image face (``c == n - 0.5`` or ``-0.5``) get the same value."""
    image = image_of(name)
    roi = roi_at(image, _where(image.GetSize(), where, step))
    ones = image * 0 + 1
    reference = R.interpolated(ones, roi.grid).numpy()  # SimpleITK's resampler
    separable = R.interpolated(ones, roi.grid, separable=True).numpy()
    assert 0 < np.count_nonzero(reference) < reference.size
    np.testing.assert_array_equal(separable, reference)


def test_itk_inverse_is_what_simpleitk_uses():
    """The matrix read back from SimpleITK maps points to SimpleITK's own continuous indices, bit for bit,
    where numpy's inverse of the same grid does not always."""
    image = sitk.Image([4, 4, 4], sitk.sitkUInt8)
    image.SetSpacing((2.51427, 3.3426, 0.2626))
    image.SetDirection(PERMUTED)
    image.SetOrigin((1.25, -7.5, 3.0))
    grid = R.Grid.of(image)
    point = np.array([11.3, -2.7, 5.9])
    expected = image.TransformPhysicalPointToContinuousIndex(point.tolist())
    offset = point - np.asarray(grid.origin)
    ours = [sum(grid.inverse[s, b] * offset[b] for b in range(3)) for s in range(3)]
    assert ours == list(expected)
    assert not np.array_equal(grid.inverse, np.linalg.inv(grid.matrix))
