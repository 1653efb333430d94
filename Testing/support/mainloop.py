"""The ``under_main_loop`` fixture: the module's controller waits as Slicer runs it, its GUI timer's poll under the
GIL-holding stand-in main loop (``SAMMed3DLib.bench.gil_loop``, the one copy ``bench-mainloop`` uses too)."""

import pytest

from SAMMed3DLib.bench.gil_loop import run_loop


def wait_under_loop(controller, timeout: float = 120.0) -> None:
    """``SegmentationController.wait`` as Slicer runs the module: its GUI timer's poll under the GIL-holding loop."""
    from SAMMed3DLib.slicer.controller import POLL_INTERVAL_S, POLL_WAIT_S

    if controller.busy:
        run_loop(lambda: controller.poll(POLL_WAIT_S), POLL_INTERVAL_S, timeout)


@pytest.fixture
def under_main_loop(monkeypatch):
    """Every ``wait()`` of the module's controller (the scenario's clicks, undo, download…) runs under the loop."""
    from SAMMed3DLib.slicer.controller import SegmentationController

    monkeypatch.setattr(SegmentationController, "wait", wait_under_loop)
