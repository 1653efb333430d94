"""A command ended by SIGTERM (a job scheduler, ``kill``, a system shutdown) cleans up as Ctrl-C does.

Each run is a real child process of ``python -m SAMMed3DLib segment``: SIGTERM arrives from outside while it
clicks, or is raised by the process itself at each step of writing its outputs. Afterwards no staging
folder is left; a commit already decided (its journal written) is finished, an undecided one leaves no file.
"""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from support.phantoms import centre_ras, sphere_phantom

from SAMMed3DLib.cli.outputs import STAGING_PREFIX

ROOT = Path(__file__).resolve().parents[1]
# The child: segment, with SIGTERM sent to itself at one step of the output commit (argv[1]), or, for
# "clicking", a pause in the click during which the parent sends it.
_CHILD = """
import os, signal, sys, time
from SAMMed3DLib import staging
from SAMMed3DLib.cli import main, outputs
from SAMMed3DLib.session import InteractiveSession
stop_at = sys.argv[1]

def terminate(step):
    if step == stop_at:
        os.kill(os.getpid(), signal.SIGTERM)

staging.commit_step_hook = terminate
stage = outputs.StagedOutputs.stage

def staged(self, path, write):
    stage(self, path, write)
    terminate("staged")

outputs.StagedOutputs.stage = staged
click = InteractiveSession.add_click

def slow_click(self, point, positive=True):
    if stop_at == "clicking":
        print("clicking", flush=True)
        time.sleep(60)
    return click(self, point, positive)

InteractiveSession.add_click = slow_click
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    image, truth = sphere_phantom(size=(40, 40, 40), centre_ras=(-70.0, -72.0, 66.0))
    path = tmp_path_factory.mktemp("terminate") / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, ",".join(map(str, centre_ras(truth)))


def _segment(stop_at: str, folder: Path, image: Path, click: str, weights: Path) -> subprocess.Popen:
    argv = ["segment", "--image", str(image), "--weights", str(weights), "--positive", click, "--device", "cpu"]
    argv += ["--out", str(folder / "mask.nii.gz"), "--save-roi", str(folder / "roi.nii.gz")]
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, stop_at, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "stop_at, finished",
    [
        ("clicking", False),
        ("staged", False),
        ("planned", False),
        ("replaced mask.nii.gz", True),
    ],
)
def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path, phantom, tiny_checkpoint, stop_at, finished):
    image, click = phantom
    child = _segment(stop_at, tmp_path, image, click, tiny_checkpoint)
    if stop_at == "clicking":
        assert child.stdout.readline().strip() == "clicking"
        child.send_signal(signal.SIGTERM)
    try:
        _, err = child.communicate(timeout=240)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terminated"
    assert "Traceback" not in err
    assert not list(tmp_path.glob(STAGING_PREFIX + "*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == (["mask.nii.gz", "roi.nii.gz"] if finished else [])
    if finished:
        assert sitk.ReadImage(str(tmp_path / "mask.nii.gz")).GetSize() == (40, 40, 40)


def test_sigterm_outside_a_command_keeps_its_handler():
    """The handler is the command's only while it runs: afterwards SIGTERM is what it was before."""
    from SAMMed3DLib.cli import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
