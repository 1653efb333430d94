"""Shared pytest fixtures."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTING = Path(__file__).resolve().parent
for p in (ROOT, TESTING):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A ~3 MB random-weight checkpoint in the official training layout (see Testing/checkpoints.py)."""
    from checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_sam_med3d.pth")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The tiny network loaded through the public ``load_model`` path."""
    from SAMMed3DLib import load_model

    return load_model(tiny_checkpoint, device="cpu")


@pytest.fixture
def srv():
    """A real HTTP file server on 127.0.0.1 (Testing/http_fixtures.py), stopped after the test."""
    from http_fixtures import FileServer

    with FileServer() as server:
        yield server


@pytest.fixture
def app():
    """A real MRML scene set up as the Slicer application sets up its own (Testing/slicer_scene.py)."""
    from slicer_scene import build_app_scene

    app = build_app_scene()
    yield app
    app.close()
