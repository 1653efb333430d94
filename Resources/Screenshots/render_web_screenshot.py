"""Take the README's screenshot of the browser station: the real page in Debian's chromium (Playwright).

    python Resources/Screenshots/render_web_screenshot.py [--weights PATH_OR_ID] [--out DIR]

The station runs the launcher and station code the ``web`` command runs (through Testing/support/web_station.py),
the page opens the MNI152 T1 sample (nilearn's wheel), names and colours the segment, and clicks twice in the
axial view with the mouse, as an annotator does. Without ``--weights`` every station runs the test suite's
stand-in network (region growing from the clicks, Testing/support/standin.py), because the real checkpoints
cannot be downloaded where the pictures are made; with ``--weights`` (a checkpoint file, or a registry id already
downloaded) SAM-Med3D segments the same clicks. Writes ``SAMMed3D-web.png`` into ``--out`` (default: this folder).
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing")]

from support.web_browser import browser, click_view, open_page, running_station, wait_status  # noqa: E402

SEGMENT = ("White matter", "#f09933")
CLICKS = ((0.1, -0.05), (0.12, 0.12))  # positive clicks: offsets from the axial view's centre (fractions, y down)


def render(out: Path, weights: str = "stand-in") -> Path:
    """The page with one segment made by two clicks, saved as ``out/SAMMed3D-web.png``."""
    path = Path(out) / "SAMMed3D-web.png"
    with running_station("--weights", weights) as url, browser() as chromium:
        page = open_page(chromium, url, chromium.new_context(viewport={"width": 1360, "height": 860}))
        page.click("#sam-sample")
        page.wait_for_function("document.querySelector('#sam-case-name').textContent.includes('MNI')",
                               timeout=120_000)  # fmt: skip
        page.fill("#sam-segment-name", SEGMENT[0])
        page.keyboard.press("Enter")
        page.click("#sam-colour")
        page.fill(".v-color-picker-edit input", SEGMENT[1])
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.click("#sam-positive")
        for count, offset in enumerate(CLICKS, 1):
            click_view(page, offset=offset)
            page.wait_for_function(f"document.querySelector('#sam-clicks').getAttribute('data-clicks') === '{count}'",
                                   timeout=300_000)  # fmt: skip
        wait_status(page, r"refined \d+ ms")
        page.mouse.move(5, 400)  # no preview point under the mouse in the picture
        page.wait_for_timeout(2500)  # the views settle
        page.screenshot(path=str(path))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="stand-in", help="checkpoint path or downloaded registry id")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    print(render(args.out, args.weights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
