"""The command line's rough edges: outputs checked before any work, 2-D/4-D images, what a run prints."""

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import centre_ras, sphere_phantom

from SAMMed3DLib.cli import images, main
from SAMMed3DLib.wording import count

REFUSED = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".vtk", ".gipl", ".txt", ".json", ".gz", ""]


def one_error(capfd, code: int) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    image, truth = sphere_phantom(size=(40, 40, 40), centre_ras=(-70.0, -72.0, 66.0))
    path = tmp_path_factory.mktemp("edges") / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, ",".join(map(str, centre_ras(truth)))


@pytest.mark.parametrize("option", ["--out", "--save-roi"])
@pytest.mark.parametrize("suffix", REFUSED)
def test_each_refused_output_format_is_one_line_before_any_work(tmp_path, capfd, monkeypatch, option, suffix):
    """Refused before the image is read (the check runs first; nothing is written)."""
    monkeypatch.setattr(images, "read_image", lambda path: pytest.fail("the image was read before the check"))
    bad = tmp_path / f"file{suffix}"
    paths = {"--out": tmp_path / "mask.nii.gz", "--save-roi": tmp_path / "roi.nii.gz", option: bad}
    argv = ["segment", "--image", "image.nii.gz", "--weights", "w.pth", "--positive", "0,0,0"]
    argv += ["--out", str(paths["--out"]), "--save-roi", str(paths["--save-roi"])]
    line = one_error(capfd, main(argv))
    assert line.startswith(f"error: {option} {bad}: ") and "cannot hold a 3-D volume" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["m.nii.gz", "m.NII", "m.nrrd", "m.nhdr", "m.mha", "m.mhd", "m.hdf5"])
def test_volume_formats_are_accepted(name):
    images.check_volume_path(name, "--out")


@pytest.mark.parametrize("command", ["segment", "evaluate"])
@pytest.mark.parametrize("size", [(30, 20), (10, 12, 14, 3)], ids=["2-D", "4-D"])
def test_2d_and_4d_nifti_are_one_line(tmp_path, capfd, tiny_checkpoint, command, size):
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(sitk.Image(list(size), sitk.sitkInt16), str(path))
    shape = "x".join(map(str, size))
    argv = [command, "--image", str(path), "--weights", str(tiny_checkpoint)]
    if command == "segment":
        argv += ["--positive", "0,0,0", "--out", str(tmp_path / "mask.nii.gz")]
    else:
        argv += ["--label", str(path)]
    line = one_error(capfd, main(argv))
    assert line == f"error: {path} is a {len(size)}-D image ({shape} voxels); a 3-D volume is needed"


def test_segment_says_what_it_wrote(tmp_path, capsys, phantom, tiny_checkpoint):
    image, click = phantom
    out, roi = tmp_path / "mask.nii.gz", tmp_path / "roi.nii.gz"
    argv = ["segment", "--image", str(image), "--weights", str(tiny_checkpoint), "--positive", click]
    assert main([*argv, "--out", str(out), "--save-roi", str(roi), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    mask = sitk.ReadImage(str(out))
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    millilitres = voxels * np.prod(mask.GetSpacing()) / 1000
    assert voxels > 1
    assert lines[0].startswith(f"wrote {out}: {voxels:,} voxels, {millilitres:.1f} ml, ") and lines[0].endswith(" s")
    assert lines[1].startswith(f"wrote {roi}: the normalised model input")


def test_counts_are_in_the_singular_for_one():
    assert [count(n, "click") for n in (0, 1, 2, 18234)] == ["0 clicks", "1 click", "2 clicks", "18,234 clicks"]
    assert count(1, "structure") == "1 structure" and count(3, "case") == "3 cases"
