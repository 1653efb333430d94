"""The browser station in a real browser (Debian's chromium through Playwright): upload a volume, click in the
axial view, and see the segment in the scene's status and in the page's own pixels; negative click, undo and
redo by key, a paint touch-up. The stations run the deterministic stand-in network (Testing/support/standin.py).
"""

from pathlib import Path

import pytest
from support.web_browser import (
    browser,
    chromium_missing,
    click_view,
    coloured,
    open_page,
    phantom,
    running_station,
    view_centre,
    view_pixels,
    wait_pixels,
    wait_status,
)

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))


@pytest.fixture(scope="module")
def chromium():
    with browser() as instance:
        yield instance


@pytest.fixture(scope="module")
def station_url():
    with running_station() as url:
        yield url


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    return phantom(tmp_path_factory.mktemp("volumes") / "sphere.nrrd")


def segment_colour(page):
    """The selected segment's colour as the panel shows it (r, g, b)."""
    swatch = "#sam-segments .v-list-item--active .sam-swatch"
    css = page.eval_on_selector(swatch, "e => getComputedStyle(e).backgroundColor")
    return tuple(int(c) for c in css[css.index("(") + 1 : css.index(")")].split(",")[:3])


def test_upload_click_negative_undo_redo_paint(chromium, station_url, volume):
    page = open_page(chromium, station_url)
    page.set_input_files("#sam-upload", str(volume))
    page.wait_for_function("document.querySelector('#sam-case-name').textContent.includes('sphere.nrrd')")
    page.click("#sam-colour")  # the segment's colour from the panel's picker: one the page cannot mistake
    page.fill(".v-color-picker-edit input", "#ff8000")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#sam-segments .sam-swatch').style.background.includes('255, 128')")
    page.keyboard.press("Escape")
    colour = segment_colour(page)
    assert colour == (255, 128, 0)
    assert coloured(view_pixels(page), colour) < 50  # nothing segmented yet

    page.click("#sam-positive")
    click_view(page)
    wait_status(page, r"refined \d+ ms")
    shown = wait_pixels(page, lambda px: coloured(px, colour) > 800)
    one_click = coloured(shown, colour)
    assert one_click > 800, one_click  # the sphere's cross-section, in the page's pixels

    page.mouse.move(10, 10)
    page.keyboard.press("s")  # − point
    click_view(page, offset=(0.03, 0.03))
    wait_status(page, r"refined \d+ ms")
    removed = coloured(wait_pixels(page, lambda px: coloured(px, colour) < one_click / 4), colour)
    assert removed < one_click / 4, (removed, one_click)  # the stand-in drops the region holding a negative click

    page.keyboard.press("Control+z")
    wait_status(page, r"undone \(1 click\b")
    assert coloured(wait_pixels(page, lambda px: coloured(px, colour) > one_click * 0.9), colour) > one_click * 0.9
    page.keyboard.press("Control+y")
    wait_status(page, r"redone \(2 clicks\b")
    assert coloured(wait_pixels(page, lambda px: coloured(px, colour) < one_click / 4), colour) < one_click / 4

    page.click("#sam-paint")  # a touch-up with trame-slicer's brush, on the same segment
    before = coloured(view_pixels(page), colour)
    x, y = view_centre(page, offset=(-0.3, 0.2))
    page.mouse.move(x, y)
    page.wait_for_timeout(200)
    page.mouse.down()
    for step in range(1, 16):
        page.mouse.move(x + 8 * step, y, steps=2)
        page.wait_for_timeout(20)
    page.mouse.up()
    painted = coloured(wait_pixels(page, lambda px: coloured(px, colour) > before + 300), colour)
    assert painted > before + 300, (before, painted)
