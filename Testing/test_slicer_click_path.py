"""The path of a click: a refinement click goes from the point list's event through controller.py to
the session (session.py) and back to the segment write (mrml.py), and nothing below the controller calls back
up into it: the worker thread runs the session's own ``add_click``, the point lists' events land in the
controller's own method, and no helper holds one of the controller's methods.

Stacks are read with the harness's own files left out: slicer/scenario.py plays the user (it adds the control
point, then waits) and SAMMed3DLib/bench/gil_loop.py is the stand-in for Slicer's main loop that polls.
"""

import functools
import traceback
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark

from SAMMed3DLib.slicer import controller as controller_module
from SAMMed3DLib.slicer import mrml
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, PhantomModel, Scenario
from SAMMed3DLib.slicer.targets import SceneStep
from SAMMed3DLib.slicer.worker import Worker

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop

LIB = Path(controller_module.__file__).resolve().parents[1]
HARNESS = ("slicer/scenario.py", "bench/gil_loop.py")
BELOW = tuple(np.add(SPHERE_CENTER_RAS, (0.0, 0.0, -16.0)))  # mm RAS, inside the sphere


@pytest.fixture
def scenario(app):
    scenario = Scenario(app.scene, model=PhantomModel())
    yield scenario
    scenario.controller.cleanup()


def recorded_jobs(monkeypatch) -> List[Any]:
    """Every callable the controllers made from now on hand their worker thread, in order."""
    jobs: List[Any] = []

    class RecordingWorker(Worker):
        def submit(self, job):
            jobs.append(job)
            return super().submit(job)

    monkeypatch.setattr(controller_module, "Worker", RecordingWorker)
    return jobs


def project_files(stack: traceback.StackSummary) -> List[str]:
    """The SAMMed3DLib files of ``stack`` (outermost first, relative to SAMMed3DLib/, repeats merged), without
    the harness's."""
    files: List[str] = []
    for frame in stack:
        path = Path(frame.filename).resolve()
        if LIB not in path.parents:
            continue
        name = path.relative_to(LIB).as_posix()
        if name not in HARNESS and (not files or files[-1] != name):
            files.append(name)
    return files


def test_the_worker_runs_the_sessions_own_add_click_for_a_refinement_click(scenario, monkeypatch):
    jobs = recorded_jobs(monkeypatch)
    scenario.click(SPHERE_CENTER_RAS)
    first = jobs[-1]
    assert isinstance(first, functools.partial) and first.func is controller_module.first_click
    session = scenario.controller.target().session
    before = scenario.target_voxels()
    scenario.click(BELOW, positive=False)
    job = jobs[-1]
    assert isinstance(job, functools.partial), job
    assert job.func.__self__ is session and job.func.__func__ is type(session).add_click, job.func
    assert job.args == (pytest.approx(BELOW),) and job.keywords["positive"] is False
    assert isinstance(job.keywords["payload"], SceneStep)
    assert scenario.controller.last_error is None and not np.array_equal(scenario.target_voxels(), before)


def test_a_refinement_click_never_goes_back_up(scenario, monkeypatch):
    """Project files on the stack where the click enters the controller, the session and the segment write."""
    scenario.click(SPHERE_CENTER_RAS)
    session_type = type(scenario.controller.target().session)
    stacks: Dict[str, List[str]] = {}

    def recording(name: str, function):
        def record(*args, **kwargs):
            stacks[name] = project_files(traceback.extract_stack()[:-1])
            return function(*args, **kwargs)

        return record

    controller_type = type(scenario.controller)
    monkeypatch.setattr(controller_type, "process_points", recording("points", controller_type.process_points))
    monkeypatch.setattr(session_type, "add_click", recording("add_click", session_type.add_click))
    monkeypatch.setattr(mrml, "apply_mask", recording("apply_mask", mrml.apply_mask))
    scenario.click(BELOW, positive=False)
    assert scenario.controller.last_error is None, scenario.controller.last_error
    assert stacks.get("points") == ["slicer/controller.py"], "the point event reached the controller via another file"
    # the worker thread's own loop (slicer/worker.py, the module's thread pool) calls the session directly
    assert stacks.get("add_click") == ["slicer/worker.py"], "the worker reached the session through a project file"
    assert stacks.get("apply_mask") == ["slicer/controller.py"], "the segment write came back up through another file"


def _refers_to(value: Any, controller: Any) -> bool:
    """Whether ``value`` is, or holds, a function bound to ``controller`` or closing over it."""
    if getattr(value, "__self__", None) is controller:
        return True
    if any(cell.cell_contents is controller for cell in getattr(value, "__closure__", None) or ()):
        return True
    if isinstance(value, (list, tuple, set)):
        return any(_refers_to(item, controller) for item in value)
    if isinstance(value, dict):
        return any(_refers_to(item, controller) for item in value.values())
    return False


def test_no_helper_below_the_controller_holds_one_of_its_methods(scenario):
    scenario.click(SPHERE_CENTER_RAS)
    controller = scenario.controller
    controller.start_placing(True)
    helpers = (controller.place_mode, controller.models, controller.models.servers, controller._targets,
               controller._volumes)  # fmt: skip
    for helper in helpers:
        held = [name for name, value in vars(helper).items() if _refers_to(value, controller)]
        assert not held, f"{type(helper).__name__} holds the controller's {held}"
