"""Hostile command lines get one line (``error: ...``, exit 2), never a traceback or a usage block."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import make_image, two_spheres_phantom

from SAMMed3DLib import InputError
from SAMMed3DLib.cli import main
from SAMMed3DLib.cli.markups import parse_points, read_markups


def one_error(capfd, code: int) -> str:
    """The single standard-error line of a failed command (and checks there was exactly one, and exit 2)."""
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's own exits
        return stop.code


@pytest.mark.parametrize(
    "argv, message",
    [
        (["segment", "--image", "x.nii"], "the following arguments are required"),
        (["evaluate", "--image", "a", "--label", "b", "--weights", "w", "--seed", "-1"], "--seed: -1 is less than 0"),
        (["evaluate", "--image", "a", "--label", "b", "--weights", "w", "--clicks", "0"], "--clicks: 0 is less than 1"),
        (["evaluate", "--image", "a", "--label", "b", "--weights", "w", "--seed", "x"], "'x' is not a whole number"),
        (["evaluate", "--image", "a", "--label", "b", "--weights", "w", "--bogus"], "unrecognized arguments"),
        (["nonsense"], "invalid choice"),
    ],
    ids=["missing", "seed-negative", "clicks-zero", "seed-text", "unknown-option", "unknown-command"],
)
def test_argument_errors_are_one_line(capfd, argv, message):
    line = one_error(capfd, run(argv))
    assert message in line


@pytest.mark.parametrize(
    "point, message",
    [
        ("-inf,-30,30", "must have three finite coordinates"),
        ("-nan,1,2", "must have three finite coordinates"),
        ("-30,-30,30;-31,-31,31", "has 6 numbers; give each point as its own value"),
        ("-.5,1", "has 2 numbers"),
    ],
)
def test_points_that_look_like_options_get_a_message_about_the_point(tmp_path, capfd, point, message):
    argv = ["segment", "--image", str(tmp_path / "x.nii"), "--weights", "w", "--out", str(tmp_path / "m.nii.gz")]
    line = one_error(capfd, run([*argv, "--positive", point]))
    assert message in line and point in line


def test_evaluate_seed_minus_one_from_the_api_is_an_input_error(tiny_model):
    from SAMMed3DLib.bench.evaluation import simulate

    image, a, _ = two_spheres_phantom()
    with pytest.raises(InputError, match="seed"):
        simulate(tiny_model, image, sitk.GetArrayFromImage(a) > 0, 1, seed=-1)


def markups(tmp_path, document) -> str:
    path = tmp_path / "p.mrk.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


@pytest.mark.parametrize(
    "position",
    ["123", [1, 2, "3"], [True, 0, 0], [1e999, 0, 0], [1, 2], 10**400],
    ids=["string", "string-item", "bool", "inf", "two", "huge-int"],
)
def test_markups_positions_must_be_three_finite_numbers(tmp_path, position):
    path = markups(tmp_path, {"markups": [{"controlPoints": [{"position": position}]}]})
    if position == [1e999, 0, 0]:
        path = markups(tmp_path, '{"markups": [{"controlPoints": [{"position": [1e999, 0, 0]}]}]}')
    with pytest.raises(InputError, match="position must be three finite numbers"):
        read_markups(path)


def test_deeply_nested_markups_is_one_error(tmp_path):
    path = markups(tmp_path, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        read_markups(path)


def test_parse_points_keeps_accepting_plain_points():
    assert parse_points("-1.5;2;-3e1") == [(-1.5, 2.0, -30.0)]


@pytest.mark.parametrize("label_value", [np.nan, np.inf, 0.5], ids=["nan", "inf", "fraction"])
def test_evaluate_bad_label_map_is_one_line(tmp_path, tiny_checkpoint, capfd, label_value):
    image, a, _ = two_spheres_phantom()
    values = sitk.GetArrayFromImage(a).astype(np.float32)
    values[values > 0] = label_value
    values[0, 0, 0] = 1.0
    label = make_image(values, pixel_type=np.float32)
    label.CopyInformation(image)
    image_path, label_path = tmp_path / "img.nrrd", tmp_path / "lbl.nrrd"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(label, str(label_path))
    argv = ["evaluate", "--image", str(image_path), "--label", str(label_path), "--weights", str(tiny_checkpoint)]
    line = one_error(capfd, run([*argv, "--clicks", "1"]))
    assert f"the label map {label_path}" in line


@pytest.mark.parametrize("command", ["bench", "bench-session"])
def test_bench_json_into_a_missing_folder_fails_before_the_run(tmp_path, capfd, command):
    missing = tmp_path / "no" / "report.json"
    line = one_error(capfd, run([command, "--no-reference", "--device", "cpu", "--json", str(missing)]))
    assert line == f"error: --json {missing}: the folder {missing.parent} does not exist"


def test_unknown_output_format_is_refused_before_work_naming_the_users_path(tmp_path, capfd):
    """Also: the format probe's temporary folder must not show in the message."""
    image, _, _ = two_spheres_phantom()
    sitk.WriteImage(image, str(tmp_path / "img.nrrd"))
    out = tmp_path / "mask.xyz"
    argv = ["segment", "--image", str(tmp_path / "img.nrrd"), "--weights", str(tmp_path / "missing.pth")]
    line = one_error(capfd, run([*argv, "--positive", "0,0,0", "--out", str(out)]))
    assert line.startswith(f"error: --out {out}: a .xyz file cannot hold a 3-D volume") and ".sammed3d-" not in line


def test_a_reader_that_goes_away_is_no_traceback():
    """``models | true``: the pipe closes before the listing is written; the command ends quietly."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(f"{sys.executable} -m SAMMed3DLib models | true", shell=True, cwd=root,
                          stderr=subprocess.PIPE, encoding="utf-8", timeout=120)  # fmt: skip
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
