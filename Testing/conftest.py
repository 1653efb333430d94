"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A ~3 MB random-weight checkpoint in the official training layout (see Testing/support/checkpoints.py)."""
    from support.checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_sam_med3d.pth")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The tiny network loaded through the public ``load_model`` path."""
    from SAMMed3DLib import load_model

    return load_model(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def ray_server(tiny_checkpoint, tmp_path_factory):
    """One real SAM-Med3D server (Ray, 2 CPU workers, tiny checkpoint) shared by every test module that uses it
    (Testing/support/serve.py); its workers use this process's torch thread count, for bit-identical masks."""
    pytest.importorskip("ray.serve")
    import torch
    from support.serve import running_server

    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("server"), torch.get_num_threads()) as server:
        yield server


@pytest.fixture
def srv():
    """A real HTTP file server on 127.0.0.1 (Testing/support/http_fixtures.py), stopped after the test."""
    from support.http_fixtures import FileServer

    with FileServer() as server:
        yield server


@pytest.fixture
def app():
    """A real MRML scene set up as the Slicer application sets up its own (Testing/support/slicer_scene.py)."""
    from support.slicer_scene import build_app_scene

    app = build_app_scene()
    yield app
    app.close()
