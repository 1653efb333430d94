"""Input files that are not what they claim are refused, never silently read (files).

Truncated files, NaN/Inf voxels ITK's NIfTI reader turns into 0, geometry an output format cannot hold.
"""

import gzip
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import centre_ras, make_image, sphere_phantom

from SAMMed3DLib import InputError
from SAMMed3DLib.cli import main
from SAMMed3DLib.cli.images import read_image, write_image


def volume(dtype=np.float32) -> sitk.Image:
    values = np.random.default_rng(0).normal(100, 20, (12, 14, 16)).astype(dtype)
    return make_image(values, pixel_type=dtype)


def cut(path, keep_fraction: float, gzipped: bool = False):
    """Keep only the first part of the file (of its uncompressed bytes when ``gzipped``: a half-copied file)."""
    data = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
    data = data[: int(len(data) * keep_fraction)]
    path.write_bytes(gzip.compress(data) if gzipped else data)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.nrrd", "v.mha"])
def test_truncated_file_is_refused(tmp_path, name):
    path = tmp_path / name
    sitk.WriteImage(volume(), str(path), useCompression=False)
    cut(path, 0.6, gzipped=False)
    with pytest.raises(InputError):
        read_image(path)


def test_half_copied_gzip_nifti_with_a_complete_stream_is_refused(tmp_path):
    """A gzip stream that ends cleanly but holds only part of the data: only the header's count tells."""
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(volume(), str(path), useCompression=True)
    cut(path, 0.5, gzipped=True)
    with pytest.raises(InputError, match=r"is truncated: its header promises 10752 bytes of voxel data but only"):
        read_image(path)


def test_nifti2_truncated_is_refused(tmp_path):
    """NIfTI-2 (540-byte header, written by nibabel; this ITK build does not read it, so the check alone)."""
    import nibabel

    from SAMMed3DLib.rawfiles import check_nifti_data

    path = tmp_path / "v.nii"
    nibabel.save(nibabel.Nifti2Image(np.arange(120, dtype=np.float32).reshape(4, 5, 6), np.eye(4)), str(path))
    check_nifti_data(path)  # whole: accepted
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="promises 480 bytes of voxel data but only 380"):
        check_nifti_data(path)


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_header_promising_terabytes_is_refused_before_itk_allocates(tmp_path, name):
    """Also: a 4000³ float32 header (256 GB) over 1 kB of data never reaches ITK."""
    import nibabel

    path = tmp_path / name
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(tmp_path / "small.nii"))
    data = bytearray((tmp_path / "small.nii").read_bytes())
    data[42:48] = np.array([4000, 4000, 4000], dtype="<i2").tobytes()
    path.write_bytes(gzip.compress(bytes(data)) if name.endswith(".gz") else bytes(data))
    with pytest.raises(InputError, match="is truncated: its header promises 256000000000 bytes"):
        read_image(path)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_nifti_voxels_are_refused(tmp_path, name, bad, dtype):
    """ITK's NIfTI reader turns them into 0, so the engine's own check never sees them: the raw bytes decide."""
    values = sitk.GetArrayFromImage(volume(dtype))
    values[5, 6, 7] = bad
    path = tmp_path / name
    sitk.WriteImage(make_image(values, pixel_type=dtype), str(path))
    with pytest.raises(InputError, match="NaN or infinite"):
        read_image(path)


def sheared(size=(48, 48, 48)) -> sitk.Image:
    """A gantry-tilt-like volume: the third axis leans 20° towards the second (not orthonormal)."""
    image, _ = sphere_phantom(size=size, centre_ras=(-70.0, -72.0, 66.0))
    tilt = np.radians(20.0)
    image.SetDirection((1, 0, 0, 0, 1, np.sin(tilt), 0, 0, np.cos(tilt)))
    return image


def test_sheared_image_as_nifti_output_is_refused_before_work(tmp_path, tiny_checkpoint, capfd):
    image = sheared()
    path = tmp_path / "tilted.nrrd"
    sitk.WriteImage(image, str(path))
    click = ",".join(map(str, centre_ras(sitk.Cast(image > 150, sitk.sitkUInt8))))
    argv = ["segment", "--image", str(path), "--weights", str(tmp_path / "missing.pth"), "--positive", click]
    code = main([*argv, "--out", str(tmp_path / "mask.nii.gz")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot hold the image's geometry" in err[0], err
    assert "write .nrrd or .mha" in err[0] and sorted(p.name for p in tmp_path.iterdir()) == ["tilted.nrrd"]


def test_sheared_image_keeps_its_geometry_in_nrrd(tmp_path, tiny_checkpoint):
    image = sheared()
    path, out = tmp_path / "tilted.nrrd", tmp_path / "mask.nrrd"
    sitk.WriteImage(image, str(path))
    click = ",".join(map(str, centre_ras(sitk.Cast(image > 150, sitk.sitkUInt8))))
    argv = ["segment", "--image", str(path), "--weights", str(tiny_checkpoint), "--positive", click]
    assert main([*argv, "--out", str(out)]) == 0
    mask = sitk.ReadImage(str(out))
    np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-6)


def test_write_image_refuses_a_format_that_would_move_the_mask(tmp_path):
    with pytest.raises(InputError, match="cannot hold the image's geometry"), warnings.catch_warnings():
        write_image(sitk.Cast(sheared((8, 8, 8)), sitk.sitkUInt8), tmp_path / "m.nii.gz")
