"""The ROI extraction reproduces the official torchio preprocessing on real data (MNI152 T1, 1 mm).

Official: ``Resample(1.5)`` → ``ToCanonical()`` → ``CropOrPad(128, mask at the target)`` →
``ZNormalization(masking x > 0)`` on the whole volume; ours resamples only the ROI. torchio, nilearn and
nibabel are test-only.
"""

import numpy as np
import pytest
import SimpleITK as sitk

from SAMMed3DLib import roi as R

tio = pytest.importorskip("torchio")
torch = pytest.importorskip("torch")
RAS = np.array([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def mni(tmp_path_factory) -> sitk.Image:
    datasets = pytest.importorskip("nilearn.datasets")
    nib = pytest.importorskip("nibabel")
    path = tmp_path_factory.mktemp("mni") / "mni152_t1_1mm.nii.gz"
    nib.save(datasets.load_mni152_template(resolution=1), str(path))
    return sitk.ReadImage(str(path)) * 1000  # template values are 0..1; scale to CT/MR-like units


def official_roi(image: sitk.Image, point_lps: np.ndarray):
    """(normalised ROI [i, j, k], raw ROI, click voxel in it, ROI affine (RAS)) via the torchio pipeline."""
    subject = tio.Subject(image=tio.ScalarImage.from_sitk(image))
    subject = tio.ToCanonical()(tio.Resample(1.5)(subject))
    affine = subject.image.affine
    index = np.linalg.inv(affine) @ np.r_[point_lps * RAS, 1.0]
    target = np.clip(np.floor(index[:3] + 0.5).astype(int), 0, np.array(subject.image.shape[1:]) - 1)
    label = torch.zeros((1, *subject.image.shape[1:]), dtype=torch.uint8)
    label[(0, *target)] = 1
    subject.add_image(tio.LabelMap(tensor=label, affine=affine), "label")
    subject = tio.CropOrPad(128, mask_name="label")(subject)
    raw = subject.image.data[0].numpy().astype(np.float32)
    subject = tio.ZNormalization(masking_method=lambda x: x > 0)(subject)
    click = torch.argwhere(subject.label.data[0])[0].numpy()
    return subject.image.data[0].numpy(), raw, click, subject.image.affine


def lps_variant(image: sitk.Image) -> sitk.Image:
    """The same object stored with the first two axes reversed (an LPS-ordered file)."""
    values = sitk.GetArrayFromImage(image)[:, ::-1, ::-1]
    out = sitk.GetImageFromArray(np.ascontiguousarray(values))
    out.SetSpacing(image.GetSpacing())
    out.SetDirection((np.asarray(image.GetDirection()).reshape(3, 3) * RAS).reshape(-1).tolist())
    size = image.GetSize()
    out.SetOrigin(image.TransformIndexToPhysicalPoint((size[0] - 1, size[1] - 1, 0)))
    return out


def oblique_variant(image: sitk.Image) -> sitk.Image:
    a, b = np.deg2rad(25), np.deg2rad(-15)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    out = sitk.Image(image)
    out.SetDirection((rz @ rx @ np.asarray(image.GetDirection()).reshape(3, 3)).reshape(-1).tolist())
    return out


def anisotropic_variant(image: sitk.Image) -> sitk.Image:
    """Resampled to 0.7 x 0.7 x 5 mm, stored as int16 (a thick-slice clinical series)."""
    spacing = (0.7, 0.7, 5.0)
    size = [int(n * s / t) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    reference = sitk.Image(size, sitk.sitkInt16)
    reference.SetSpacing(spacing)
    reference.SetOrigin(image.GetOrigin())
    reference.SetDirection(image.GetDirection())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkInt16)


VARIANTS = {
    "ras": lambda im: im,
    "lps": lps_variant,
    "oblique": oblique_variant,
    "anisotropic": anisotropic_variant,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("where", [(120, 100, 90), (5, 220, 180)], ids=["inside", "near-corner"])
def test_roi_matches_torchio(mni, variant, where):
    image = VARIANTS[variant](mni)
    point = np.array(mni.TransformIndexToPhysicalPoint(where), dtype=float)
    if variant == "oblique":
        point = np.array(image.TransformIndexToPhysicalPoint(where), dtype=float)
    expected, expected_raw, expected_click, expected_affine = official_roi(image, point)
    roi = R.roi_for_points(R.Grid.of(image), [point])
    ours = R.model_input(image, roi)
    # Same samples: within one intensity unit (torchio rounds int16 images to whole units).
    np.testing.assert_allclose(R.extract_intensities(image, roi), expected_raw, atol=1.0)

    correlation = np.corrcoef(expected.ravel(), ours.ravel())[0, 1]
    assert correlation >= 0.99, correlation
    assert np.abs(roi.voxel_of(point) - expected_click).max() <= 1
    affine = np.eye(4)
    affine[:3, :3] = R.Grid.of(R.roi_image(ours, roi)).matrix * RAS[:, None]
    affine[:3, 3] = np.asarray(roi.grid.origin) * RAS
    np.testing.assert_allclose(affine, expected_affine, atol=1e-4)
    print(f"{variant}/{where}: r={correlation:.6f} click={roi.voxel_of(point)} official={expected_click}")


def test_canonical_axes_match_nibabel():
    nib_orientations = pytest.importorskip("nibabel.orientations")
    rng = np.random.default_rng(0)
    for _ in range(50):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        affine = np.eye(4)
        affine[:3, :3] = q * RAS[:, None]  # RAS affine of an LPS direction q
        ornt = nib_orientations.io_orientation(affine)
        axis_of, sign_of = R.canonical_axes(q)
        for image_axis, (world_axis, sign) in enumerate(ornt.astype(int)):
            assert axis_of[world_axis] == image_axis
            assert sign_of[world_axis] == sign


def test_znormalize_matches_torchio_convention():
    rng = np.random.default_rng(1)
    values = rng.normal(10, 30, size=(16, 16, 16)).astype(np.float32)
    expected = tio.ZNormalization.znorm(torch.from_numpy(values)[None], torch.from_numpy(values > 0)[None])[0]
    np.testing.assert_allclose(R.znormalize(values), expected.numpy(), rtol=1e-5, atol=1e-5)
