"""Browser-test helpers: the station (Testing/support/web_station.py) in a subprocess, Debian's chromium through
Playwright, and what a test reads from the page (its state, the axial view's pixels).

The page arrives over a websocket after the HTML: a test waits for page state (an element, a status text), never
for the load event. Slicer places a point where its preview is, so a click moves the mouse first."""

import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from SAMMed3DLib.bench.web import station_process

CHROMIUM = "/usr/bin/chromium"
STATION = Path(__file__).resolve().parent / "web_station.py"
VIEWPORT = {"width": 1280, "height": 860}


def chromium_missing() -> Optional[str]:
    """Why the browser tests cannot run here (None when they can)."""
    if not Path(CHROMIUM).exists():
        return f"Debian's chromium is not installed ({CHROMIUM}; .ci/install installs it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright)"
    return None


def running_station(*args: str, timeout: float = 120.0):
    """The launcher of Testing/support/web_station.py with ``args``: a context yielding its address, stopping it
    afterwards."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", VTK_DEFAULT_OPENGL_WINDOW="vtkEGLRenderWindow")
    return station_process([sys.executable, str(STATION), *args], env=env, timeout=timeout)


@contextmanager
def browser() -> Iterator:
    """Debian's chromium (headless, software rendering) through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(chromium, url: str, context=None):
    """A new page on ``url`` once its panel has arrived over the websocket."""
    context = context or chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(url, timeout=180_000)
    page.wait_for_selector("#sam-status", timeout=120_000)
    return page


def status(page) -> str:
    return page.inner_text("#sam-status")


def wait_status(page, pattern: str, timeout: float = 120.0) -> str:
    """Wait until the status line matches ``pattern`` (a regular expression); returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = status(page)
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(50)
    message = page.inner_text("#sam-message") if page.is_visible("#sam-message") else ""
    raise AssertionError(f"status {status(page)!r} (message {message!r}) never matched {pattern!r}")


def views(page) -> List:
    """The remote views' images, axial first (the layout's order)."""
    page.wait_for_function("document.querySelectorAll('img').length >= 4", timeout=60_000)
    return page.query_selector_all("img")


def view_centre(page, index: int = 0, offset: Tuple[float, float] = (0.0, 0.0)) -> Tuple[float, float]:
    """Page coordinates of view ``index``'s centre plus ``offset`` (a fraction of its width and height)."""
    box = views(page)[index].bounding_box()
    return box["x"] + box["width"] * (0.5 + offset[0]), box["y"] + box["height"] * (0.5 + offset[1])


def click_view(page, index: int = 0, offset: Tuple[float, float] = (0.0, 0.0)) -> None:
    """Move onto the point (Slicer's preview follows the mouse), then press and release there."""
    x, y = view_centre(page, index, offset)
    page.mouse.move(x - 8, y - 8)
    page.wait_for_timeout(150)
    page.mouse.move(x, y, steps=4)
    page.wait_for_timeout(250)
    page.mouse.down()
    page.mouse.up()


def view_pixels(page, index: int = 0) -> np.ndarray:
    """What the page shows in view ``index`` (H x W x 3, uint8), from a browser screenshot of the element."""
    from io import BytesIO

    from PIL import Image

    png = views(page)[index].screenshot()
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of ``[..., 3]`` RGB values (0 for greys)."""
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    high, low = rgb.max(axis=-1).astype(float), rgb.min(axis=-1).astype(float)
    span = np.where(high > low, high - low, 1.0)
    hue = np.where(high == r, (g - b) / span % 6, np.where(high == g, (b - r) / span + 2, (r - g) / span + 4))
    return hue * 60.0


def coloured(pixels: np.ndarray, colour: Tuple[int, int, int], tolerance: float = 20.0) -> int:
    """How many pixels show ``colour``'s hue, clearly coloured: the segment's fill blends its colour with the
    grey image under it, which keeps the hue (grey image pixels never count)."""
    saturated = pixels.astype(int).max(axis=-1) - pixels.astype(int).min(axis=-1) > 40
    difference = np.abs(_hue(pixels) - _hue(np.array(colour)[None, None, :])[0, 0])
    return int((saturated & (np.minimum(difference, 360 - difference) <= tolerance)).sum())


def wait_pixels(page, predicate, timeout: float = 20.0, index: int = 0) -> np.ndarray:
    """Screenshots of view ``index`` until ``predicate(pixels)`` holds (the view streams after the status)."""
    deadline = time.monotonic() + timeout
    while True:
        pixels = view_pixels(page, index)
        if predicate(pixels) or time.monotonic() > deadline:
            return pixels
        page.wait_for_timeout(200)


def phantom(path: Path, shape=(48, 80, 80), radius: float = 14.0, seed: int = 0) -> Path:
    """A bright sphere (intensity 200) in a dim noisy volume (z, y, x voxels, 1.5 mm), written by SimpleITK."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2
    inside = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius**2
    voxels = np.where(inside, 200.0, 20.0) + rng.normal(0, 4, shape)
    image = sitk.GetImageFromArray(voxels.astype(np.int16))
    image.SetSpacing((1.5, 1.5, 1.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path

