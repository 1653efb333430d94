"""The module's worker under a main loop that holds the GIL as Slicer's does (Testing/support/mainloop.py).

Required by issue 9: the first click through the module, and a download, each within 1.2x of the same work run
directly (engine click on the main thread; download from the local test server). Each side is timed REPEATS
times, interleaved, and the fastest runs are compared; on a loaded machine a round may be repeated (at most
ROUNDS), since a busy neighbour can only make a run slower, never faster.
"""

import io
import threading
import time

import pytest
from support.mainloop import run_loop

from SAMMed3DLib.slicer import mrml
from SAMMed3DLib.slicer.models import ModuleOptions, download_checkpoint
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, Scenario
from SAMMed3DLib.slicer.worker import POLL_INTERVAL_S, POLL_WAIT_S, BackgroundWorker, Job

REPEATS = 5
ROUNDS = 3
LIMIT = 1.2


def _compare(direct, through_module, what: str) -> float:
    """Best ratio module/direct over at most ROUNDS rounds of REPEATS interleaved runs (printed)."""
    best = float("inf")
    for _ in range(ROUNDS):
        direct_s, module_s = [], []
        for i in range(REPEATS):
            direct_s.append(direct(i))
            module_s.append(through_module(i))
        ratio = min(module_s) / min(direct_s)
        best = min(best, ratio)
        print(f"\n{what}: direct {min(direct_s):.3f} s, module under the GIL-holding loop {min(module_s):.3f} s, "
              f"ratio {ratio:.2f} (runs: {[round(t, 3) for t in direct_s]} / {[round(t, 3) for t in module_s]})")
        if best <= LIMIT:
            break
    return best


def _under_loop(poll) -> float:
    """Seconds until ``poll`` reports idle, with the GUI's timer period, under the GIL-holding loop."""
    return run_loop(poll, POLL_INTERVAL_S)


def _gil_hungry_job(ops: int = 50) -> None:
    """Many short GIL-releasing steps, like torch ops or download chunks: each needs the GIL back."""
    for _ in range(ops):
        time.sleep(0.001)


def test_the_loop_starves_a_worker_unless_the_poll_waits():
    """The stand-in really holds the GIL: a poll that does not wait (the old module) leaves the worker a sliver."""
    timings = {}
    for wait_s in (0.0, POLL_WAIT_S):
        worker = BackgroundWorker()
        worker.submit(Job(_gil_hungry_job))
        start = time.perf_counter()
        run_loop(lambda: bool(worker.poll(wait_s) or worker.busy), POLL_INTERVAL_S)  # noqa: B023
        timings[wait_s] = time.perf_counter() - start
        worker.shutdown()
    direct = min(_timed(_gil_hungry_job) for _ in range(REPEATS))
    print(f"\n50 GIL-releasing 1 ms steps: direct {direct:.3f} s, loop without wait {timings[0.0]:.3f} s, "
          f"loop with {POLL_WAIT_S} s wait {timings[POLL_WAIT_S]:.3f} s")  # fmt: skip
    assert timings[0.0] > 5 * direct, "the stand-in loop does not hold the GIL"
    assert timings[POLL_WAIT_S] < 2 * direct + 0.05


def _checkpoint_bytes(megabytes: int) -> bytes:
    """A checkpoint of about ``megabytes`` MiB in SAM-Med3D's layout (random values): downloads verify it."""
    import torch

    weights = {f"{part}.weight": torch.rand(1) for part in ("image_encoder", "prompt_encoder", "mask_decoder")}
    weights["image_encoder.weight"] = torch.rand(megabytes << 18)  # float32: 4 bytes each
    buffer = io.BytesIO()
    torch.save({"model_state_dict": weights}, buffer)
    return buffer.getvalue()


def _prompt(model):
    """A one-click decoder input on a zero embedding (torch work for a fresh worker thread)."""
    import torch

    embedding = model.encode(torch.zeros(1, 1, 128, 128, 128))
    return embedding, torch.full((1, 1, 3), 64.0), torch.ones(1, 1, dtype=torch.long)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_first_click_under_the_main_loop_is_within_1_2x_of_the_engine(app, tiny_model):
    from SAMMed3DLib import InteractiveSession

    def direct() -> float:
        image, _ = mrml.read_volume(scenarios[0].volume)
        return _timed(lambda: InteractiveSession(tiny_model, image).add_click(SPHERE_CENTER_RAS))

    def through_module() -> float:
        scenario = Scenario(app.scene, model=tiny_model)
        scenarios.append(scenario)
        # In Slicer the worker thread has loaded the network (torch work) before a click reaches it; the model
        # given here was loaded elsewhere, so the thread does a little torch work first.
        scenario.controller.worker.submit(Job(lambda: tiny_model.decode(*_prompt(tiny_model))))
        scenario.controller.wait()
        start = time.perf_counter()
        scenario.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)  # the click in a view: a Defined point
        _under_loop(lambda: scenario.controller.poll(POLL_WAIT_S))
        elapsed = time.perf_counter() - start
        assert scenario.controller.last_error is None, scenario.controller.last_error
        assert scenario.controller.last_step.encoded
        return elapsed

    scenarios = [Scenario(app.scene, model=tiny_model)]
    direct()  # warm-up: torch's first calls
    ratio = _compare(lambda i: direct(), lambda i: through_module(), "first click")
    for scenario in scenarios:
        scenario.controller.cleanup()
    assert ratio <= LIMIT


@pytest.mark.parametrize("megabytes", [96])
def test_download_under_the_main_loop_is_within_1_2x_of_a_direct_one(app, srv, tmp_path, megabytes):
    url = srv.add("/model.pth", _checkpoint_bytes(megabytes))

    def direct(i: int) -> float:
        options = ModuleOptions(model=url, cache_dir=str(tmp_path / f"direct{i}"))
        return _timed(lambda: download_checkpoint(options, None))

    def through_module(i: int) -> float:
        scenario.controller.set_options(model=url, cache_dir=str(tmp_path / f"module{i}"))
        start = time.perf_counter()
        scenario.controller.download()
        _under_loop(lambda: scenario.controller.poll(POLL_WAIT_S))
        elapsed = time.perf_counter() - start
        assert scenario.controller.messages[-1][0].startswith("Model ready"), scenario.controller.messages
        return elapsed

    scenario = Scenario(app.scene)
    direct(-1)  # warm-up
    runs = iter(range(10**6))  # a fresh cache folder for every run
    ratio = _compare(lambda i: direct(next(runs)), lambda i: through_module(next(runs)), f"{megabytes} MB download")
    scenario.controller.cleanup()
    assert ratio <= LIMIT
    assert threading.active_count() < 50
