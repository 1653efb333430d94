"""Click-simulation evaluation: samplers, crop modes, and the ``evaluate`` command."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import sphere_phantom, two_spheres_phantom
from support.standin import StandInModel

from SAMMed3DLib import InputError, InteractiveSession
from SAMMed3DLib.bench.evaluation import random_click, ritm_click, simulate
from SAMMed3DLib.cli import main


def test_ritm_clicks_centre_of_largest_error():
    truth = np.zeros((30, 30, 30), bool)
    truth[5:25, 5:25, 5:25] = True
    prediction = truth.copy()
    prediction[5:25, 5:25, 5:15] = False  # a 20x20x10 slab missed
    prediction[0:3, 0:3, 0:3] = True  # a small false positive
    voxel, positive = ritm_click(truth, prediction, np.random.default_rng(0))
    # Deepest voxels of the slab: mid-thickness along x, at least 5 voxels from its other faces.
    assert positive and voxel[2] in (9, 10) and 9 <= voxel[0] <= 20 and 9 <= voxel[1] <= 20


def test_random_click_is_in_error_and_reproducible():
    truth = np.zeros((10, 10, 10), bool)
    truth[2:5, 2:5, 2:5] = True
    prediction = np.zeros_like(truth)
    prediction[7:9, 7:9, 7:9] = True
    picks = [random_click(truth, prediction, np.random.default_rng(3)) for _ in range(2)]
    assert np.array_equal(picks[0][0], picks[1][0])
    for seed in range(10):
        voxel, positive = random_click(truth, prediction, np.random.default_rng(seed))
        assert (truth ^ prediction)[tuple(voxel)] and positive == bool(truth[tuple(voxel)])


@pytest.mark.parametrize("sampler", ["random", "ritm"])
@pytest.mark.parametrize("crop", ["bbox", "click"])
def test_simulate_with_standin(sampler, crop):
    image, truth = sphere_phantom()
    results = simulate(StandInModel(), image, sitk.GetArrayFromImage(truth) > 0, 3, sampler, 0, crop)
    assert 1 <= len(results) <= 3 and results[0].positive
    assert max(r.dice for r in results) >= 0.9


def test_bbox_crop_centres_first_roi_on_the_structure():
    image, a, _ = two_spheres_phantom()
    rois = []

    class Recording(InteractiveSession):
        def add_click(self, point_ras, positive=True):
            mask = super().add_click(point_ras, positive)
            rois.append(self.roi)
            return mask

    truth = sitk.GetArrayFromImage(a) > 0
    simulate(StandInModel(), image, truth, 1, "random", 5, "bbox", session_factory=Recording)
    voxels = np.argwhere(truth)
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint((voxels.min(0) + voxels.max(0))[::-1] / 2))
    assert np.abs(rois[0].index_of(centre) - 64).max() <= 1.0


def test_simulate_rejects_bad_options():
    image, truth = sphere_phantom(size=(20, 20, 20))
    mask = sitk.GetArrayFromImage(truth) > 0
    with pytest.raises(InputError, match="sampler"):
        simulate(StandInModel(), image, mask, 1, sampler="best")
    with pytest.raises(InputError, match="empty"):
        simulate(StandInModel(), image, mask & False, 1)


def test_evaluate_command(tmp_path, tiny_checkpoint, capsys):
    image, a, b = two_spheres_phantom()
    labels = sitk.Cast(a + b * 2, sitk.sitkUInt8)
    image_path, label_path, out = tmp_path / "img.nii.gz", tmp_path / "lbl.nrrd", tmp_path / "res.json"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(labels, str(label_path))
    argv = ["evaluate", "--image", str(image_path), "--label", str(label_path), "--weights", str(tiny_checkpoint)]
    code = main([*argv, "--clicks", "2", "--sampler", "ritm", "--json", str(out), "--device", "cpu"])
    assert code == 0
    table = capsys.readouterr().out
    assert "click 1" in table and "click 2" in table
    result = json.loads(out.read_text())
    assert set(result["labels"]) == {"1", "2"}
    for steps in result["labels"].values():
        assert 1 <= len(steps) <= 2 and steps[0]["positive"] and 0.0 <= steps[0]["dice"] <= 1.0


@pytest.fixture
def evaluate_files(tmp_path):
    image, a, b = two_spheres_phantom()
    image_path = tmp_path / "img.nii.gz"
    sitk.WriteImage(image, str(image_path))
    return image_path, sitk.Cast(a + b * 2, sitk.sitkUInt8)


def evaluate_argv(image_path, label_path, tiny_checkpoint, *extra):
    return [
        "evaluate",
        "--image",
        str(image_path),
        "--label",
        str(label_path),
        "--weights",
        str(tiny_checkpoint),
        *extra,
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda lbl: lbl.SetOrigin([v + s for v, s in zip(lbl.GetOrigin(), (0.0, 0.0, 100.0))]), "its origin"),
        (lambda lbl: lbl.SetSpacing((3.0, 3.0, 2.0)), "its spacing (3, 3, 2) mm differs from the image's (3, 3, 3) mm"),
        (lambda lbl: lbl.SetDirection((1, 0, 0, 0, 0, 1, 0, 1, 0)), "its direction"),
    ],
    ids=["shifted-100mm", "spacing", "direction"],
)
def test_evaluate_label_off_the_image_grid(tmp_path, evaluate_files, tiny_checkpoint, capsys, change, message):
    image_path, labels = evaluate_files
    change(labels)
    label_path = tmp_path / "lbl.nii.gz"
    sitk.WriteImage(labels, str(label_path))
    code = main(evaluate_argv(image_path, label_path, tiny_checkpoint, "--json", str(tmp_path / "r.json")))
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "" and not (tmp_path / "r.json").exists()
    assert len(err) == 1 and err[0].startswith(f"error: the label map {label_path} must lie on the image's grid")
    assert message in err[0]


@pytest.mark.parametrize(
    "json_path, message",
    [("/proc/res.json", "--json /proc/res.json: cannot write in /proc"), ("missing/res.json", "does not exist")],
    ids=["unwritable", "missing-folder"],
)
def test_evaluate_json_path_checked_before_work(
    tmp_path, evaluate_files, tiny_checkpoint, capfd, monkeypatch, json_path, message
):
    monkeypatch.chdir(tmp_path)
    image_path, labels = evaluate_files
    sitk.WriteImage(labels, str(tmp_path / "lbl.nrrd"))
    code = main(evaluate_argv(image_path, tmp_path / "lbl.nrrd", tiny_checkpoint, "--json", json_path))
    captured = capfd.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "" and len(err) == 1 and message in err[0]
    assert not (tmp_path / "missing").exists()


def test_evaluate_json_write_failure_is_one_error(tmp_path, evaluate_files, tiny_checkpoint):
    """A real file-size limit in a child process: Python raises (EFBIG) and the message names the user's path."""
    from support.limits import run_with_file_size_limit

    image_path, labels = evaluate_files
    sitk.WriteImage(labels, str(tmp_path / "lbl.nrrd"))
    out = tmp_path / "res.json"
    argv = evaluate_argv(image_path, tmp_path / "lbl.nrrd", tiny_checkpoint, "--clicks", "1", "--json", str(out))
    code, err = run_with_file_size_limit(argv, 100)
    assert code == 2 and not out.exists()
    assert err == [f"error: cannot write {out}: File too large"]  # the user's path, not the staging one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz", "lbl.nrrd"]
