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


def test_bf16_on_a_cpu_without_bf16_instructions_is_one_rule_everywhere(tmp_path, capfd, monkeypatch, phantom):
    """bench refuses as segment, evaluate and bench-session do: the same line, before any run."""
    from SAMMed3DLib import device
    from SAMMed3DLib.bench import network, session

    monkeypatch.setattr(device, "cpu_has_bf16_products", lambda: False)
    monkeypatch.setattr(network, "run_benchmark", lambda settings: pytest.fail("bench ran"))
    monkeypatch.setattr(session, "run_session_benchmark", lambda *a, **k: pytest.fail("bench-session ran"))
    image, click = phantom
    common = ["--device", "cpu", "--precision", "bf16"]
    lines = {
        "bench": one_error(capfd, main(["bench", "--no-reference", *common])),
        "bench-session": one_error(capfd, main(["bench-session", "--no-reference", *common])),
        "segment": one_error(capfd, main(["segment", "--image", str(image), "--weights", "w.pth", "--positive", click,
                                          "--out", str(tmp_path / "m.nii.gz"), *common])),
        "evaluate": one_error(capfd, main(["evaluate", "--image", str(image), "--label", str(image), "--weights",
                                           "w.pth", *common])),
    }  # fmt: skip
    assert len(set(lines.values())) == 1, lines
    assert "bf16 needs a CPU with AVX512-BF16 or AMX" in lines["bench"]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    from support.phantoms import two_spheres_phantom

    image, a, b = two_spheres_phantom()
    folder = tmp_path_factory.mktemp("evaluate")
    sitk.WriteImage(image, str(folder / "img.nii.gz"))
    sitk.WriteImage(sitk.Cast(a + b * 2, sitk.sitkUInt8), str(folder / "lbl.nrrd"))
    return folder / "img.nii.gz", folder / "lbl.nrrd"


def evaluate(labelled, weights, *extra) -> list:
    image, label = labelled
    argv = ["evaluate", "--image", str(image), "--label", str(label), "--weights", str(weights), "--device", "cpu"]
    return [*argv, "--clicks", "2", "--sampler", "ritm", *extra]


@pytest.mark.parametrize("terminal, quiet", [(True, False), (True, True), (False, False)],
                         ids=["terminal", "quiet", "not-a-terminal"])  # fmt: skip
def test_evaluate_reports_progress_on_a_terminal(capsys, monkeypatch, labelled, tiny_checkpoint, terminal, quiet):
    from SAMMed3DLib.cli import progress

    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: terminal)
    assert main(evaluate(labelled, tiny_checkpoint, *(["--quiet"] if quiet else []))) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    if terminal and not quiet:
        assert lines[0].startswith("label 1 (1 of 2 structures): click 1 of 2, Dice ")
        assert any(line.startswith("label 2 (2 of 2 structures): click 1 of 2, Dice ") for line in lines)
        assert all(" click " in line for line in lines)
    else:
        assert lines == []
    assert captured.out.startswith("label ")  # the table stays on standard output


@pytest.mark.parametrize("quiet", [False, True])
def test_an_implicit_download_shows_its_progress(srv, tmp_path, capsys, monkeypatch, labelled, tiny_checkpoint, quiet):
    """``--weights ID`` not yet in the cache: the download draws a bar on standard error (not under --quiet)."""
    from support.http_fixtures import registry_entry, write_registry

    from SAMMed3DLib.cli import progress

    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    url = srv.add("/tiny.pth", tiny_checkpoint.read_bytes())
    monkeypatch.setenv("SAMMED3D_REGISTRY", write_registry(tmp_path / "r.json", registry_entry("tiny", [url])))
    monkeypatch.setenv("SAMMED3D_CACHE_DIR", str(tmp_path / "cache"))
    assert main(evaluate(labelled, "tiny", "--clicks", "1", *(["--quiet"] if quiet else []))) == 0
    err = capsys.readouterr().err
    assert ("tiny 100% [" in err) != quiet
    assert (tmp_path / "cache").exists()


def test_cli_summaries_say_one_in_the_singular():
    """A one-case, one-structure, one-click run reads "1 case", "1 structure", "1 click" (not "1 clicks")."""
    from SAMMed3DLib.cli.batch import Outcome, summary
    from SAMMed3DLib.slicer.feedback import travel_status

    assert summary([Outcome("a", "done", 1.0, "1 click")], 2.0).splitlines()[-1].startswith("1 case: 1 done")

    class Result:
        clicks = [object()]

    assert travel_status(Result(), undo=True) == "undone (1 click)"
