"""Outputs lose nothing: full disks, killed commits, outputs naming inputs, read-only files.

Real failures only: a tmpfs that fills up, a file-size limit, a child process that dies between the
commit's steps, real hard and symbolic links.
"""

import os
import subprocess
from pathlib import Path

import pytest
import SimpleITK as sitk
from support.limits import commit_killed_at, run_with_file_size_limit
from support.phantoms import centre_ras, sphere_phantom, two_spheres_phantom

from SAMMed3DLib import InputError
from SAMMed3DLib.cli import main
from SAMMed3DLib.cli.images import write_text
from SAMMed3DLib.cli.outputs import STAGING_PREFIX, StagedOutputs, check_output_path


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    image, truth = sphere_phantom(size=(48, 48, 48), centre_ras=(-70.0, -72.0, 66.0))
    path = tmp_path_factory.mktemp("outputs") / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, ",".join(map(str, centre_ras(truth)))


def segment_argv(image, click, weights, out, *extra):
    return ["segment", "--image", str(image), "--weights", str(weights), "--positive", click, "--out", str(out), *extra]


def errors(capfd) -> list:
    return capfd.readouterr().err.strip().splitlines()


def leftovers(folder: Path) -> list:
    return [p.name for p in Path(folder).rglob(STAGING_PREFIX + "*")]


# --- full disks -----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root; skipped where mounting is refused), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_keeps_the_previous_mask(small_disk, phantom, tiny_checkpoint, capfd):
    image, click = phantom
    out = small_disk / "mask.nii"  # uncompressed 48³ mask: 110 kB
    out.write_bytes(b"previous mask")
    (small_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 60 * 1024))  # ~56 kB left (tmpfs rounds to pages)
    code = main(segment_argv(image, click, tiny_checkpoint, out))
    err = errors(capfd)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot write {out}: the file on disk is incomplete (disk full?)")
    assert out.read_bytes() == b"previous mask"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "mask.nii"]


@pytest.mark.parametrize("roi_name", ["roi.nii.gz", "roi.mha"], ids=["nifti-gz", "metaimage"])
def test_file_size_limit_on_save_roi_keeps_both_previous_files(tmp_path, phantom, tiny_checkpoint, roi_name):
    """The mask fits under the limit, the 8 MB ROI does not: neither replaces its previous file."""
    image, click = phantom
    out, roi = tmp_path / "mask.nii.gz", tmp_path / roi_name
    out.write_bytes(b"previous mask")
    roi.write_bytes(b"previous roi")
    argv = segment_argv(image, click, tiny_checkpoint, out, "--save-roi", str(roi))
    code, err = run_with_file_size_limit(argv, 200_000)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: cannot write {roi}"), err
    assert out.read_bytes() == b"previous mask" and roi.read_bytes() == b"previous roi"
    assert leftovers(tmp_path) == []


# --- a run killed between the commit's steps --------------------------------------------------------------


@pytest.mark.parametrize(
    "step, outcome",
    [("planned", "old"), ("journal", "new"), ("replaced a.json", "new"), ("moved", "new")],
)
def test_killed_commit_never_loses_a_destination_and_is_recovered(tmp_path, capfd, step, outcome):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("old a")
    assert commit_killed_at(step, {a: "new a", b: "new b"}) == 9
    assert a.read_text() in ("old a", "new a")  # at every instant the destination exists, whole
    assert leftovers(tmp_path)  # the killed run could not clean up
    check_output_path(a, "--out")  # the next run writing here recovers first
    if outcome == "old":  # killed before the commit was decided: as if it never ran
        assert a.read_text() == "old a" and not b.exists()
    else:  # decided: completed
        assert a.read_text() == "new a" and b.read_text() == "new b"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == (["a.json"] if outcome == "old" else ["a.json", "b.json"])


def test_staging_folder_of_a_running_process_is_left_alone(tmp_path):
    out = tmp_path / "mask.json"
    with StagedOutputs() as staged:
        staged.stage(out, lambda p: write_text("mine", p))
        check_output_path(tmp_path / "other.json", "--out")  # another run's recovery in the same folder
        assert len(leftovers(tmp_path)) == 1
    assert out.read_text() == "mine" and leftovers(tmp_path) == []


def test_previous_file_left_aside_by_the_old_commit_is_restored(tmp_path, capfd):
    """The commit before this fix moved the old file aside first; killed there, the next run puts it back."""
    aside = tmp_path / ".sammed3d-x1" / ".previous-y1"
    aside.mkdir(parents=True)
    (aside / "mask.nii.gz").write_text("previous")
    os.utime(tmp_path / ".sammed3d-x1", (0, 0))  # no lock file (old layout): abandoned by age
    check_output_path(tmp_path / "mask.nii.gz", "--out")
    assert (tmp_path / "mask.nii.gz").read_text() == "previous" and leftovers(tmp_path) == []
    assert "restored" in capfd.readouterr().err


# --- outputs that name inputs -----------------------------------------------------------------------------


def spellings(path: Path, tmp_path: Path) -> dict:
    """Other names of the same file: ``..``, a symbolic link, a hard link."""
    (tmp_path / "sub").mkdir(exist_ok=True)
    symlink, hardlink = tmp_path / "sub" / ("link-" + path.name), tmp_path / ("hard-" + path.name)
    symlink.symlink_to(path)
    os.link(path, hardlink)
    return {"dotdot": tmp_path / "sub" / ".." / path.name, "symlink": symlink, "hardlink": hardlink}


@pytest.mark.parametrize("spelling", ["dotdot", "symlink", "hardlink"])
@pytest.mark.parametrize("option", ["--out", "--save-roi"])
@pytest.mark.parametrize("victim", ["image", "weights", "markups"])
def test_segment_output_naming_an_input_is_refused_before_work(
    tmp_path, phantom, tiny_checkpoint, capfd, spelling, option, victim
):
    image = tmp_path / "image.nii.gz"
    image.write_bytes(phantom[0].read_bytes())
    weights = tmp_path / "weights.pth"
    weights.write_bytes(tiny_checkpoint.read_bytes())
    markups = tmp_path / "points.mrk.json"
    markups.write_text('{"markups": [{"coordinateSystem": "RAS", "controlPoints": [{"position": [0, 0, 0]}]}]}')
    victim_path = {"image": image, "weights": weights, "markups": markups}[victim]
    before = victim_path.read_bytes()
    target = spellings(victim_path, tmp_path)[spelling]
    argv = ["segment", "--image", str(image), "--weights", str(weights), "--positive", str(markups)]
    argv += ["--out", str(target) if option == "--out" else str(tmp_path / "mask.nii.gz")]
    if option == "--save-roi":
        argv += ["--save-roi", str(target)]
    code = main(argv)
    err = errors(capfd)
    assert code == 2 and len(err) == 1 and f"{option} {target} is the input" in err[0], err
    assert victim_path.read_bytes() == before and not (tmp_path / "mask.nii.gz").exists()


@pytest.mark.parametrize("victim", ["image", "label", "weights"])
def test_evaluate_json_naming_an_input_is_refused_before_work(tmp_path, tiny_checkpoint, capfd, victim):
    image_data, a, b = two_spheres_phantom()
    image, label = tmp_path / "img.nii.gz", tmp_path / "lbl.nii.gz"
    sitk.WriteImage(image_data, str(image))
    sitk.WriteImage(sitk.Cast(a + b * 2, sitk.sitkUInt8), str(label))
    paths = {"image": image, "label": label, "weights": tiny_checkpoint}
    before = paths[victim].read_bytes()
    target = spellings(paths[victim], tmp_path)["hardlink"]
    argv = ["evaluate", "--image", str(image), "--label", str(label), "--weights", str(tiny_checkpoint)]
    code = main([*argv, "--clicks", "1", "--json", str(target)])
    err = errors(capfd)
    assert code == 2 and len(err) == 1 and f"--json {target} is the input --{victim}" in err[0], err
    assert paths[victim].read_bytes() == before


def test_companion_file_of_an_output_may_not_replace_an_input(tmp_path):
    """``mask.mhd`` writes ``mask.zraw`` too: when that is an input file, nothing is written."""
    data = tmp_path / "mask.zraw"
    data.write_bytes(b"an input")
    image = sitk.Image([4, 4, 4], sitk.sitkUInt8)
    from SAMMed3DLib.cli.images import write_image

    with pytest.raises(InputError, match="would replace the input"), StagedOutputs(protected=[data]) as staged:
        staged.stage(tmp_path / "mask.mhd", lambda p: write_image(image, p))
    assert data.read_bytes() == b"an input" and sorted(p.name for p in tmp_path.iterdir()) == ["mask.zraw"]


# --- read-only destinations -------------------------------------------------------------------------------


def test_read_only_destination_is_refused_not_replaced(tmp_path, phantom, tiny_checkpoint, capfd):
    image, click = phantom
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"keep me")
    out.chmod(0o444)
    code = main(segment_argv(image, click, tiny_checkpoint, out))
    assert code == 2 and errors(capfd) == [f"error: --out {out} is read-only; it is not replaced"]
    assert out.read_bytes() == b"keep me"


def test_interrupt_after_the_commit_is_decided_finishes_it(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) between two moves: the decided commit is completed before the error goes on."""
    import SAMMed3DLib.staging as outputs

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("old a")
    b.write_text("old b")

    def interrupt(step):
        if step == "replaced a.json":
            raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "commit_step_hook", interrupt)
    with pytest.raises(KeyboardInterrupt), StagedOutputs() as staged:
        staged.stage(a, lambda p: write_text("new a", p))
        staged.stage(b, lambda p: write_text("new b", p))
    assert a.read_text() == "new a" and b.read_text() == "new b" and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_special_files_are_never_replaced(tmp_path, kind):
    target = Path("/dev/null") if kind == "device" else tmp_path / "pipe"
    if kind == "fifo":
        os.mkfifo(target)
    with pytest.raises(InputError, match="not a regular file"):
        check_output_path(target, "--out")


def test_an_input_folder_protects_its_files(tmp_path):
    """A DICOM series folder as --image: replacing one of its files is refused; a new file beside them is not."""
    from SAMMed3DLib.cli.outputs import check_outputs_spare_inputs

    series = tmp_path / "series"
    series.mkdir()
    (series / "slice1.dcm").write_bytes(b"dicom")
    with pytest.raises(InputError, match=r"--out .*slice1.dcm is the input --image"):
        check_outputs_spare_inputs({"--out": series / ".." / "series" / "slice1.dcm"}, [("--image", series)])
    check_outputs_spare_inputs({"--out": series / "mask.nii.gz"}, [("--image", series)])
