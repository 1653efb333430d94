"""The module in a shared scene (Testing/support/views.py: real slice views, points placed by Slicer's markups widget
through the view's interactor, the worker under the GIL-holding loop): what other actors change between two
clicks and while a click runs. The scene is the truth; a session is a cache of it, checked before each step.

- a saved study closed and loaded again (same node IDs) starts afresh, its saved points are no clicks;
- voxels edited on the same grid: the next click segments the new voxels, with its clicks and segment kept;
- a segment painted or erased elsewhere: kept by every later click, Undo steps back to it, Reset before it;
- the Segment Editor's own undo, another module's edit, a removed node, a second study imported;
- a refused click in a burst of queued clicks goes alone; a moved click point goes back; place-multiple is
  restored on leaving; edits made while a click runs are never overwritten; a hung step never holds up quitting.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.slicer_scene import build_app_scene
from support.views import SliceView, defined_points, module_in_red_view

from SAMMed3DLib.slicer import freshness, mrml
from SAMMed3DLib.slicer.controller import Inputs
from SAMMed3DLib.slicer.feedback import DELETED_POINT, MOVED_POINT
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, PhantomModel, Scenario, sphere_voxels

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop

ROOT = Path(__file__).resolve().parents[1]
ANTERIOR = tuple(np.add(SPHERE_CENTER_RAS, (0.0, 12.0, 0.0)))  # inside the sphere, on the view's axial slice
POSTERIOR = tuple(np.add(SPHERE_CENTER_RAS, (0.0, -12.0, 0.0)))
BLOB = tuple(np.add(SPHERE_CENTER_RAS, (31.0, 0.0, 0.0)))  # background next to the sphere, inside the volume


class BlockingModel(PhantomModel):
    """The phantom network, whose decoding waits (once armed) until the test releases it."""

    def __init__(self) -> None:
        self.armed, self.decoding, self.release = False, threading.Event(), threading.Event()

    def decode(self, *args, **kwargs):
        if self.armed:
            self.decoding.set()
            assert self.release.wait(60), "the test never released the model"
        return super().decode(*args, **kwargs)


@pytest.fixture
def module(app):
    yield from module_in_red_view(app, BlockingModel())  # the controller is entered (the module is shown)


def place(scenario, view, ras, positive: bool = True) -> None:
    """The module's + or − button, then a click in the view at ``ras`` (nothing waited for)."""
    scenario.controller.start_placing(positive)
    x, y = view.ras_to_xy(ras)
    view.move(x, y)
    view.click(x, y)


def click(scenario, view, ras, positive: bool = True) -> None:
    place(scenario, view, ras, positive)
    scenario.controller.wait()
    assert scenario.controller.last_error is None, scenario.controller.last_error


def ijk(geometry, ras) -> tuple:
    i, j, k = np.round(np.linalg.solve(geometry.ijk_to_ras, [*ras, 1.0])[:3]).astype(int)
    return k, j, i


def ball(scenario, ras, radius: float) -> np.ndarray:
    return sphere_voxels(scenario.geometry.ijk_to_ras, scenario.geometry.dims, ras, radius)


def session_clicks(scenario) -> int:
    return len(scenario.controller.target().session.clicks)


def messages_since(scenario, count: int) -> list:
    return [text for text, _ in scenario.controller.messages[count:]]


def paint(scenario, voxels: np.ndarray, value: bool = True) -> None:
    """What the Segment Editor's paint (or erase) effect does: the segmentations logic merges a labelmap into
    the segment (``voxels``: bool, z-y-x, on the volume's grid)."""
    current = scenario.target_voxels()
    edited = current | voxels if value else current & ~voxels
    mrml.write_segment(scenario.segmentation, scenario.target, scenario.geometry, scenario.geometry.full_region(),
                       edited)  # fmt: skip


# --- 1. a study closed and loaded again ---------------------------------------------------------------------


def save_study(scenario, folder: Path) -> Path:
    """Save the volume, the segmentation and the point lists with the scene (as File → Save)."""
    scene = scenario.scene
    for node in (scenario.volume, scenario.segmentation, scenario.positive, scenario.negative):
        node.AddDefaultStorageNode()
        storage = node.GetStorageNode()
        storage.SetFileName(str(folder / f"{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"))
        assert storage.WriteData(node)
    scene.SetRootDirectory(str(folder))
    scene.SetURL(str(folder / "study.mrml"))
    assert scene.Commit()
    return folder / "study.mrml"


def close_and_load(scenario, view, app, path: Path) -> SliceView:
    """File → Close Scene, then load the saved study; the panel's selection follows as the module's widget makes
    it follow (nothing selected while the scene closes, the study's nodes once it is loaded). The view stays, as
    Slicer's do, and shows the loaded volume."""
    ids = [node.GetID() for node in (scenario.volume, scenario.segmentation, scenario.positive, scenario.negative)]
    scene = scenario.scene
    tag = scene.AddObserver(scene.StartCloseEvent, lambda *_: scenario.controller.set_inputs(Inputs()))
    scene.Clear(0)
    scene.RemoveObserver(tag)
    scene.SetURL(str(path))
    assert scene.Import()
    scenario.volume, scenario.segmentation, scenario.positive, scenario.negative = map(scene.GetNodeByID, ids)
    scenario.select(scenario.volume, scenario.segmentation, scenario.target)
    view.show_volume(scenario.volume)
    view.jump_to(SPHERE_CENTER_RAS)
    return view


def test_a_study_closed_and_loaded_again_starts_afresh(module, app, tmp_path):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    click(scenario, view, ANTERIOR, positive=False)
    old_segmentation = scenario.segmentation
    saved = scenario.target_voxels()
    close_and_load(scenario, view, app, save_study(scenario, tmp_path))
    assert scenario.segmentation is not old_segmentation and np.array_equal(scenario.target_voxels(), saved)
    assert defined_points(scenario.positive) == [] and defined_points(scenario.negative) == [], \
        "the saved points show the closed scene's clicks"  # fmt: skip
    assert not scenario.controller.can_undo
    click(scenario, view, ANTERIOR)  # a new session: one click, written into the loaded segmentation
    assert session_clicks(scenario) == 1 and scenario.controller.target().segmentation is scenario.segmentation
    assert scenario.target_voxels()[ijk(scenario.geometry, ANTERIOR)], "the visible segment did not change"


def test_a_click_that_runs_while_the_scene_closes_writes_nothing(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    before = scenario.target_voxels()
    blocking = scenario.controller.target().session._model
    blocking.armed = True
    place(scenario, view, ANTERIOR, positive=False)
    assert blocking.decoding.wait(60)
    segmentation, target = scenario.segmentation, scenario.target
    scenario.scene.Clear(0)  # File → Close Scene while the click runs
    blocking.release.set()
    scenario.controller.wait()
    assert scenario.controller.last_error is None
    assert np.array_equal(mrml.whole_segment(segmentation, target, scenario.geometry), before)
    assert scenario.controller.target() is None


# --- 2. voxels edited on the same grid ----------------------------------------------------------------------


def add_blob(scenario, in_place: bool) -> None:
    """A filter writes a bright blob into the volume's own voxels: replacing its scalars (as
    ``slicer.util.updateVolumeFromArray`` does), or editing them in place and calling the node's ``Modified``."""
    image = scenario.volume.GetImageData()
    voxels = mrml._voxels(image)
    edited = voxels.copy()
    edited[ball(scenario, BLOB, 6.0)] = 1000
    if in_place:
        voxels[:] = edited
        scenario.volume.Modified()
    else:
        from vtk.util import numpy_support

        scalars = numpy_support.numpy_to_vtk(edited.ravel(), deep=True, array_type=image.GetScalarType())
        image.GetPointData().SetScalars(scalars)
        scenario.volume.Modified()


@pytest.mark.parametrize("in_place", [False, True], ids=["new scalars", "in place"])
def test_a_click_segments_the_voxels_on_screen_after_they_changed(module, in_place):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    assert not scenario.target_voxels()[ijk(scenario.geometry, BLOB)]
    add_blob(scenario, in_place)
    count = len(scenario.controller.messages)
    click(scenario, view, BLOB)
    assert scenario.target_voxels()[ijk(scenario.geometry, BLOB)], "the new voxels were not segmented"
    assert messages_since(scenario, count) == [freshness.NEW_VOXELS]
    assert session_clicks(scenario) == 2, "the earlier click was not kept"
    assert len(defined_points(scenario.positive)) == 2
    scenario.controller.reset()  # the first click's edit is no longer undoable, yet Reset reverts it
    scenario.controller.wait()
    assert not scenario.target_voxels().any()


def test_a_session_that_cannot_continue_on_new_voxels_stays_as_it_was(module, monkeypatch):
    from SAMMed3DLib.slicer import checks

    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    session, before = scenario.controller.target().session, scenario.target_voxels()
    add_blob(scenario, in_place=False)

    def refused(*args, **kwargs):
        raise MemoryError("no room for a new session")

    monkeypatch.setattr(checks, "open_session", refused)
    place(scenario, view, BLOB)
    scenario.controller.wait()
    assert "no room" in scenario.controller.last_error and np.array_equal(scenario.target_voxels(), before)
    target = scenario.controller.target()
    assert target.session is session and len(session.clicks) == 1 and len(defined_points(scenario.positive)) == 1
    monkeypatch.undo()
    click(scenario, view, BLOB)  # tried again: the session continues on the new voxels now
    assert scenario.target_voxels()[ijk(scenario.geometry, BLOB)] and session_clicks(scenario) == 2


# --- 3. hand edits between clicks ----------------------------------------------------------------------------


def test_painted_and_erased_voxels_stay_through_later_clicks(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    sphere = scenario.target_voxels()
    painted = ball(scenario, BLOB, 5.0) & ~sphere  # next to the object
    erased = ball(scenario, POSTERIOR, 5.0) & sphere
    paint(scenario, painted)
    paint(scenario, erased, value=False)
    edited = scenario.target_voxels()
    count = len(scenario.controller.messages)
    click(scenario, view, ANTERIOR)  # a nearby click: the network predicts the sphere again
    assert scenario.target_voxels()[painted].all(), "painted voxels were erased by the next click"
    assert not scenario.target_voxels()[erased].any(), "erased voxels came back with the next click"
    assert messages_since(scenario, count) == [freshness.HAND_EDIT]
    click(scenario, view, tuple(np.add(SPHERE_CENTER_RAS, (-8.0, 0.0, 0.0))))
    assert scenario.target_voxels()[painted].all() and not scenario.target_voxels()[erased].any()
    scenario.controller.undo()
    scenario.controller.undo()  # both clicks after the paint: back to the painted state
    scenario.controller.wait()
    assert np.array_equal(scenario.target_voxels(), edited)
    scenario.controller.undo()  # the hand edit itself
    scenario.controller.wait()
    assert np.array_equal(scenario.target_voxels(), sphere)
    scenario.controller.redo()
    scenario.controller.reset()  # the segment as it was before the first click
    scenario.controller.wait()
    assert not scenario.target_voxels().any()


def test_the_segment_editors_undo_leaves_nothing_to_adopt(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    after_first = scenario.target_voxels()
    scene = scenario.scene
    scene.SetUndoOn()
    scenario.segmentation.SetUndoEnabled(True)
    scene.SaveStateForUndo()  # what the Segment Editor does before an effect
    paint(scenario, ball(scenario, BLOB, 5.0))
    scene.Undo()  # its Undo: the segmentation's state as saved (new labelmap objects)
    assert np.array_equal(scenario.target_voxels(), after_first)
    count = len(scenario.controller.messages)
    click(scenario, view, ANTERIOR, positive=False)
    assert messages_since(scenario, count) == [] and not scenario.target_voxels()[ijk(scenario.geometry, BLOB)]
    scenario.controller.undo()
    scenario.controller.wait()
    assert np.array_equal(scenario.target_voxels(), after_first) and session_clicks(scenario) == 1


def test_another_modules_edit_of_the_segment_is_an_edit_like_a_paint(module):
    """E.g. a script (or another extension) editing the labelmap's own voxels, then calling ``Modified``."""
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    segment = scenario.segmentation.GetSegmentation().GetSegment(scenario.target)
    layer = segment.GetRepresentation(mrml._BINARY)
    x0, _, y0, _, z0, _ = layer.GetExtent()
    erased = ball(scenario, POSTERIOR, 5.0) & scenario.target_voxels()  # inside the segment, so in the layer
    k, j, i = np.nonzero(erased)
    mrml._voxels(layer)[k - z0, j - y0, i - x0] = 0
    layer.Modified()
    assert erased.any() and not scenario.target_voxels()[erased].any()
    click(scenario, view, ANTERIOR)
    assert not scenario.target_voxels()[erased].any(), "the other module's erase was undone by the next click"


def test_a_segment_edited_while_a_click_runs_keeps_the_edit(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    blocking = scenario.controller.target().session._model
    blocking.armed = True
    place(scenario, view, ANTERIOR, positive=False)
    assert blocking.decoding.wait(60)
    blob = ball(scenario, BLOB, 5.0) & ~scenario.target_voxels()
    paint(scenario, blob)  # the user paints while the click runs
    edited = scenario.target_voxels()
    blocking.release.set()
    scenario.controller.wait()
    assert scenario.controller.last_error == freshness.EDITED_WHILE_RUNNING
    assert np.array_equal(scenario.target_voxels(), edited) and session_clicks(scenario) == 1
    assert defined_points(scenario.negative) == [], "the click that was not applied kept its point"
    blocking.armed = False
    click(scenario, view, ANTERIOR, positive=False)  # again: on the edited segment
    assert scenario.target_voxels()[blob].all() and not scenario.target_voxels()[ijk(scenario.geometry, ANTERIOR)]


# --- nodes removed, a second study imported --------------------------------------------------------------------


def test_a_removed_segmentation_ends_its_clicks_with_one_message(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    scenario.scene.RemoveNode(scenario.segmentation)
    scenario.controller.set_inputs(Inputs(scenario.volume, None, "", scenario.positive, scenario.negative))
    scenario.controller.wait()
    assert [text for text, error in scenario.controller.messages if error] == [freshness.NODE_GONE]
    assert defined_points(scenario.positive) == [] and not scenario.controller.can_undo
    segmentation = mrml.new_segmentation(scenario.scene, scenario.volume)
    scenario.segmentation, scenario.target = segmentation, mrml.add_empty_segment(segmentation)
    scenario.select(scenario.volume, segmentation, scenario.target)
    click(scenario, view, SPHERE_CENTER_RAS)
    assert session_clicks(scenario) == 1 and scenario.target_voxels().any()


def test_a_second_study_imported_into_the_scene_leaves_the_session_as_it_is(module, app, tmp_path):
    second = build_app_scene()  # a second study, saved on its own
    try:
        study = Scenario(second.scene, model=PhantomModel())
        study.controller.cleanup()
        saved = save_study(study, tmp_path)
    finally:
        second.close()
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    count, nodes = len(scenario.controller.messages), scenario.scene.GetNumberOfNodes()
    scenario.scene.SetURL(str(saved))
    assert scenario.scene.Import()  # Add Data of the second study's scene
    assert scenario.scene.GetNumberOfNodes() > nodes
    click(scenario, view, ANTERIOR, positive=False)
    assert session_clicks(scenario) == 2 and messages_since(scenario, count) == []
    assert defined_points(scenario.positive) != [] and len(defined_points(scenario.negative)) == 1


# --- 4-6. queued clicks, place mode, moved points -------------------------------------------------------------


def test_a_refused_click_in_a_burst_goes_alone(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    blocking = scenario.controller.target().session._model
    blocking.armed = True
    scenario.controller.start_placing(True)
    burst = [ANTERIOR, POSTERIOR, None, tuple(np.add(SPHERE_CENTER_RAS, (6.0, 0, 0))), BLOB]
    for ras in burst:  # five clicks faster than the worker: the third outside the volume (a view corner)
        x, y = (5.0, 5.0) if ras is None else view.ras_to_xy(ras)
        view.move(x, y)
        view.click(x, y)
    assert blocking.decoding.wait(60) and len(defined_points(scenario.positive)) == 6
    blocking.release.set()
    scenario.controller.wait()
    errors = [text for text, error in scenario.controller.messages if error]
    assert len(errors) == 1 and "outside" in errors[0], errors
    assert session_clicks(scenario) == 5, "the clicks queued after the refused one were dropped"
    assert len(defined_points(scenario.positive)) == 5


def test_leaving_the_module_restores_place_multiple(module, app):
    scenario, view = module
    interaction = app.app_logic.GetInteractionNode()
    interaction.SetPlaceModePersistence(0)  # the user's setting: place one point at a time
    click(scenario, view, SPHERE_CENTER_RAS)
    assert interaction.GetPlaceModePersistence() == 1  # while placing clicks
    scenario.controller.exit()
    assert interaction.GetPlaceModePersistence() == 0, "place multiple stays on after leaving the module"
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform


def drag(view, start, end, steps: int = 10) -> None:
    """Press the left button at ``start`` (display pixels), move to ``end``, release (a drag in the view)."""
    view.move(*start)
    view.interactor.InvokeEvent("LeftButtonPressEvent")
    for step in range(1, steps + 1):
        view.move(*np.add(start, np.subtract(end, start) * step / steps))
    view.interactor.InvokeEvent("LeftButtonReleaseEvent")


def test_a_dragged_click_point_goes_back_and_adds_no_click(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    click(scenario, view, ANTERIOR)
    before, points = scenario.target_voxels(), defined_points(scenario.positive)
    scenario.controller.stop_placing()
    scenario.positive.SetNthControlPointLocked(1, False)  # unlocked in the Markups module
    start = view.ras_to_xy(ANTERIOR)
    drag(view, start, np.add(start, (25.0, 0.0)))
    scenario.controller.wait()
    assert scenario.controller.last_error == MOVED_POINT
    assert np.allclose(sorted(defined_points(scenario.positive)), sorted(points), atol=1e-4)
    assert session_clicks(scenario) == 2 and np.array_equal(scenario.target_voxels(), before)
    count = len(scenario.controller.messages)
    click(scenario, view, POSTERIOR, positive=False)
    assert session_clicks(scenario) == 3 and DELETED_POINT not in messages_since(scenario, count)


# --- 7. quitting while a step hangs ---------------------------------------------------------------------------

QUIT_SCRIPT = """
import socket, sys, threading, time
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, PhantomModel, Scenario, build_app_scene

decoding = threading.Event()

class Hung(PhantomModel):
    def decode(self, *args, **kwargs):
        decoding.set()
        threading.Event().wait()  # never returns

app = build_app_scene()
if sys.argv[1] == "server":  # a team server that accepts the connection and never answers
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    scenario = Scenario(app.scene)
    scenario.controller.set_options(device="server", server_url="http://127.0.0.1:%d" % listener.getsockname()[1],
                                    server_token="t")
    scenario.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)
    held = listener.accept()  # kept open: the request waits for an answer
    print("running", flush=True)
else:
    scenario = Scenario(app.scene, model=Hung())
    scenario.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)
    assert decoding.wait(60)
    print("running", flush=True)
start = time.monotonic()
scenario.controller.cleanup()
print("cleanup %.3f" % (time.monotonic() - start), flush=True)
"""


@pytest.mark.parametrize("where", ["local", "server"])
def test_quitting_never_waits_for_a_hung_step(where):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", textwrap.dedent(QUIT_SCRIPT), where]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=environment)  # fmt: skip
    try:
        lines = []
        while not lines or not lines[-1].startswith("cleanup"):
            line = process.stdout.readline()
            assert line, f"the script ended early: {lines}"
            lines.append(line.strip())
        cleaned = time.monotonic()
        process.wait(timeout=30)
        assert "running" in lines and float(lines[-1].split()[1]) < 1.0, lines
        assert time.monotonic() - cleaned < 5.0, "quitting waited for the hung step"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            pytest.fail("quitting waited for the hung step (killed after 30 s)")


def test_the_scene_check_benchmark_runs(capsys):
    from SAMMed3DLib.bench.scene_check import main

    assert main(["--size", "48,40,32", "--repeats", "10"]) == 0
    out = capsys.readouterr().out
    assert "scene check before a click, nothing changed: median" in out and "ratio check / reference" in out


def test_the_targets_copy_of_the_segment_follows_every_write(module):
    """What the module last wrote is what it compares the scene with: after a fresh start over old content (its
    first step also clears what the segment held), undo, redo and a click, the copy is the scene's segment."""
    scenario, view = module
    paint(scenario, ball(scenario, BLOB, 5.0))  # old content, away from the object: the first click clears it
    click(scenario, view, SPHERE_CENTER_RAS)
    assert not scenario.target_voxels()[ball(scenario, BLOB, 5.0)].any()
    steps = [scenario.controller.undo, scenario.controller.redo, scenario.controller.undo]
    for step in steps:
        step()
        scenario.controller.wait()
        target = scenario.controller.target()
        assert np.array_equal(target.seen, scenario.target_voxels()), step.__name__
    count = len(scenario.controller.messages)
    click(scenario, view, ANTERIOR, positive=False)
    assert messages_since(scenario, count) == [], "the module took its own write for a hand edit"
