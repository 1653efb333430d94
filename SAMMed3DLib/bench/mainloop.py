"""``bench-mainloop``: the Slicer module's background worker under a stand-in main loop that holds the GIL as
Slicer's does (:mod:`.gil_loop`), against the same work run directly, in one run.

- first click: a positive point added to the module's point list, the controller's GUI-timer poll under the loop
  until idle (session creation, encode, decode, paste, write into the segment) vs
  ``InteractiveSession(model, image).add_click`` on the main thread, same volume, same tiny random-weight network;
- download: the controller's Download (on the worker, polled under the loop) vs ``download_checkpoint`` called
  directly, both from a local HTTP server on 127.0.0.1 that the benchmark starts, each into a fresh cache folder;
- first click as a user meets it (:mod:`.user_path`): a fresh process opens the module, selects a volume, waits
  the user's few seconds, clicks (and the same without the wait) vs the engine's first click, model loaded;
- starvation: many GIL-releasing 1 ms steps on the worker, polled under the loop by a poll that does not wait
  (the old module) and by one that waits :data:`~SAMMed3DLib.slicer.controller.POLL_WAIT_S`; seconds, polls, and
  steps the worker completed per poll (a count, which load cannot blur).

Each pair runs interleaved (both sides see the same load on a shared machine); the fastest run of each side is
compared, since a busy neighbour can only make a run slower. Needs the ``slicer-core`` wheel (imported lazily,
:func:`require_slicer_core`); never imported by the engine or the Slicer side.
"""

import io
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from ..errors import SAMMed3DError
from .gil_loop import run_loop
from .machine import load_average, machine
from .network import seconds

TARGET_RATIO = 1.2
"""The module's first click and download within 1.2x of the same work run directly."""
USER_TARGET_RATIO = 1.15
"""The first click a user makes a few seconds after selecting a volume: within 1.15x of the engine's own first click
with the model loaded (the module loads it meanwhile)."""


def require_slicer_core() -> None:
    """Import the module's Slicer side (it needs the ``slicer-core`` wheel); one clear error when it is missing."""
    try:
        from ..slicer import controller, scenario  # noqa: F401 - imported here only to fail early and clearly
    except ImportError as exc:
        hint = "pip install 'slicer-core>=5.9'"
        raise SAMMed3DError(f"bench-mainloop needs the slicer-core wheel ({hint}): {exc}") from exc



def interleaved(sides: Dict[str, Callable[[int], float]], repeats: int) -> Dict[str, object]:
    """``repeats`` runs of each side in turn (run ``i`` of every side, then ``i + 1``): seconds of every run
    (``<side>_s``), the fastest of each (``<side>_best_s``), and ``ratio``: fastest ``module`` / fastest ``direct``."""
    runs: Dict[str, List[float]] = {name: [] for name in sides}
    for i in range(repeats):
        for name, side in sides.items():
            runs[name].append(side(i))
    figures: Dict[str, object] = {}
    for name, times in runs.items():
        figures[f"{name}_s"], figures[f"{name}_best_s"] = times, min(times)
    figures["ratio"] = figures["module_best_s"] / figures["direct_best_s"]
    return figures


# --- the network and the file to download -----------------------------------------------------------------


def tiny_checkpoint(folder: Path) -> Path:
    """The tiny random-weight network (real architecture, narrow layers; zero-initialised parameters given
    seeded values) as a checkpoint file in ``folder``."""
    import torch

    from ..modeling import TINY_CONFIG, build_sam_med3d
    from .network import randomize_zero_initialised_

    torch.manual_seed(0)
    path = Path(folder) / "tiny_sam_med3d.pth"
    torch.save({"model_state_dict": randomize_zero_initialised_(build_sam_med3d(TINY_CONFIG)).state_dict()}, path)
    return path


def tiny_model(folder: Path):
    """The tiny network of :func:`tiny_checkpoint`, loaded through the public ``load_model`` path as Slicer loads a
    checkpoint."""
    from ..model import load_model

    return load_model(tiny_checkpoint(folder), device="cpu")


def checkpoint_bytes(megabytes: int) -> bytes:
    """A checkpoint of about ``megabytes`` MiB in SAM-Med3D's layout (random values): downloads verify it."""
    import torch

    weights = {f"{part}.weight": torch.rand(1) for part in ("image_encoder", "prompt_encoder", "mask_decoder")}
    weights["image_encoder.weight"] = torch.rand(megabytes << 18)  # float32: 4 bytes each
    buffer = io.BytesIO()
    torch.save({"model_state_dict": weights}, buffer)
    return buffer.getvalue()


class _OneFile(BaseHTTPRequestHandler):
    """Answers every GET with the server's ``data`` (200, its length); HTTP/1.0, so each answer ends its
    connection. The downloader asks for a Range only when it resumes, which a fresh cache folder never does."""

    def log_message(self, format, *args) -> None:  # noqa: A002 - silence the per-request stderr log
        pass

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        data: bytes = self.server.data  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for i in range(0, len(data), 64 << 10):
            self.wfile.write(data[i : i + (64 << 10)])


@contextmanager
def serving(data: bytes, name: str = "model.pth") -> Iterator[str]:
    """A file server on 127.0.0.1 (a free port) answering with ``data``; yields the file's URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OneFile)
    httpd.daemon_threads = True
    httpd.data = data  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{name}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- the three measurements -------------------------------------------------------------------------------


def _warm_worker(controller, model) -> None:
    """In Slicer the worker thread has loaded the network (torch work) before a click reaches it; the model given
    here was loaded elsewhere, so the thread runs one decoder pass first (outside the timing)."""
    import torch

    def decode() -> None:
        embedding = model.encode(torch.zeros(1, 1, 128, 128, 128))
        model.decode(embedding, torch.full((1, 1, 3), 64.0), torch.ones(1, 1, dtype=torch.long))

    controller.run_errand(decode)
    controller.wait()


def first_click(scene, model, repeats: int) -> Dict[str, object]:
    """The first click on the phantom through the module under the loop vs directly on the engine (see the module
    docstring); also through the module with a plain blocking wait (``module_no_loop``: its own extra work, scene
    reads and writes, without the loop). Adds the foreground voxels of every mask (``module_voxels``: both module
    sides, in run order) and the module's errors."""
    import SimpleITK as sitk

    from ..session import InteractiveSession
    from ..slicer import mrml
    from ..slicer.controller import POLL_INTERVAL_S, POLL_WAIT_S
    from ..slicer.scenario import SPHERE_CENTER_RAS, Scenario

    scenarios = [Scenario(scene, model=model)]
    image, _ = mrml.read_volume(scenarios[0].volume)
    direct_voxels: List[int] = []
    module_voxels: List[int] = []
    errors: List[str] = []

    def direct(_: int) -> float:
        steps = []
        elapsed = seconds(lambda: steps.append(InteractiveSession(model, image).add_click(SPHERE_CENTER_RAS)))
        direct_voxels.append(int(sitk.GetArrayViewFromImage(steps[0].mask).sum()))
        return elapsed

    def through_module(under_loop: bool) -> float:
        scenario = Scenario(scene, model=model)
        scenarios.append(scenario)
        _warm_worker(scenario.controller, model)
        start = time.perf_counter()
        scenario.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)  # the click in a view: a Defined point
        if under_loop:
            run_loop(lambda: scenario.controller.poll(POLL_WAIT_S), POLL_INTERVAL_S)
        else:
            scenario.controller.wait()  # a main thread blocked on the worker: the module's own cost, no loop
        elapsed = time.perf_counter() - start
        step = scenario.controller.last_step
        if scenario.controller.last_error is not None or step is None or not step.encoded:
            errors.append(str(scenario.controller.last_error or "no encoding step was written"))
        module_voxels.append(int(scenario.target_voxels().sum()))
        return elapsed

    try:
        direct(-1)  # warm-up: torch's first calls
        direct_voxels.clear()
        sides = {"direct": direct, "module": lambda _: through_module(True),
                 "module_no_loop": lambda _: through_module(False)}  # fmt: skip
        figures = interleaved(sides, repeats)
    finally:
        for scenario in scenarios:
            scenario.controller.cleanup()
    figures["loop_ratio"] = figures["module_best_s"] / figures["module_no_loop_best_s"]  # the loop's own cost
    return {**figures, "direct_voxels": direct_voxels, "module_voxels": module_voxels, "errors": errors}


def download(megabytes: int, repeats: int, folder: Path) -> Dict[str, object]:
    """A ``megabytes`` MiB checkpoint from the local server: the module's Download under the loop vs
    ``download_checkpoint`` directly, each into a fresh cache folder. Adds the module's last messages."""
    from ..slicer.controller import POLL_INTERVAL_S, POLL_WAIT_S, SegmentationController
    from ..slicer.models import ModuleOptions, download_checkpoint

    data = checkpoint_bytes(megabytes)
    messages: List[str] = []
    errors: List[str] = []
    sizes: List[int] = []
    controller = SegmentationController()
    with serving(data) as url:

        def direct(i: int) -> float:
            options = ModuleOptions(model=url, cache_dir=str(folder / f"direct{i}"))
            paths: List[str] = []
            elapsed = seconds(lambda: paths.append(download_checkpoint(options, None)))
            sizes.append(Path(paths[0]).stat().st_size)
            return elapsed

        def through_module(i: int) -> float:
            controller.set_options(model=url, cache_dir=str(folder / f"module{i}"))
            start = time.perf_counter()
            controller.download()
            run_loop(lambda: controller.poll(POLL_WAIT_S), POLL_INTERVAL_S)
            elapsed = time.perf_counter() - start
            text, is_error = controller.messages[-1]
            messages.append(text)
            if is_error or not text.startswith("Model ready"):
                errors.append(text)
            else:
                sizes.append(Path(text.split(":", 1)[1].strip()).stat().st_size)
            return elapsed

        try:
            direct(-1)  # warm-up: the HTTP client's first connection, the file in the page cache
            sizes.clear()
            figures = interleaved({"direct": direct, "module": through_module}, repeats)
        finally:
            controller.cleanup()
    return {**figures, "megabytes": megabytes, "bytes": len(data), "received_bytes": sizes, "messages": messages,
            "errors": errors}  # fmt: skip


def _gil_hungry_job(ops: int, done: List[int]) -> None:
    """Many short GIL-releasing steps, like torch ops or download chunks: each needs the GIL back; counts them."""
    for _ in range(ops):
        time.sleep(0.001)
        done[0] += 1


def _polled(ops: int, wait_s: float) -> Dict[str, float]:
    """The GIL-hungry job on a fresh controller's worker, polled under the loop with ``wait_s``: seconds until idle,
    polls, steps the worker completed, and steps per poll."""
    from ..slicer.controller import POLL_INTERVAL_S, SegmentationController

    controller, done, polls = SegmentationController(), [0], [0]

    def poll() -> bool:
        polls[0] += 1
        return controller.poll(wait_s)

    controller.run_errand(lambda: _gil_hungry_job(ops, done))
    seconds = run_loop(poll, POLL_INTERVAL_S)
    controller.cleanup()
    return {"wait_s": wait_s, "seconds": seconds, "polls": polls[0], "steps": done[0],
            "steps_per_poll": done[0] / polls[0]}  # fmt: skip


def starvation(ops: int, repeats: int) -> Dict[str, object]:
    """``ops`` 1 ms GIL-releasing steps on the worker, polled under the loop without waiting (the old module) and
    with ``POLL_WAIT_S`` (see :func:`_polled`); and the same steps run directly (fastest of ``repeats``, s)."""
    from ..slicer.controller import POLL_WAIT_S

    direct_s = min(seconds(lambda: _gil_hungry_job(ops, [0])) for _ in range(repeats))
    return {"ops": ops, "no_wait": _polled(ops, 0.0), "wait": _polled(ops, POLL_WAIT_S), "direct_s": direct_s}


def run_mainloop_benchmark(
    repeats: int = 5, megabytes: int = 96, ops: int = 50, weights: Optional[str] = None, user_wait: float = 3.0,
    baseline: Optional[Path] = None, threads: Optional[int] = None,
) -> Dict[str, object]:
    """Every figure of ``bench-mainloop`` in one dict (seconds; see the module docstring); scratch files (the
    network, the downloads) go to a temporary folder, removed afterwards. ``weights``: a checkpoint (path or
    registry id, already downloaded) for the click instead of the tiny random-weight network; ``user_wait``: the
    user's seconds between selecting the volume and clicking; ``baseline``: another checkout whose module's path
    is measured too (:func:`.user_path.user_path`); ``threads``: torch's CPU threads, here and in the module's
    processes (None: torch's default, one per core)."""
    require_slicer_core()
    from ..slicer import mrml
    from ..slicer.scenario import build_app_scene, sphere_volume
    from .user_path import user_path

    report = machine()
    if threads:
        import torch

        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="sammed3d-mainloop-") as scratch:
        work = Path(scratch)
        from ..model import load_model
        from ..weights import resolve_checkpoint

        checkpoint = Path(resolve_checkpoint(weights, download=False)) if weights else tiny_checkpoint(work)
        model = load_model(checkpoint, device="cpu")
        app = build_app_scene()
        try:
            report["first_click"] = first_click(app.scene, model, repeats)
            image, _ = mrml.read_volume(sphere_volume(app.scene))
            report["user_path"] = user_path(model, image, checkpoint, repeats, user_wait, baseline, threads)
        finally:
            app.close()
        report["download"] = download(megabytes, repeats, work)
        report["starvation"] = starvation(ops, repeats)
    report["load_after"] = load_average()
    report["repeats"] = repeats
    report["network"] = str(weights) if weights else "tiny network"
    report["threads"] = threads
    return report


def _verdict(ratio: float) -> str:
    return f"ratio {ratio:.3f} (target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'not met'})"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def _runs(figures: Dict[str, object]) -> str:
    """Every run of both sides in ms (how noisy the machine was)."""
    return " / ".join("[" + ", ".join(f"{t * 1e3:.0f}" for t in figures[k]) + "]" for k in ("direct_s", "module_s"))


def _user_lines(user: Dict[str, object], network: str) -> List[str]:
    """The user path's figures: each module side's fastest click-to-segment against the engine's first click."""
    engine = user["engine_best_s"]
    labels = {"module_wait": f"after a {user['wait_s']:g} s wait", "module_no_wait": "clicking at once",
              "baseline_no_wait": f"clicking at once, {user['baseline']}"}  # fmt: skip
    lines = [f"first click as a user meets it ({network}; open the module, select the volume, click; click to "
             f"segment written, fastest of {len(user['engine_s'])}): engine's first click, model loaded "
             f"{_ms(engine)}"]  # fmt: skip
    for side, label in labels.items():
        if f"{side}_best_s" in user:
            met = "met" if user[f"{side}_ratio"] <= USER_TARGET_RATIO else "not met"
            target = f" (target <= {USER_TARGET_RATIO}: {met})"
            fastest = min(user[f"{side}_runs"], key=lambda run: run["click_s"])
            ready = fastest.get("model_ready_s")
            ready_text = f"model ready {ready:.1f} s after the selection, " if ready is not None else ""
            lines.append(f"  module {label}: {_ms(user[f'{side}_best_s'])}, ratio {user[f'{side}_ratio']:.3f}"
                         f"{target if side == 'module_wait' else ''}; {ready_text}"
                         f"status at the click {fastest.get('status_at_click', '')!r}")  # fmt: skip
    if "baseline_no_wait_best_s" in user:
        lines.append(f"  clicking at once, this checkout / baseline: "
                     f"{user['module_no_wait_best_s'] / user['baseline_no_wait_best_s']:.3f}")
    runs = " / ".join(f"{side} [" + ", ".join(f"{t * 1e3:.0f}" for t in user[f"{side}_s"]) + "]"
                      for side in ("engine", *labels) if f"{side}_s" in user)  # fmt: skip
    lines.append(f"  runs (ms): {runs}; errors: {user['errors'] or 'none'}")
    return lines


def format_report(r: Dict[str, object]) -> str:
    """The figures as printed lines."""
    click, down, starve = r["first_click"], r["download"], r["starvation"]
    no_wait, wait = starve["no_wait"], starve["wait"]
    return "\n".join([
        f"CPU: {r['cpu']} ({r['cores']} cores, torch threads: {r['threads'] or 'default'}); load average "
        f"{r['load_before']} before, {r['load_after']} after",
        f"first click ({r['network']}, fastest of {r['repeats']} interleaved): engine directly "
        f"{_ms(click['direct_best_s'])}, module under the GIL-holding loop {_ms(click['module_best_s'])}, "
        f"{_verdict(click['ratio'])}",
        f"  module with a blocking wait, no loop: {_ms(click['module_no_loop_best_s'])} (under the loop / without: "
        f"{click['loop_ratio']:.3f}; the rest of the gap is the module's own scene reads and writes)",
        f"  runs (ms, direct / module): {_runs(click)}; mask voxels: direct {click['direct_voxels']}, "
        f"module {click['module_voxels']}; errors: {click['errors'] or 'none'}",
        *_user_lines(r["user_path"], r["network"]),
        f"download ({down['megabytes']} MiB from 127.0.0.1, fastest of {r['repeats']}): directly "
        f"{_ms(down['direct_best_s'])}, module under the loop {_ms(down['module_best_s'])}, "
        f"{_verdict(down['ratio'])}",
        f"  runs (ms, direct / module): {_runs(down)}; errors: {down['errors'] or 'none'}",
        f"starvation ({starve['ops']} GIL-releasing 1 ms steps on the worker; directly {_ms(starve['direct_s'])}): "
        f"poll without wait {_ms(no_wait['seconds'])}, {no_wait['polls']} polls, "
        f"{no_wait['steps_per_poll']:.2f} steps/poll; poll waiting {_ms(wait['wait_s'])}: "
        f"{_ms(wait['seconds'])}, {wait['polls']} polls, {wait['steps_per_poll']:.1f} steps/poll",
    ])  # fmt: skip
