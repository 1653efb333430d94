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
    logits = P.upsample(smooth_logits())
    ours = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    ours.CopyInformation(image)
    region, flipped = P.paste_logits(ours, roi, logits)
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


def random_grid(rng: np.random.Generator) -> R.Grid:
    """A random anisotropic grid (two axes 0.7–1.5 mm, one 2–5 mm, 100–160 mm across, in random order)
    with a random oblique direction, right- or left-handed."""
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    spacing = rng.permutation([rng.uniform(0.7, 1.5), rng.uniform(0.7, 1.5), rng.uniform(2.0, 5.0)])
    size = np.ceil(rng.uniform(100.0, 160.0, 3) / spacing).astype(int)
    return R.Grid(
        tuple(int(n) for n in size),
        tuple(float(s) for s in spacing),
        tuple(float(o) for o in rng.uniform(-200.0, 200.0, 3)),
        tuple(float(d) for d in rotation.reshape(-1)),
    )


@pytest.mark.parametrize("union", [False, True], ids=["replace", "union"])
@pytest.mark.parametrize("seed", range(6))
def test_block_paste_equals_one_full_linear_resample(monkeypatch, seed, union):
    """The block classification of the paste (all-inside / all-outside stencils filled without
    interpolating) gives exactly the mask of one plain linear resampling of the logits."""
    rng = np.random.default_rng(seed)
    grid = random_grid(rng)
    image = grid.reference()
    roi = R.roi_for_points(grid, [grid.to_physical(rng.uniform(0.3, 0.7, 3) * (np.asarray(grid.size) - 1))])
    logits = P.upsample(smooth_logits(tuple(rng.uniform(44, 84, 3)), radius=float(rng.uniform(15, 40))))
    before = (rng.random(grid.size[::-1]) < 0.3).astype(np.uint8)
    # Reference: the logits linearly interpolated at every image voxel (NaN outside the ROI), thresholded at 0.
    resampled = sitk.GetArrayFromImage(
        R.resample_onto(R.roi_image(logits, roi), grid, sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    )
    positive = resampled > 0
    expected = (before.astype(bool) | positive) if union else np.where(np.isnan(resampled), before > 0, positive)

    interpolated = []
    real_call = P._BlockInterpolator.__call__

    def counting_call(self, target, block):
        interpolated.append(int(np.prod(block[1])))
        real_call(self, target, block)

    monkeypatch.setattr(P._BlockInterpolator, "__call__", counting_call)
    results = {}
    for mode, fraction in (("blocks", 1.0), ("whole region", 0.0)):
        monkeypatch.setattr(P, "MIXED_FRACTION", fraction)
        mask = sitk.GetImageFromArray(before)
        mask.CopyInformation(image)
        interpolated.clear()
        region, _ = P.paste_logits(mask, roi, logits, union=union)
        results[mode] = (sitk.GetArrayFromImage(mask) > 0, sum(interpolated), int(np.prod(region[1])))
    for mode, (mask, _, _) in results.items():
        assert np.count_nonzero(mask != expected) == 0, mode
    blocks_interpolated, region_voxels = results["blocks"][1:]
    assert 0 < blocks_interpolated <= region_voxels
    if not union:  # the region spans the whole ROI: the fast path filled whole blocks without resampling
        assert blocks_interpolated < region_voxels
    assert results["whole region"][1] == region_voxels
