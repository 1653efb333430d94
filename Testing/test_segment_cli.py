"""``python -m SAMMed3DLib segment`` end to end with the tiny random-weight checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import centre_ras, sphere_phantom

from SAMMed3DLib import InputError
from SAMMed3DLib.cli import main
from SAMMed3DLib.cli.images import read_image
from SAMMed3DLib.cli.markups import parse_points, read_markups


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


def error_lines(capfd) -> list:
    """What reached the process's standard error (file descriptor 2, so native ITK output too), as lines."""
    return capfd.readouterr().err.strip().splitlines()


def test_click_outside_and_bad_point_text(tmp_path, phantom, tiny_checkpoint, capfd):
    path, image, click = phantom
    code, out = run_segment(
        tmp_path, path, "--positive", ",".join(map(str, click)), "5000,0,0", weights=tiny_checkpoint
    )
    err = error_lines(capfd)
    assert code == 2 and not out.exists() and len(err) == 1
    assert err[0] == "error: the click at RAS (5000.0, 0.0, 0.0) mm is outside the image volume"
    code, out = run_segment(tmp_path, path, "--positive", "1,2", weights=tiny_checkpoint)
    err = error_lines(capfd)
    assert code == 2 and not out.exists() and len(err) == 1 and "R,A,S" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_markups_points_not_placed_are_skipped(tmp_path):
    def control(position, status):
        point = {"id": str(len(position)), "position": list(position)}
        return point if status is None else {**point, "positionStatus": status}

    def write(controls):
        document = {"markups": [{"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": controls}]}
        path = tmp_path / f"points{len(list(tmp_path.iterdir()))}.mrk.json"
        path.write_text(json.dumps(document))
        return path

    mixed = write(
        [
            control((0, 0, 0), "undefined"),
            control((1, 2, 3), "defined"),
            control((4, 5, 6), "preview"),
            control((7, 8, 9), None),  # older files have no positionStatus: placed
        ]
    )
    assert read_markups(mixed) == [(1.0, 2.0, 3.0), (7.0, 8.0, 9.0)]
    unplaced = write([control((0, 0, 0), "undefined"), control((1, 1, 1), "preview")])
    with pytest.raises(InputError, match=r"has no control points \(2 not placed"):
        read_markups(unplaced)


def staging_leftovers(folder) -> list:
    return [p.name for p in folder.rglob(".sammed3d-*")]


def test_outputs_are_all_or_nothing(tmp_path, phantom, tiny_checkpoint, capfd):
    path, _, click = phantom
    args = ("--positive", ",".join(map(str, click)))
    # A --save-roi that cannot be written, found before any work: no mask either.
    code, out = run_segment(tmp_path, path, *args, "--save-roi", "/proc/roi.nii.gz", weights=tiny_checkpoint)
    err = error_lines(capfd)
    assert code == 2 and not out.exists() and len(err) == 1 and "--save-roi /proc/roi.nii.gz" in err[0]
    # A --save-roi in a format without a writer: refused before any work, so no mask either.
    roi = tmp_path / "roi.xyz"
    code, out = run_segment(tmp_path, path, *args, "--save-roi", str(roi), weights=tiny_checkpoint)
    err = error_lines(capfd)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: --save-roi {roi}: a .xyz file cannot hold")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    # A missing output folder is an error, never created.
    missing = tmp_path / "new" / "mask.nii.gz"
    argv = ["segment", "--image", str(path), "--weights", str(tiny_checkpoint), *args, "--out", str(missing)]
    assert main(argv) == 2 and not missing.parent.exists()
    assert error_lines(capfd) == [f"error: --out {missing}: the folder {missing.parent} does not exist"]
    # Success: a format with a companion data file (.mhd + .zraw) arrives whole; an old file is replaced.
    (tmp_path / "mask.mhd").write_text("old")
    code, _ = run_segment(tmp_path, path, *args, "--save-roi", str(tmp_path / "roi.nii.gz"), weights=tiny_checkpoint)
    argv = [
        "segment",
        "--image",
        str(path),
        "--weights",
        str(tiny_checkpoint),
        *args,
        "--out",
        str(tmp_path / "mask.mhd"),
    ]
    assert code == 0 and main(argv) == 0
    assert sitk.ReadImage(str(tmp_path / "mask.mhd")).GetSize() == sitk.ReadImage(str(path)).GetSize()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.mhd", "mask.nii.gz", "mask.zraw", "roi.nii.gz"]


def test_failed_write_prints_one_line(tmp_path, phantom, tiny_checkpoint):
    """A file-size limit (real, in a child process): the NIfTI library's own "** ERROR: NWAD" line is held
    back, the short file is caught (ITK does not raise) and nothing is left behind."""
    from support.limits import run_with_file_size_limit

    path, _, click = phantom
    out = tmp_path / "mask.nii"  # uncompressed: 48³ bytes, well past the limit
    argv = ["segment", "--image", str(path), "--weights", str(tiny_checkpoint), "--out", str(out)]
    code, err = run_with_file_size_limit([*argv, "--positive", ",".join(map(str, click))], 20_000)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot write {out}: the file on disk is incomplete (disk full?)")
    assert list(tmp_path.iterdir()) == []


def test_same_file_for_both_outputs_fails_before_any_work(tmp_path, phantom, capfd):
    """Found next to the other output checks: the image is not read nor the (here missing) model loaded."""
    path, _, click = phantom
    for roi in (tmp_path / "mask.nii.gz", tmp_path / "." / "mask.nii.gz"):
        argv = ["--positive", ",".join(map(str, click)), "--save-roi", str(roi)]
        code, out = run_segment(tmp_path, path, *argv, weights=tmp_path / "missing.pth")
        assert code == 2 and error_lines(capfd) == [f"error: --out and --save-roi name the same file: {roi}"]
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing_move", [1, 2], ids=["move-in-first", "move-in-second"])
def test_commit_puts_the_old_files_back_when_a_move_fails(tmp_path, monkeypatch, failing_move):
    """Whichever move of a new file fails, nothing changes and nothing stays (the old files never moved)."""
    import os

    import SAMMed3DLib.cli.outputs as outputs
    from SAMMed3DLib.cli.images import write_text

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text("old a")
    second.write_text("old b")
    replace, moves = os.replace, []

    def failing_replace(source, destination):
        if Path(source).parent.name == outputs.NEW:  # a staged file moving in (not the journal's rename)
            moves.append(destination)
            if len(moves) == failing_move:
                raise PermissionError(13, "Permission denied")
        replace(source, destination)

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    failure = r"into place \(Permission denied\); no file was changed$"
    with pytest.raises(InputError, match=failure) as caught, outputs.StagedOutputs() as staged:
        staged.stage(first, lambda p: write_text("new a", p))
        staged.stage(second, lambda p: write_text("new b", p))
    assert ".sammed3d-" not in str(caught.value)
    assert first.read_text() == "old a" and second.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no staging or kept files
    assert moves[-1] == (first if failing_move == 1 else second)


def test_commit_replaces_all_files_on_success(tmp_path):
    from SAMMed3DLib.cli.images import write_text
    from SAMMed3DLib.cli.outputs import StagedOutputs

    (tmp_path / "a.json").write_text("old a")
    with StagedOutputs() as outputs:
        outputs.stage(tmp_path / "a.json", lambda p: write_text("new a", p))
        outputs.stage(tmp_path / "b.json", lambda p: write_text("new b", p))
    assert (tmp_path / "a.json").read_text() == "new a" and (tmp_path / "b.json").read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_native_stderr_is_held_back_on_failure_only(capfd):
    import os
    import sys

    from SAMMed3DLib.cli.images import native_stderr_held

    with native_stderr_held():
        os.write(2, b"** WARNING from native code\n")
    sys.stderr.flush()
    assert error_lines(capfd) == ["** WARNING from native code"]  # success: passed on
    with pytest.raises(RuntimeError), native_stderr_held():
        os.write(2, b"** ERROR from native code\n")
        raise RuntimeError("failed")
    assert error_lines(capfd) == []  # failure: the exception's message is the one that counts


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


def test_precision_option_runs_bf16_where_the_cpu_has_it_and_refuses_fp16(tmp_path, phantom, tiny_checkpoint, capfd):
    from SAMMed3DLib.device import cpu_has_bf16_products

    path, _, click = phantom
    point = ",".join(map(str, click))
    code, out = run_segment(tmp_path, path, "--positive", point, "--device", "cpu", "--precision", "fp16",
                            weights=tiny_checkpoint)  # fmt: skip
    error = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "fp16 is a GPU option" in error[0] and not out.exists()
    code, out = run_segment(tmp_path, path, "--positive", point, "--device", "cpu", "--precision", "bf16",
                            weights=tiny_checkpoint)  # fmt: skip
    if cpu_has_bf16_products():
        assert code == 0 and sitk.GetArrayFromImage(sitk.ReadImage(str(out))).any()
    else:
        assert code == 2 and "AVX512-BF16 or AMX" in capfd.readouterr().err and not out.exists()
