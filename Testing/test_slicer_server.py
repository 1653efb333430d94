"""The Slicer module with the Server device, against a real server.

The server is the run's shared one (``ray_server``: Ray on 127.0.0.1, two CPU workers, the tiny checkpoint,
Testing/support/serve.py). The headless scenario runs through it in a subprocess where torch is blocked; the
same steps run on the local engine in this process, and the segment must be bit-identical after every step.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.serve import TOKEN, kill_worker, open_sessions, wait_all_alive
from support.slicer_scene import build_app_scene
from test_slicer_module_script import ROOT, slicer_module  # noqa: F401 - the fixture

from SAMMed3DLib.bench.server import free_port
from SAMMed3DLib.slicer import freshness
from SAMMed3DLib.slicer.controller import DEVICE_CHOICES, SegmentationController
from SAMMed3DLib.slicer.remote_models import NO_URL
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, Scenario, segment_digest

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop

NEGATIVE_RAS = tuple(np.add(SPHERE_CENTER_RAS, (0.0, 0.0, -16.0)))
AGAIN_RAS = tuple(np.add(SPHERE_CENTER_RAS, (6.0, 4.0, 0.0)))


def use_server(controller: SegmentationController, url: str, token: str) -> None:
    """What the panel does when the user picks Server: the device plus the URL and token from the settings."""
    controller.set_options(device="server", server_url=url, server_token=token)


def state(scenario: Scenario, step: str) -> list:
    """[step, target digest, target voxel count, neighbour digest, last error] after ``step``."""
    target = scenario.target_voxels()
    digest = segment_digest(scenario.segmentation, scenario.target, scenario.geometry)
    return [step, digest, int(target.sum()), scenario.neighbour_digest(), scenario.controller.last_error]


def run_steps(scenario: Scenario) -> list:
    """Click, refine, undo, redo, reset, click again, finish: the scene's state after each."""
    controller, states = scenario.controller, []
    scenario.click(SPHERE_CENTER_RAS)
    states.append(state(scenario, "click"))
    scenario.click(NEGATIVE_RAS, positive=False)
    states.append(state(scenario, "refine"))
    for name in ("undo", "redo", "reset"):
        getattr(controller, name)()
        controller.wait()
        states.append(state(scenario, name))
    scenario.click(AGAIN_RAS)
    states.append(state(scenario, "click again"))
    controller.finish()
    controller.wait()
    states.append(state(scenario, "finish"))
    return states


def local_steps(checkpoint) -> list:
    app = build_app_scene()
    scenario = Scenario(app.scene, checkpoint=checkpoint)
    try:
        return run_steps(scenario)
    finally:
        scenario.controller.cleanup()
        app.close()


SCENARIO_WITHOUT_TORCH = """
import builtins, json, sys
sys.modules["torch"] = None  # a Slicer without PyTorch
attempts = []
_import = builtins.__import__
def watched(name, globals=None, locals=None, fromlist=(), level=0):
    if name.split(".")[0] == "torch":
        attempts.append(name)
    return _import(name, globals, locals, fromlist, level)
builtins.__import__ = watched  # an import of torch that something catches is still reported

from support.slicer_scene import build_app_scene
from SAMMed3DLib.slicer.scenario import Scenario
from test_slicer_module_script import load_module_script
from test_slicer_server import run_steps, use_server

url, token, cache = sys.argv[1:4]
app = build_app_scene()
scenario = Scenario(app.scene)
use_server(scenario.controller, url, token)
steps = run_steps(scenario)
messages, note = scenario.controller.messages, scenario.controller.device_note()
scenario.controller.cleanup()

module = load_module_script(app, cache)
def no_install(*args, **kwargs):
    raise AssertionError("asked to install PyTorch")
module.SAMMed3DLogic.ensureTorch = staticmethod(no_install)
logic = module.SAMMed3DLogic()
logic.set_options(device="server", server_url=url, server_token=token)
ready = logic.torchReady()
logic.cleanup()
torch_loaded = sys.modules.get("torch") is not None or any(m.startswith("torch.") for m in sys.modules)
print(json.dumps({"steps": steps, "messages": messages, "note": note, "ready": ready, "attempts": attempts,
                  "torch_loaded": torch_loaded}))
"""


def test_the_scenario_through_the_server_without_torch_matches_the_local_engine(ray_server, tiny_checkpoint,
                                                                                 tmp_path):
    before = open_sessions(ray_server.url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "Testing"),
                                                        os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", SCENARIO_WITHOUT_TORCH, ray_server.url, TOKEN, str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout.strip().splitlines()[-1])
    assert remote["attempts"] == [] and remote["torch_loaded"] is False
    assert remote["ready"] is True  # the PyTorch prompt is skipped: the Server device needs none
    assert remote["note"] == f"running on the server {ray_server.url} (2 workers)"
    assert not [text for text, is_error in remote["messages"] if is_error], remote["messages"]
    local = local_steps(tiny_checkpoint)
    assert remote["steps"] == local  # every step's segment bit-identical, neighbour untouched, no error
    counts = {step: count for step, _, count, _, _ in local}
    assert counts["click"] > 0 and counts["reset"] == 0 and len({s[1] for s in local}) >= 3  # not vacuous
    assert len({s[3] for s in local}) == 1  # the neighbour never changed
    assert open_sessions(ray_server.url) == before  # reset and finish closed their server sessions


def test_a_killed_worker_is_replayed_and_the_scene_kept(ray_server, tiny_checkpoint, app):
    expected = build_app_scene()
    local = Scenario(expected.scene, checkpoint=tiny_checkpoint)
    scenario = Scenario(app.scene)
    use_server(scenario.controller, ray_server.url, TOKEN)
    try:
        for each in (local, scenario):
            each.click(SPHERE_CENTER_RAS)
            each.click(NEGATIVE_RAS, positive=False)
            each.controller.undo()
            each.controller.wait()
        neighbour = scenario.neighbour_digest()
        session = scenario.controller.target().session
        kill_worker(ray_server.url, int(session.session_id.split("-")[0][1:]))
        for each in (local, scenario):
            each.click(AGAIN_RAS)
        controller = scenario.controller
        assert controller.last_error is None, controller.last_error
        replayed = [text for text, is_error in controller.messages if "replayed" in text]
        assert len(replayed) == 1 and "3 steps replayed" in replayed[0]  # the user is told, as a warning
        assert not [text for text, is_error in controller.messages if is_error]
        assert np.array_equal(scenario.target_voxels(), local.target_voxels())
        assert scenario.neighbour_digest() == neighbour
        assert [p for p, _ in controller.target().clicks()] == [p for p, _ in local.controller.target().clicks()]
        controller.undo()  # the replayed history is whole: undo goes back to the first click's segment
        controller.wait()
        local.controller.undo()
        local.controller.wait()
        assert np.array_equal(scenario.target_voxels(), local.target_voxels())
    finally:
        scenario.controller.cleanup()
        local.controller.cleanup()
        expected.close()
        wait_all_alive(ray_server.url)


def test_test_connection_reports_one_line(ray_server):
    controller = SegmentationController()
    try:
        use_server(controller, ray_server.url, TOKEN)
        assert "press Test connection" in controller.device_note()
        assert report(controller) == (f"Connected to {ray_server.url}: SAM-Med3D server 0.1.0, 2 workers (cpu).",
                                      False)  # fmt: skip
        assert controller.device_note() == f"running on the server {ray_server.url} (2 workers)"
        use_server(controller, ray_server.url, "wrong-token")
        text, is_error = report(controller)
        assert is_error and text.startswith("Test connection failed:") and "401" in text and "token" in text
        nowhere = f"http://127.0.0.1:{free_port()}"
        use_server(controller, nowhere, TOKEN)
        text, is_error = report(controller)
        assert is_error and text.startswith(f"Test connection failed: cannot reach a SAM-Med3D server at {nowhere}")
        assert len(text) < 160, text  # the OS reason, not requests' retry chain
        use_server(controller, "", TOKEN)
        assert report(controller) == (NO_URL, True)
        assert controller.device_note() == NO_URL
    finally:
        controller.cleanup()


def report(controller: SegmentationController):
    """Press Test connection; the one message it gives (text, is_error)."""
    count = len(controller.messages)
    controller.test_connection()
    controller.wait()
    assert len(controller.messages) == count + 1, controller.messages[count:]
    text, is_error = controller.messages[-1]
    assert "\n" not in text
    return text, is_error


def test_a_click_with_a_wrong_token_leaves_the_scene_as_it_was(ray_server, app):
    scenario = Scenario(app.scene)
    use_server(scenario.controller, ray_server.url, "wrong-token")
    try:
        before = state(scenario, "before")
        scenario.click(SPHERE_CENTER_RAS)
        assert "401" in scenario.controller.last_error
        assert state(scenario, "after")[1:4] == before[1:4] and scenario.positive.GetNumberOfControlPoints() == 0
    finally:
        scenario.controller.cleanup()


def test_the_panel_offers_the_server_and_needs_no_pytorch_for_it(slicer_module):  # noqa: F811
    module, _ = slicer_module
    assert module.DEVICE_CHOICES is DEVICE_CHOICES and DEVICE_CHOICES["server"] == "Server"
    assert list(DEVICE_CHOICES)[:4] == ["auto", "cuda", "mps", "cpu"]
    logic = module.SAMMed3DLogic()
    try:
        logic.set_options(device="server")
        assert logic.uses_server and logic.device_note() == NO_URL and logic.torchReady()
    finally:
        logic.cleanup()


def test_the_server_follows_the_scene_as_the_local_engine_does(ray_server, tiny_checkpoint, app):
    """A hand edit between clicks (adopted on the server, held through the next click, undone), then new voxels
    (a new server session that continues the clicks): the segment bit-identical to the local engine's."""
    from test_slicer_shared_scene import BLOB, POSTERIOR, add_blob, ball, paint

    expected = build_app_scene()
    local = Scenario(expected.scene, checkpoint=tiny_checkpoint)
    scenario = Scenario(app.scene)
    use_server(scenario.controller, ray_server.url, TOKEN)
    steps = [
        lambda each: each.click(SPHERE_CENTER_RAS),
        lambda each: paint(each, ball(each, BLOB, 5.0)),
        lambda each: paint(each, ball(each, POSTERIOR, 5.0), value=False),
        lambda each: each.click(NEGATIVE_RAS, positive=False),
        lambda each: (each.controller.undo(), each.controller.wait()),
        lambda each: add_blob(each, in_place=False),
        lambda each: each.click(AGAIN_RAS),
        lambda each: (each.controller.reset(), each.controller.wait()),
    ]
    try:
        for number, step in enumerate(steps):
            for each in (local, scenario):
                step(each)
                assert each.controller.last_error is None, (number, each.controller.last_error)
            assert np.array_equal(scenario.target_voxels(), local.target_voxels()), f"step {number} differs"
            assert scenario.controller.messages == local.controller.messages
        assert any(text == freshness.HAND_EDIT for text, _ in local.controller.messages)
        assert any(text == freshness.NEW_VOXELS for text, _ in local.controller.messages)
        assert not scenario.target_voxels().any()  # Reset: the segment before the first click
    finally:
        scenario.controller.cleanup()
        local.controller.cleanup()
        expected.close()
