"""``bench-mainloop``'s first click as a user meets it: open the module, select a volume, take a few seconds to
find the structure, click; the seconds from the click to the segment written, against the engine's own first
click with the model already loaded (:func:`InteractiveSession.add_click <SAMMed3DLib.session.InteractiveSession>`
on the same volume and network, in the benchmark's process), in one run.

Each module run is a fresh Python process running this file, so that torch is not imported yet and no network is
loaded, as in a Slicer just started; its main thread is the GIL-holding stand-in loop (:mod:`.gil_loop`), which
polls the module while it has work, as the panel's timer does, and otherwise holds the GIL. ``PYTHONPATH`` picks
the SAMMed3DLib it measures, so ``--baseline`` runs the same path on another checkout (e.g. the previous release)
in the same run. As a script it prints one JSON line; its top-level imports are the standard library's only.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
"""The checkout this file belongs to (the folder holding SAMMed3DLib/)."""


def module_first_click(checkpoint: str, wait_s: float) -> Dict[str, object]:
    """In this process: the phantom scene, the module opened with ``checkpoint`` on the CPU, the volume selected,
    ``wait_s`` seconds of the idle main loop, one positive click. Seconds from the click to the segment written
    (``click_s``), of the selection on the main thread (``select_s``), from the selection until the model was
    loaded (``model_ready_s``, seen at the loop's ticks; None where the module does not say), and what the module
    showed."""
    from SAMMed3DLib.bench.gil_loop import run_loop
    from SAMMed3DLib.slicer import mrml
    from SAMMed3DLib.slicer.controller import POLL_INTERVAL_S, POLL_WAIT_S, Inputs, SegmentationController
    from SAMMed3DLib.slicer.scenario import (
        SPHERE_CENTER_RAS,
        build_app_scene,
        point_lists,
        segmentation_with_neighbour,
        sphere_volume,
    )

    app = build_app_scene()
    volume = sphere_volume(app.scene)
    segmentation, segment, _ = segmentation_with_neighbour(app.scene, volume)
    positive, negative = point_lists(app.scene)
    controller = SegmentationController()
    controller.set_options(model=checkpoint, device="cpu")
    controller.enter(app.scene)  # the module is shown
    start = time.perf_counter()
    controller.set_inputs(Inputs(volume, segmentation, segment, positive, negative))  # the user selects a volume
    select_s = time.perf_counter() - start
    deadline, ready = start + wait_s, [None]

    def tick(until_idle: bool) -> bool:
        busy = controller.poll(POLL_WAIT_S) if controller.busy else False  # the panel's timer runs while busy
        if ready[0] is None and getattr(controller, "model_loaded", False):  # a checkout without preload: never
            ready[0] = time.perf_counter() - start
        return busy if until_idle else time.perf_counter() < deadline

    if wait_s > 0:
        run_loop(lambda: tick(False), POLL_INTERVAL_S)
    status, torch_ready = controller.status, "torch" in sys.modules
    clicked = time.perf_counter()
    positive.AddControlPointWorld(*SPHERE_CENTER_RAS)  # the click in a view: a Defined point
    run_loop(lambda: tick(True), POLL_INTERVAL_S)
    click_s = time.perf_counter() - clicked
    step, error = controller.last_step, controller.last_error
    voxels = int(mrml.whole_segment(segmentation, segment, mrml.volume_geometry(volume)).sum())
    controller.cleanup()
    app.close()
    if error is None and (step is None or not step.encoded):
        error = "no encoding step was written"
    return {"click_s": click_s, "select_s": select_s, "status_at_click": status, "torch_at_click": torch_ready,
            "model_ready_s": ready[0], "voxels": voxels, "error": error}  # fmt: skip


def run_module(checkpoint: Path, wait_s: float, root: Path = ROOT, threads: Optional[int] = None) -> Dict[str, object]:
    """:func:`module_first_click` in a fresh process importing the SAMMed3DLib of ``root``; ``threads``: torch's
    CPU threads there (OMP_NUM_THREADS, so that torch is not imported early to set them)."""
    paths = [str(root), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, str(Path(__file__).resolve()), str(checkpoint), repr(wait_s)]
    result = subprocess.run(command, cwd=str(root), env=env, capture_output=True, text=True, timeout=600)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"click_s": float("nan"), "error": f"the module's process failed: {tail}"}
    return json.loads(lines[-1])


def user_path(model, image, checkpoint: Path, repeats: int, wait_s: float,
              baseline: Optional[Path] = None, threads: Optional[int] = None) -> Dict[str, object]:  # fmt: skip
    """Interleaved runs (``repeats`` of each side, in turn): the engine's first click (``model``, already loaded,
    on ``image``), the module's path with the user's ``wait_s`` and without a wait, and without a wait on the
    ``baseline`` checkout. Seconds of every run (``<side>_s``), the fastest (``<side>_best_s``), each module side's
    ratio to the engine (``<side>_ratio``), and each module run's record (``<side>_runs``). ``threads``: torch's CPU
    threads in the module's processes (the caller sets its own)."""
    from ..session import InteractiveSession
    from ..slicer.scenario import SPHERE_CENTER_RAS
    from .network import seconds

    def engine() -> float:
        return seconds(lambda: InteractiveSession(model, image).add_click(SPHERE_CENTER_RAS))

    records: Dict[str, List[Dict[str, object]]] = {}

    def module(name: str, wait: float, root: Path) -> Callable[[], float]:
        def run() -> float:
            record = run_module(checkpoint, wait, root, threads)
            records.setdefault(name, []).append(record)
            return float(record["click_s"])

        return run

    sides = {"engine": engine, "module_wait": module("module_wait", wait_s, ROOT),
             "module_no_wait": module("module_no_wait", 0.0, ROOT)}  # fmt: skip
    if baseline is not None:
        sides["baseline_no_wait"] = module("baseline_no_wait", 0.0, Path(baseline))
    engine()  # warm-up: torch's first calls in this process
    figures: Dict[str, object] = {"wait_s": wait_s, "baseline": str(baseline) if baseline else None}
    runs: Dict[str, List[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            runs[name].append(side())
    for name, times in runs.items():
        figures[f"{name}_s"], figures[f"{name}_best_s"] = times, min(times)
        if name != "engine":
            figures[f"{name}_ratio"] = min(times) / figures["engine_best_s"]
            figures[f"{name}_runs"] = records[name]
    figures["errors"] = [r["error"] for rs in records.values() for r in rs if r.get("error")]
    return figures


if __name__ == "__main__":
    here = Path(__file__).resolve().parent  # not an import root: its benchmark files would shadow other modules
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    print(json.dumps(module_first_click(sys.argv[1], float(sys.argv[2]))))
