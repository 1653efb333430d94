"""``bench-web``: what the browser station adds to a refinement click, measured in a real browser.

The station runs as users run it (``python -m SAMMed3DLib web``, its own process per browser session); Debian's
chromium drives its page through Playwright. Per refinement click the page records, with its own clock
(``performance.now()``, milliseconds):

- the click: the pointer's release over the axial view (Slicer places the point on the click);
- the step: when the panel's click counter shows the new step (the page state pushed after the controller
  wrote the segment);
- the image: the first decoded axial image that shows the new mask (its count of pixels in the segment's hue is
  the one the view settles on, and differs from the count before the click; clicks that change nothing in the
  shown slice are left out and counted).

Against it, the engine's own time for the same click (the status line's ``refined N ms``: the session's step).
The page's share is click → image minus the engine's time.
"""

import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from .machine import load_average, machine

CHROMIUM = "/usr/bin/chromium"
READY = "SAM-Med3D browser station at"
SEGMENT_COLOUR = "#ff8000"  # orange: a hue no point marker (green, red) and no grey image pixel has
SEGMENT_HUE = 30.0
OFFSETS = ((0.04, 0.0), (-0.04, 0.03), (0.0, -0.05), (0.05, 0.05), (-0.05, -0.02), (0.02, 0.06))
"""Refinement clicks around the first one (fractions of the axial view), cycled; odd ones are negative."""

PROBE = """
(hue) => {
  const probe = {loads: [], clicks: [], steps: []};
  window.__samProbe = probe;
  const img = document.querySelectorAll('img')[0];
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 192;
  const context = canvas.getContext('2d', {willReadFrequently: true});
  img.addEventListener('load', () => {
    const at = performance.now();
    context.drawImage(img, 0, 0, 192, 192);
    const data = context.getImageData(0, 0, 192, 192).data;
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
      const r = data[i], g = data[i + 1], b = data[i + 2];
      const high = Math.max(r, g, b), span = high - Math.min(r, g, b);
      if (span <= 40) continue;
      let h = high === r ? ((g - b) / span) % 6 : high === g ? (b - r) / span + 2 : (r - g) / span + 4;
      h = (h * 60 + 360) % 360;
      const d = Math.abs(h - hue);
      if (Math.min(d, 360 - d) <= 20) count += 1;
    }
    probe.loads.push([at, count]);
  });
  document.addEventListener('pointerup', () => probe.clicks.push(performance.now()), true);
  const counter = document.querySelector('#sam-clicks');
  new MutationObserver(() => probe.steps.push([performance.now(), counter.getAttribute('data-clicks')]))
    .observe(counter, {attributes: true, attributeFilter: ['data-clicks']});
}
"""


@contextmanager
def station_process(command: List[str], env: Optional[Dict[str, str]] = None,
                    timeout: float = 300.0) -> Iterator[str]:  # fmt: skip
    """``command`` (the ``web`` command, or a test's launcher that prints the same ready line) in a subprocess;
    yields the address its ready line names; ends the process afterwards."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        yield _ready_address(process, timeout)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _ready_address(process: subprocess.Popen, timeout: float) -> str:
    """The address of ``process``'s ready line; RuntimeError with its last lines if it exits or ``timeout`` s
    pass first (a silent process is noticed too: its output is waited for one second at a time)."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if not ready:
            if process.poll() is not None:
                break
            continue
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if line.startswith(READY):
            return line.split(READY, 1)[1].split()[0]
    raise RuntimeError("the station did not start: " + " | ".join(seen[-5:]))


def running_station(weights: str, timeout: float = 300.0):
    """``python -m SAMMed3DLib web`` on a free loopback port; a context yielding the address it prints."""
    command = [sys.executable, "-m", "SAMMed3DLib", "web", "--weights", weights, "--device", "cpu", "--port", "0"]
    return station_process(command, timeout=timeout)


def _click(page, offset) -> None:
    box = page.query_selector_all("img")[0].bounding_box()
    x, y = box["x"] + box["width"] * (0.5 + offset[0]), box["y"] + box["height"] * (0.5 + offset[1])
    page.mouse.move(x - 6, y - 6)
    page.wait_for_timeout(100)
    page.mouse.move(x, y, steps=3)
    page.wait_for_timeout(150)
    page.mouse.down()
    page.mouse.up()


def _wait_clicks(page, count: int, timeout_s: float) -> str:
    page.wait_for_function(f"document.querySelector('#sam-clicks').getAttribute('data-clicks') === '{count}'",
                           timeout=timeout_s * 1000)  # fmt: skip
    return page.inner_text("#sam-status")


def _engine_ms(status: str) -> float:
    found = re.search(r"refined (\d+) ms", status)
    if not found:
        raise RuntimeError(f"unexpected status line: {status!r}")
    return float(found.group(1))


def _open_case(page, volume: Optional[Path]) -> None:
    if volume is None:
        page.click("#sam-sample")
    else:
        page.set_input_files("#sam-upload", str(volume))
    page.wait_for_function("document.querySelector('#sam-case-name').textContent.trim().length > 0", timeout=120_000)
    page.click("#sam-colour")
    page.fill(".v-color-picker-edit input", SEGMENT_COLOUR)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")


def measure_click(page, probe_from: Dict[str, int], expected: int, settle_s: float) -> Dict[str, Any]:
    """Figures of the click just made (the ``expected``-th step); ``probe_from``: the probe's lengths before."""
    status = _wait_clicks(page, expected, 120)
    page.wait_for_timeout(int(settle_s * 1000))
    probe = page.evaluate("window.__samProbe")
    click_at = probe["clicks"][-1]
    before = [count for at, count in probe["loads"][: probe_from["loads"]]]
    after = [(at, count) for at, count in probe["loads"][probe_from["loads"] :] if at >= click_at]
    step_at = next((at for at, shown in probe["steps"][probe_from["steps"] :] if shown == str(expected)), None)
    figures: Dict[str, Any] = {"engine_ms": _engine_ms(status), "status": status}
    if step_at is not None:
        figures["click_to_step_ms"] = step_at - click_at
    if not after or not before:
        return figures
    final, previous = after[-1][1], before[-1]
    tolerance = max(15, 0.03 * final)
    if abs(final - previous) <= tolerance:
        return figures  # the step changed nothing visible in the shown slice
    shown_at = next(at for at, count in after if abs(count - final) <= tolerance)
    figures["click_to_image_ms"] = shown_at - click_at
    figures["page_ms"] = figures["click_to_image_ms"] - figures["engine_ms"]
    return figures


def run_web_benchmark(weights: Optional[str], clicks: int, volume: Optional[Path], settle_s: float = 1.0,
                      chromium: str = CHROMIUM) -> Dict[str, Any]:  # fmt: skip
    """Start the station, make a first click and ``clicks`` refinement clicks in the browser; the figures."""
    from playwright.sync_api import sync_playwright

    from .mainloop import tiny_checkpoint

    report: Dict[str, Any] = {"machine": machine(), "clicks": []}
    with tempfile.TemporaryDirectory(prefix="bench-web-") as work:
        weights = weights or str(tiny_checkpoint(Path(work)))
        report["network"] = weights if "tiny_sam_med3d" not in weights else "tiny random-weight network"
        with running_station(weights) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(url, timeout=300_000)
                page.wait_for_selector("#sam-status", timeout=300_000)
                _open_case(page, volume)
                page.wait_for_function("document.querySelectorAll('img').length >= 4", timeout=60_000)
                page.wait_for_timeout(500)
                page.evaluate(PROBE, SEGMENT_HUE)
                page.click("#sam-positive")
                _click(page, (0.0, 0.0))
                first = _engine_ms(_wait_clicks(page, 1, 600))
                report["first_click"] = {"status": page.inner_text("#sam-status"), "engine_ms": first}
                placing_positive = True
                for index in range(clicks):
                    positive = index % 2 == 0
                    if positive != placing_positive:
                        page.mouse.move(5, 5)
                        page.keyboard.press("a" if positive else "s")
                        placing_positive = positive
                    lengths = page.evaluate("({loads: window.__samProbe.loads.length,"
                                            " steps: window.__samProbe.steps.length})")  # fmt: skip
                    _click(page, OFFSETS[index % len(OFFSETS)])
                    report["clicks"].append(measure_click(page, lengths, index + 2, settle_s))
            finally:
                browser.close()
    report["load_after"] = load_average()
    report["summary"] = summarise(report["clicks"])
    return report


def summarise(clicks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Medians over the clicks whose new mask showed in the axial slice."""
    shown = [c for c in clicks if "page_ms" in c]
    summary: Dict[str, Any] = {"clicks": len(clicks), "shown": len(shown)}
    for key in ("engine_ms", "click_to_step_ms", "click_to_image_ms", "page_ms"):
        values = [c[key] for c in shown if key in c]
        if values:
            summary[f"median_{key}"] = round(statistics.median(values), 1)
    return summary


def format_report(report: Dict[str, Any]) -> str:
    from .machine import describe

    s = report["summary"]
    lines = [
        f"bench-web: {report['network']}, {s['clicks']} refinement clicks in Debian's chromium "
        f"({s['shown']} changed the shown slice)",
        describe(report["machine"]) + f" (after: {'/'.join(str(v) for v in report['load_after'])})",
        f"first click: {report['first_click']['status']}",
        f"{'click':>5} {'engine ms':>10} {'click→step ms':>14} {'click→image ms':>15} {'page adds ms':>13}",
    ]
    for index, click in enumerate(report["clicks"], 1):
        cells = [f"{click.get(k, float('nan')):.0f}" for k in ("engine_ms", "click_to_step_ms",
                                                               "click_to_image_ms", "page_ms")]  # fmt: skip
        lines.append(f"{index:>5} {cells[0]:>10} {cells[1]:>14} {cells[2]:>15} {cells[3]:>13}")
    if "median_page_ms" in s:
        lines.append(f"median: engine {s['median_engine_ms']:.0f} ms, click→image {s['median_click_to_image_ms']:.0f}"
                     f" ms: the page adds {s['median_page_ms']:.0f} ms per refinement click (goal: at most 150 ms)")
    else:
        lines.append("no click changed the shown slice: no page figure")
    return "\n".join(lines)
