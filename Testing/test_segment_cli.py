"""``python -m SAMMed3DLib segment`` end to end with the tiny random-weight checkpoint."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from phantoms import centre_ras, sphere_phantom

from SAMMed3DLib.cli import main
from SAMMed3DLib.images import read_image
from SAMMed3DLib.markups import parse_points, read_markups


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    image, truth = sphere_phantom(size=(48, 48, 48), centre_ras=(-70.0, -72.0, 66.0))
    folder = tmp_path_factory.mktemp("segment")
    path = folder / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, image, centre_ras(truth)


def markups_file(path, points, system="LPS"):
    controls = [{"id": str(i), "position": list(p)} for i, p in enumerate(points)]
    document = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [{"type": "Fiducial", "coordinateSystem": system, "controlPoints": controls}],
    }
    path.write_text(json.dumps(document))
    return str(path)


def run_segment(tmp_path, image_path, *extra, weights):
    out = tmp_path / "mask.nii.gz"
    code = main(["segment", "--image", str(image_path), "--weights", str(weights), "--out", str(out), *extra])
    return code, out


def test_segment_writes_mask_roi_and_timings(tmp_path, phantom, tiny_checkpoint, capsys):
    path, image, click = phantom
    roi_path = tmp_path / "roi.nii.gz"
    code, out = run_segment(
        tmp_path,
        path,
        "--positive",
        ",".join(map(str, click)),
        "--negative",
        "-40,-40,40",
        "--save-roi",
        str(roi_path),
        "--timings",
        "--device",
        "cpu",
        weights=tiny_checkpoint,
    )
    assert code == 0
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == image.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    assert np.allclose(mask.GetOrigin(), image.GetOrigin()) and np.allclose(mask.GetDirection(), image.GetDirection())
    roi = sitk.ReadImage(str(roi_path))
    assert roi.GetSize() == (128, 128, 128) and np.allclose(roi.GetSpacing(), 1.5)
    values = sitk.GetArrayViewFromImage(roi)
    assert abs(values[values > values.min()].mean()) < 0.5  # z-normalised
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(report["clicks"]) == 2 and set(report["clicks"][0]) >= {"encode", "decode", "paste", "total"}


def test_markups_lps_and_ras_give_the_same_click(tmp_path, phantom, tiny_checkpoint):
    path, _, click = phantom
    lps = markups_file(tmp_path / "p_lps.mrk.json", [(-click[0], -click[1], click[2])], "LPS")
    ras = markups_file(tmp_path / "p_ras.mrk.json", [click], "RAS")
    assert read_markups(lps) == read_markups(ras) == [tuple(float(v) for v in click)]
    masks = []
    for spec in (lps, ras, ",".join(map(str, click))):
        code, out = run_segment(tmp_path, path, "--positive", spec, weights=tiny_checkpoint)
        assert code == 0
        masks.append(sitk.GetArrayFromImage(sitk.ReadImage(str(out))))
    assert np.array_equal(masks[0], masks[1]) and np.array_equal(masks[1], masks[2])


@pytest.mark.parametrize(
    "points, system, message",
    [([], "LPS", "no control points"), ([(1, 2, 3)], "IJK", "unknown coordinateSystem")],
    ids=["empty", "unknown-system"],
)
def test_bad_markups_is_one_clear_error(tmp_path, phantom, tiny_checkpoint, capsys, points, system, message):
    path, _, _ = phantom
    spec = markups_file(tmp_path / "bad.mrk.json", points, system)
    code, out = run_segment(tmp_path, path, "--positive", spec, weights=tiny_checkpoint)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and message in err[0]


def test_click_outside_and_bad_point_text(tmp_path, phantom, tiny_checkpoint, capsys):
    path, _, _ = phantom
    code, _ = run_segment(tmp_path, path, "--positive", "5000,0,0", weights=tiny_checkpoint)
    assert code == 2 and "outside the image" in capsys.readouterr().err
    code, _ = run_segment(tmp_path, path, "--positive", "1,2", weights=tiny_checkpoint)
    assert code == 2 and "R,A,S" in capsys.readouterr().err


def test_parse_points_accepts_negative_numbers():
    assert parse_points("-1.5,2,-3e1") == [(-1.5, 2.0, -30.0)]


def write_dicom_series(image: sitk.Image, folder) -> None:
    """A minimal CT-like DICOM series (one file per slice) with position/orientation tags."""
    folder.mkdir()
    direction = image.GetDirection()
    orientation = "\\".join(
        f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    )
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": orientation,
            "0020|0013": str(z + 1),
            "0028|0030": f"{image.GetSpacing()[1]:.4f}\\{image.GetSpacing()[0]:.4f}",
            "0018|0050": f"{image.GetSpacing()[2]:.4f}",
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice_)


def test_reads_nrrd_and_dicom_series(tmp_path, phantom):
    _, image, _ = phantom
    nrrd = tmp_path / "image.nrrd"
    sitk.WriteImage(image, str(nrrd))
    assert read_image(nrrd).GetSize() == image.GetSize()
    write_dicom_series(image, tmp_path / "dicom")
    series = read_image(tmp_path / "dicom")
    assert series.GetSize() == image.GetSize()
    assert np.allclose(series.GetOrigin(), image.GetOrigin(), atol=1e-3)
    assert np.allclose(series.GetSpacing(), image.GetSpacing(), atol=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(series), sitk.GetArrayFromImage(image))
