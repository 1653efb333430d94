"""The browser station's worklist in a real browser (Debian's chromium through Playwright): pick a case, click,
Save & next writes both files (valid, reloadable in MRML); a second browser context has its own station and
scene and sees the first one's case as busy; after a restart the worklist resumes where the team stopped.
The stations run the deterministic stand-in network (Testing/support/standin.py)."""

from pathlib import Path

import pytest
from support.web_browser import (
    browser,
    chromium_missing,
    click_view,
    open_page,
    phantom,
    running_station,
    wait_status,
)

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))

CASES = ("case_a", "case_b", "case_c")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("worklist")
    for index, name in enumerate(CASES):
        phantom(folder / f"{name}.nrrd", seed=index)
    return folder


def case_state(page, name: str) -> str:
    return page.inner_text(f"[data-case='{name}'] .sam-case-state")


def wait_case_state(page, name: str, fragment: str) -> None:
    page.wait_for_function(
        "([name, fragment]) => { const e = document.querySelector(`[data-case='${name}'] .sam-case-state`);"
        " return e && e.textContent.includes(fragment); }", arg=[name, fragment], timeout=30_000)  # fmt: skip


def wait_open(page, name: str) -> None:
    page.wait_for_function(f"document.querySelector('#sam-case-name').textContent.trim() === '{name}'",
                           timeout=120_000)  # fmt: skip


def test_worklist_save_next_busy_elsewhere_and_resume(data):
    with browser() as chromium:
        with running_station("--data", str(data)) as url:
            first = open_page(chromium, url)
            first.wait_for_selector("[data-case='case_a']")
            assert all("to do" in case_state(first, name) for name in CASES)
            first.click("[data-case='case_a']")
            wait_open(first, "case_a")
            first.click("#sam-positive")
            click_view(first)
            wait_status(first, r"refined \d+ ms")
            first.click("#sam-save-next")
            wait_open(first, "case_b")  # saved as done, the next case to do is open
            wait_case_state(first, "case_a", "done")

            segmentation, prompts = data / "case_a.seg.nrrd", data / "case_a.prompts.mrk.json"
            assert segmentation.is_file() and prompts.is_file()
            segments, voxels = saved_segment(segmentation)
            assert segments == 1 and voxels > 1000
            from SAMMed3DLib.prompts import read_prompts

            (clicks,) = read_prompts(prompts)
            assert len(clicks.clicks) == 1 and clicks.clicks[0][1] is True

            second = open_page(chromium, url, chromium.new_context(viewport={"width": 1280, "height": 860}))
            second.wait_for_selector("[data-case='case_b']")
            wait_case_state(second, "case_b", "open by")  # the first session's case is busy here
            assert "done" in case_state(second, "case_a")
            second.click("#sam-next")
            wait_open(second, "case_c")  # not case_b: it is open elsewhere
            assert second.inner_text("#sam-status").strip() == "Ready"  # its own state: no click made here
            wait_case_state(first, "case_c", "open by")
        with running_station("--data", str(data)) as url:  # a restart: the states come from the folder
            page = open_page(chromium, url)
            page.wait_for_selector("[data-case='case_a']")
            wait_case_state(page, "case_a", "done")
            page.click("#sam-next")
            wait_open(page, "case_b")


def saved_segment(path: Path):
    """Segment count and the first segment's voxel count of a .seg.nrrd read back with Slicer's reader."""
    import numpy as np
    from vtk.util import numpy_support

    from SAMMed3DLib.slicer import cases
    from SAMMed3DLib.slicer.scenario import build_app_scene

    app = build_app_scene()
    try:
        node = cases.read_segmentation(app.scene, path, "reloaded")
        segmentation = node.GetSegmentation()
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(0))
        labelmap = segment.GetRepresentation("Binary labelmap")
        voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        value = segment.GetLabelValue()
        return segmentation.GetNumberOfSegments(), int(np.count_nonzero(voxels == value))
    finally:
        app.close()
