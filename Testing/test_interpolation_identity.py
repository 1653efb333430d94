"""The separable interpolation (ROI extraction, paste, mask prompt) gives SimpleITK's numbers on every grid kind.

Reference: ``SAMMed3DLib.bench.sitk_reference``, the same steps done voxel by voxel by SimpleITK's
resampler (the engine's earlier method), so that two independent computations are compared.
"""

import functools
from typing import Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SAMMed3DLib import interpolation as I
from SAMMed3DLib import paste as P
from SAMMed3DLib import roi as R
from SAMMed3DLib.bench import sitk_reference as S
from SAMMed3DLib.regions import zyx_slices

ROTATION = (
    (0.8660254037844387, -0.4330127018922193, 0.25),
    (0.5, 0.75, -0.4330127018922193),
    (0.0, 0.5, 0.8660254037844387),
)
# name: (size x, y, z; spacing; direction (row-major) or None; click as a fraction of the extent; pixel type).
# Every image is larger than the 192 mm ROI along at least two axes, so that the ROI's border crosses it.
GRIDS = {
    "ras": ((150, 140, 120), (1.6, 1.5, 2.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1), (0.5, 0.5, 0.5), np.int16),
    "lps": ((150, 140, 120), (1.7, 1.4, 1.9), None, (0.45, 0.55, 0.5), np.int16),
    "oblique": ((120, 130, 110), (1.9, 1.7, 2.1), np.ravel(ROTATION), (0.5, 0.4, 0.6), np.float32),
    "anisotropic": ((300, 290, 45), (0.7, 0.7, 5.0), None, (0.5, 0.5, 0.5), np.int16),
    "partly-outside": ((100, 90, 80), (2.5, 1.0, 2.6), None, (0.05, 0.95, 0.1), np.float32),
    "flipped-axis": ((110, 120, 100), (2.0, 1.8, 2.1), (1, 0, 0, 0, 1, 0, 0, 0, -1), (0.6, 0.5, 0.4), np.uint8),
    "permuted": ((90, 150, 140), (2.3, 1.4, 1.5), (0, 0, 1, 1, 0, 0, 0, 1, 0), (0.5, 0.5, 0.5), np.float64),
}
LOGIT_MARGIN = 1e-4
"""Voxels whose interpolated logit is closer to 0 than this may round either way."""


@functools.cache
def grid_case(name: str, seed: int = 0) -> Tuple[sitk.Image, R.Roi]:
    """(image with smooth-plus-noise intensities, the ROI of a click at the case's point); cached, as
    several tests read (never write) each."""
    size, spacing, direction, where, pixel_type = GRIDS[name]
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.linspace(0, 1, n) for n in size[::-1]), indexing="ij")
    values = 60 * np.sin(6 * xx) * np.cos(4 * yy) + 40 * zz + rng.normal(0, 10, zz.shape) + 100
    if np.issubdtype(pixel_type, np.integer):
        values = np.clip(values, 0, 250 if pixel_type == np.uint8 else 4000)
    image = sitk.GetImageFromArray(values.astype(pixel_type))
    image.SetSpacing(spacing)
    image.SetOrigin((-30.0, 12.5, 70.0))
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    point = image.TransformContinuousIndexToPhysicalPoint([f * (n - 1) for f, n in zip(where, size)])
    return image, R.roi_for_points(R.Grid.of(image), [np.asarray(point)])


def low_res_logits(seed: int, ragged: bool) -> torch.Tensor:
    """Decoder-like ``[1, 1, 32, 32, 32]`` logits: a noisy blob (ragged: noise of the blob's size)."""
    rng = np.random.default_rng(seed)
    axis = np.arange(32) - rng.uniform(12, 20)
    distance = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
    noise = rng.normal(0, 3.0 if ragged else 0.3, distance.shape)
    return torch.from_numpy((rng.uniform(6, 10) - distance + noise).astype(np.float32))[None, None]


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_roi_equals_simpleitk(name):
    """The separable passes (the GPU's method, run here on the CPU) and the CPU's resampler path."""
    image, roi = grid_case(name)
    ours = R.interpolated(image, roi.grid, R.valid_rows(roi), separable=True).numpy()
    reference = S.extract_intensities(image, roi)
    values = sitk.GetArrayViewFromImage(image)
    span = float(values.max()) - float(values.min())
    assert float(np.abs(R.extract_intensities(image, roi) - reference).max()) / span <= 1e-6  # the CPU's path
    error = float(np.abs(ours - reference).max()) / span
    print(f"{name}: ROI max |Δ| / range = {error:.2e}; voxels inside the image {np.count_nonzero(reference)}")
    assert error <= 1e-5
    if name == "partly-outside":
        assert roi.valid_lo != (0, 0, 0) or roi.valid_hi != (128, 128, 128)
        assert np.count_nonzero(reference == 0) > 0
    normalised = R.model_input(image, roi)
    np.testing.assert_allclose(normalised, R.znormalize(reference), atol=1e-4)


def _mask_like(image: sitk.Image, values: np.ndarray) -> sitk.Image:
    mask = sitk.GetImageFromArray(values.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


@pytest.mark.parametrize(
    "ragged, union", [(False, False), (True, False), (True, True)], ids=["blob", "ragged", "union"]
)
@pytest.mark.parametrize("name", sorted(GRIDS))
def test_paste_equals_simpleitk(name, ragged, union):
    image, roi = grid_case(name)
    grid = R.Grid.of(image)
    rng = np.random.default_rng(1)
    before = (rng.random(grid.size[::-1]) < 0.3).astype(np.uint8)
    low = low_res_logits(2, ragged)
    full = P.upsample(low)
    ours, reference = _mask_like(image, before), _mask_like(image, before)
    region, changed = P.paste_logits(ours, roi, low, union=union)
    S.paste_logits(reference, roi, full, union=union)
    logits = S.interpolate_logits(grid, roi, full, ((0, 0, 0), grid.size))
    a, b = sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(reference)
    differ = a != b
    decided = ~np.isnan(logits) & (np.abs(logits) > LOGIT_MARGIN)
    print(
        f"{name}/{'ragged' if ragged else 'blob'}/{'union' if union else 'replace'}: {differ.sum()} voxels differ "
        f"({(differ & decided).sum()} with |logit| > {LOGIT_MARGIN}); inside the ROI {(~np.isnan(logits)).sum()}"
    )
    assert not (differ & decided).any()
    assert np.isnan(logits).any() and not np.isnan(logits).all()  # the ROI's border crosses the image
    assert differ.sum() <= 1e-5 * differ.size
    # The region bounds every voxel that changed, and ``changed`` marks exactly those.
    (x, y, z), (sx, sy, sz) = region
    flipped = np.zeros_like(differ)
    flipped[z : z + sz, y : y + sy, x : x + sx] = changed
    np.testing.assert_array_equal(flipped, a != before)


@pytest.mark.parametrize("name", ["oblique", "flipped-axis", "partly-outside"])
def test_paste_of_upsampled_logits_equals_the_low_res_paste(name):
    """The 128³ input (already upsampled) takes the same road without the upsampling factor."""
    image, roi = grid_case(name)
    low = low_res_logits(3, ragged=True)
    masks = [_pasted_on_empty(image, roi, logits) for logits in (low, P.upsample(low))]
    assert np.count_nonzero(masks[0] != masks[1]) <= 1e-5 * masks[0].size


def _pasted_on_empty(image: sitk.Image, roi, logits) -> np.ndarray:
    """The z-y-x mask ``logits`` paste onto an empty mask of ``image``."""
    mask = _mask_like(image, np.zeros(R.Grid.of(image).size[::-1]))
    P.paste_logits(mask, roi, logits)
    return sitk.GetArrayFromImage(mask)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_mask_prompt_equals_simpleitk(name):
    image, roi = grid_case(name)
    values = sitk.GetArrayViewFromImage(image)
    mask = _mask_like(image, values > np.median(values))
    ours, reference = P.mask_to_prompt(mask, roi), S.mask_to_prompt(mask, roi)
    assert float((ours - reference).abs().max()) <= 1e-4
    separable = R.interpolated(mask, roi.grid, separable=True).numpy()
    resampled = R.interpolated(mask, roi.grid).numpy()  # the CPU's method
    assert float(np.abs(separable - resampled).max()) <= 1e-6
    assert P.mask_to_prompt(_mask_like(image, values * 0), roi) is None


def test_known_region_limits_the_work_but_not_the_result():
    """Replacing with ``known`` (where the mask's non-zero voxels are) gives the mask of an unbounded paste."""
    image, roi = grid_case("oblique")
    grid = R.Grid.of(image)
    before = np.zeros(grid.size[::-1], np.uint8)
    before[40:60, 50:70, 30:50] = 1
    known = ((30, 50, 40), (20, 20, 20))
    low = low_res_logits(4, ragged=False)
    bounded, unbounded = _mask_like(image, before), _mask_like(image, before)
    region, _ = P.paste_logits(bounded, roi, low, known=known)
    whole, _ = P.paste_logits(unbounded, roi, low)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(bounded), sitk.GetArrayFromImage(unbounded))
    assert np.prod(region[1]) < np.prod(whole[1])


def test_simpleitk_linear_rules():
    """The 1-D rules the matrices follow, checked on SimpleITK itself: inside is ``-0.5 <= c < n - 0.5``,
    and the outer half-voxel rim takes the border voxel's value."""
    source = sitk.GetImageFromArray(np.array([[[1.0, 2.0, 4.0, 8.0]]], np.float32))
    coordinates = np.array([-0.6, -0.5, -0.2, 0.0, 0.3, 2.7, 3.0, 3.2, 3.49, 3.5, 3.6])
    reference = []
    for c in coordinates:
        target = sitk.Image([1, 1, 1], sitk.sitkFloat32)
        target.SetOrigin((float(c), 0.0, 0.0))
        reference.append(sitk.Resample(source, target, sitk.Transform(), sitk.sitkLinear, -99.0)[0, 0, 0])
    rows = I.linear_matrix(coordinates, 4)
    ours = np.where(I.inside(coordinates, 4), rows @ np.array([1.0, 2.0, 4.0, 8.0]), -99.0)
    np.testing.assert_allclose(ours, reference, rtol=1e-6)


def test_axes_that_are_not_shared_are_refused():
    grid = R.Grid((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    c, s = np.cos(0.3), np.sin(0.3)
    rotated = R.Grid((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    with pytest.raises(ValueError, match="not along"):
        I.axis_maps(grid, rotated)


def test_whole_array_two_tap_pass_equals_the_row_by_row_one():
    """The GPU's form of a two-tap pass (gathers and one weighted sum), run here on the CPU, gives the
    CPU's row-by-row numbers, flipped axes and rows outside the source included."""
    rng = np.random.default_rng(5)
    values = torch.from_numpy(rng.integers(-1000, 1000, (20, 30, 40)).astype(np.int16))
    coordinates = np.linspace(21.3, -2.2, 25)  # a flipped axis running past both ends
    matrix = I.linear_matrix(coordinates, 20)
    rowwise = I.two_tap(values, 0, matrix, torch.float64, rowwise=True)
    whole = I.two_tap(values, 0, matrix, torch.float64, rowwise=False)
    np.testing.assert_allclose(whole.numpy(), rowwise.numpy(), rtol=1e-12, atol=1e-9)
    expected = np.tensordot(matrix, values.numpy().astype(float), axes=1)
    np.testing.assert_allclose(rowwise.numpy(), expected, rtol=1e-12, atol=1e-9)
    # The innermost pass: the GPU's separate contraction and the CPU's fused one.
    middle = I.linear_matrix(np.linspace(-0.7, 31.0, 17), 30)
    innermost = I.linear_matrix(np.linspace(-1.2, 45.0, 33), 40)
    separate = I.contract_innermost(I.two_tap(values, 1, middle, torch.float64), innermost, torch.float64)
    fused = I.two_tap_then_innermost(values, 1, middle, innermost, torch.float64)
    np.testing.assert_allclose(fused.numpy(), separate.numpy(), rtol=1e-12, atol=1e-9)
    expected = np.einsum("jb,rc,abc->ajr", middle, innermost, values.numpy().astype(float))
    np.testing.assert_allclose(fused.numpy(), expected, rtol=1e-12, atol=1e-9)


def test_one_slab_paste_equals_the_sliced_one(monkeypatch):
    """The paste's last contraction in one piece (as on a GPU) or in cache-sized slabs: the same mask."""
    image, roi = grid_case("oblique")
    low = low_res_logits(6, ragged=True)
    masks = []
    for slab_values in (P.SLAB_VALUES, 1 << 40):
        monkeypatch.setattr(P, "SLAB_VALUES", slab_values)
        mask = _mask_like(image, np.zeros(R.Grid.of(image).size[::-1]))
        P.paste_logits(mask, roi, low)
        masks.append(sitk.GetArrayFromImage(mask))
    np.testing.assert_array_equal(masks[0], masks[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_device_path_on_cuda_gives_the_cpu_numbers():
    """ROI input, mask prompt and paste computed on a GPU (whole-array passes) equal the CPU's."""
    image, roi = grid_case("oblique")
    cuda = torch.device("cuda")
    np.testing.assert_allclose(
        R.model_input_tensor(image, roi, cuda).cpu().numpy(), R.model_input(image, roi), atol=1e-5
    )
    low = low_res_logits(7, ragged=True)
    masks = [_pasted_on_empty(image, roi, logits) for logits in (low, low.to(cuda))]
    assert np.count_nonzero(masks[0] != masks[1]) <= 1e-5 * masks[0].size
    mask = _mask_like(image, masks[0])
    assert float((P.mask_to_prompt(mask, roi, cuda).cpu() - P.mask_to_prompt(mask, roi)).abs().max()) <= 1e-4


def test_a_paste_writes_the_mask_in_place_and_leaves_earlier_copies_alone():
    """The paste writes into the mask's own buffer: a copy taken before (a session's snapshot) keeps its voxels."""
    image, roi = grid_case("oblique")
    mask = _mask_like(image, np.zeros(R.Grid.of(image).size[::-1]))
    before = sitk.Image(mask)  # shares the buffer until one of them is written
    region, changed = P.paste_logits(mask, roi, low_res_logits(6, ragged=True))
    assert changed.any() and not sitk.GetArrayViewFromImage(before).any()
    written = sitk.GetArrayViewFromImage(mask)[zyx_slices(region)]
    np.testing.assert_array_equal(written.astype(bool), changed)  # from empty: the changed voxels are the mask


def test_a_paste_failing_halfway_leaves_the_mask_as_it_was(monkeypatch):
    """Slabs are written as they are computed; a failure after some of them flips those back."""
    image, roi = grid_case("oblique")
    mask = _mask_like(image, np.zeros(R.Grid.of(image).size[::-1]))
    P.paste_logits(mask, roi, low_res_logits(6, ragged=True))
    expected = sitk.GetArrayFromImage(mask)
    monkeypatch.setattr(P, "SLAB_VALUES", 1 << 12)  # many thin slabs
    real, calls = P._positive_into, []

    def failing(values, out):
        calls.append(1)
        if len(calls) == 5:
            raise MemoryError("no memory")
        real(values, out)

    monkeypatch.setattr(P, "_positive_into", failing)
    with pytest.raises(MemoryError):
        P.paste_logits(mask, roi, low_res_logits(7, ragged=True))
    assert len(calls) == 5
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected)
