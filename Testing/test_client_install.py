"""The client installs and runs without torch: the base install has no torch, the extras that run the network
bring it, and a command that needs it in an installation without it says so in one line."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WITHOUT_TORCH = """
import importlib.abc, runpy, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
sys.argv = ["SAMMed3DLib", *sys.argv[1:]]
runpy.run_module("SAMMed3DLib", run_name="__main__")
"""
"""Runs ``python -m SAMMed3DLib ARGS`` as in an installation without torch."""


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def requirement_names(requirements) -> set:
    return {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
            for r in requirements}


def test_the_base_install_is_the_client_and_the_network_extras_bring_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "torch" not in requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    for extra in ("torch", "server", "test"):
        assert "torch" in requirement_names(extras[extra]), extra
    install = (ROOT / ".ci" / "install").read_text(encoding="utf-8")
    assert '-e ".[torch,' in install


def test_a_command_that_needs_torch_says_so_in_one_line(tmp_path):
    done = run_without_torch("segment", "--image", str(tmp_path / "ct.nii.gz"), "--positive", "1,2,3",
                             "--weights", "sam-med3d-turbo", "--out", str(tmp_path / "mask.nii.gz"))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[0].startswith("error: ") and "pip install 'SAMMed3DLib[torch]'" in lines[0]
    assert not (tmp_path / "mask.nii.gz").exists()


def test_the_weights_commands_run_without_torch(tmp_path):
    done = run_without_torch("models", "--cache-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sam-med3d-turbo" in done.stdout and str(tmp_path / "checkpoints") in done.stdout


def test_every_command_parses_its_options_without_torch():
    """``--help`` of every command works without torch: the message about PyTorch comes only from a command's run."""
    from SAMMed3DLib.cli import COMMANDS

    for name in COMMANDS:
        done = run_without_torch(name, "--help")
        assert done.returncode == 0 and "usage:" in done.stdout, f"{name}: {done.stderr[-2000:]}"
