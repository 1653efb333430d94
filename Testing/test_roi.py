"""ROI geometry, normalisation and the paste back to the original grid."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from support.phantoms import make_image, sphere_phantom

from SAMMed3DLib import paste as P
from SAMMed3DLib import roi as R
from SAMMed3DLib.metrics import dice


def test_single_voxel_target_lands_on_index_64_in_canonical_order():
    # An LPS-stored image: the ROI's first axis must run towards R, i.e. against the image's x axis.
    image = make_image(np.zeros((40, 50, 60)), spacing=(1.5, 1.5, 1.5))
    point = np.array(image.TransformIndexToPhysicalPoint((30, 20, 10)), dtype=float)
    roi = R.roi_for_points(R.Grid.of(image), [point])
    assert roi.voxel_of(point).tolist() == [64, 64, 64]
    np.testing.assert_allclose(np.asarray(roi.grid.direction).reshape(3, 3), np.diag([-1.0, -1.0, 1.0]))
    # x: 60 voxels, target 30 flipped to canonical 29 → the ROI starts at canonical -35; y: 50, 20 → 29 → -35.
    assert roi.valid_lo == (35, 35, 64 - 10)
    assert roi.valid_hi == (35 + 60, 35 + 50, 64 - 10 + 40)


def test_extraction_zero_outside_image_and_normalised():
    image, _ = sphere_phantom(size=(40, 40, 40))
    point = np.array(image.TransformIndexToPhysicalPoint((2, 2, 2)), dtype=float)
    roi = R.roi_for_points(R.Grid.of(image), [point])
    raw = R.extract_intensities(image, roi)
    lo, hi = roi.valid_lo, roi.valid_hi
    inside = raw[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    assert np.count_nonzero(raw) == np.count_nonzero(inside)  # nothing outside the image part
    assert inside.size < raw.size
    assert inside.min() > 50  # the phantom background is ~100 everywhere in the image
    normalised = R.znormalize(raw)
    foreground = normalised[raw > 0]
    assert abs(foreground.mean()) < 1e-4 and abs(foreground.std(ddof=1) - 1) < 1e-4


def test_znormalize_without_foreground_stays_finite():
    values = np.full((8, 8, 8), -1000.0, dtype=np.float32)
    values[:4] = -500
    out = R.znormalize(values)
    assert np.isfinite(out).all() and abs(out.mean()) < 1e-5
    assert np.isfinite(R.znormalize(np.zeros((4, 4, 4), np.float32))).all()


def test_fits_in_roi():
    image = make_image(np.zeros((200, 20, 20)), spacing=(2.0, 2.0, 2.0))
    grid = R.Grid.of(image)
    a, b, c = (np.array(image.TransformIndexToPhysicalPoint((10, 10, z)), float) for z in (10, 100, 190))
    assert R.fits_in_roi(grid, [a, b])  # 180 mm apart
    assert not R.fits_in_roi(grid, [a, c])  # 360 mm apart


def smooth_logits(roi_centre=(60.0, 70.0, 58.0), radius=30.0) -> torch.Tensor:
    """Decoder-like 32³ logits of a sphere (ROI voxel units), slightly noisy."""
    axes = [(np.arange(32) + 0.5) * 4 - 0.5 for _ in range(3)]
    i, j, k = np.meshgrid(*axes, indexing="ij")
    distance = np.sqrt((i - roi_centre[0]) ** 2 + (j - roi_centre[1]) ** 2 + (k - roi_centre[2]) ** 2)
    noise = np.random.default_rng(0).normal(0, 0.3, distance.shape)
    return torch.from_numpy(((radius - distance) / 4 + noise).astype(np.float32))[None, None]


@pytest.mark.parametrize(
    "spacing, direction",
    [((0.8, 0.8, 4.0), None), ((1.2, 1.0, 2.0), (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))],
    ids=["thick-slices", "rotated"],
)
def test_linear_logit_paste_agrees_with_official_nearest(spacing, direction):
    image = make_image(np.ones((50, 220, 200)), spacing=spacing, direction=direction)
    centre = np.array(image.TransformIndexToPhysicalPoint((100, 110, 25)), dtype=float)
    roi = R.roi_for_points(R.Grid.of(image), [centre])
    low_res = smooth_logits()
    logits = P.upsample(low_res)
    ours = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    ours.CopyInformation(image)
    region, flipped = P.paste_logits(ours, roi, low_res)
    # Official: threshold on the ROI, then nearest-neighbour back to the original voxels.
    binary = sitk.Cast(R.roi_image((logits > 0).astype(np.float32), roi), sitk.sitkUInt8)
    official = sitk.Resample(binary, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    a, b = sitk.GetArrayViewFromImage(ours) > 0, sitk.GetArrayViewFromImage(official) > 0
    overlap = dice(a, b)
    print(f"paste dice vs nearest ({spacing}): {overlap:.4f}")
    assert overlap >= 0.98
    # The reported region bounds every voxel written; ``flipped`` marks exactly those that changed.
    changed = np.argwhere(a)
    (x, y, z), (sx, sy, sz) = region
    assert changed.min(0).tolist() >= [z, y, x] and (changed.max(0) < [z + sz, y + sy, x + sx]).all()
    assert flipped.sum() == a.sum()


def test_paste_replaces_inside_roi_only_and_union_adds():
    image = make_image(np.ones((40, 40, 200)), spacing=(2.0, 2.0, 2.0))
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask[0:200, 0:40, 0:40] = sitk.Image([200, 40, 40], sitk.sitkUInt8) + 1
    roi = R.roi_for_points(R.Grid.of(image), [np.array(image.TransformIndexToPhysicalPoint((100, 20, 20)), float)])
    empty = np.full((128,) * 3, -5.0, np.float32)
    P.paste_logits(mask, roi, empty, union=True)
    assert sitk.GetArrayViewFromImage(mask).all()
    P.paste_logits(mask, roi, empty)
    values = sitk.GetArrayViewFromImage(mask)
    # The ROI spans 192 mm = 96 voxels around x=100; outside it the mask is untouched.
    assert values[:, :, 100].max() == 0 and values[:, :, :50].all() and values[:, :, 150:].all()


def test_mask_prompt_is_low_res_logits_of_the_mask():
    image, truth = sphere_phantom(size=(64, 64, 64))
    centre = np.array(image.TransformIndexToPhysicalPoint((30, 30, 30)), float)
    roi = R.roi_for_points(R.Grid.of(image), [centre])
    prompt = P.mask_to_prompt(truth, roi)
    assert tuple(prompt.shape) == (1, 1, 32, 32, 32)
    assert prompt.max() > 7 and prompt.min() < -7
    assert prompt[0, 0, 16, 16, 16] > 0 and prompt[0, 0, 0, 0, 0] < 0
    assert P.mask_to_prompt(truth * 0, roi) is None
