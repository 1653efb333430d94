"""The module's controller in a real slice view (Testing/support/views.py): place mode entered by the module's
own code, points placed by Slicer's markups widget (a *Preview* point under the mouse, *Defined* on click),
Ctrl+Z / Ctrl+Y with a preview point in the list, a right-click that ends place mode, leaving the module.

Keyboard shortcuts are Qt's, taken before the view sees the key: a test calls what the shortcut calls.
"""

import numpy as np
import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.views import SliceView, defined_points, place_mode, preview_points

from SAMMed3DLib.slicer.controller import DELETED_POINT
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, PhantomModel, Scenario

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop

ANTERIOR = np.add(SPHERE_CENTER_RAS, (0.0, 12.0, 0.0))  # inside the sphere, on the axial slice of its centre
POSTERIOR = np.add(SPHERE_CENTER_RAS, (0.0, -12.0, 0.0))


@pytest.fixture
def module(app):
    scenario = Scenario(app.scene, model=PhantomModel())  # the controller is entered (the module is shown)
    view = SliceView(app, "Red")
    view.show_volume(scenario.volume)
    view.jump_to(SPHERE_CENTER_RAS)
    yield scenario, view
    view.close()
    scenario.controller.cleanup()


def click(scenario, view, ras, positive: bool = True) -> None:
    """The module's + or − button (its own place mode), then a click in the view at ``ras``."""
    scenario.controller.start_placing(positive)
    x, y = view.ras_to_xy(ras)
    view.move(x, y)
    view.click(x, y)
    scenario.controller.wait()
    assert scenario.controller.last_error is None, scenario.controller.last_error


def voxel_at(scenario, ras) -> bool:
    i, j, k = np.round(np.linalg.solve(scenario.geometry.ijk_to_ras, [*ras, 1.0])[:3]).astype(int)
    return bool(scenario.target_voxels()[k, j, i])


def test_module_place_mode_a_click_and_a_right_click_that_ends_it(module):
    scenario, view = module
    seen = []
    scenario.controller.on_place_mode = lambda: seen.append(scenario.controller.placing)
    click(scenario, view, SPHERE_CENTER_RAS)
    assert voxel_at(scenario, SPHERE_CENTER_RAS) and scenario.controller.placing is True
    x, y = view.ras_to_xy(ANTERIOR)
    view.click(x, y, button="Right")  # the markups widget leaves place mode
    assert scenario.controller.placing is None and seen[-1] is None, "the + button would stay checked"
    before = scenario.target_voxels()
    view.click(*view.ras_to_xy(POSTERIOR))
    scenario.controller.wait()
    assert np.array_equal(scenario.target_voxels(), before) and len(defined_points(scenario.positive)) == 1


def test_undo_and_redo_with_a_preview_point_in_the_list(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    after_first = scenario.target_voxels()
    click(scenario, view, ANTERIOR, positive=False)
    after_second = scenario.target_voxels()
    view.move(*view.ras_to_xy(POSTERIOR))  # the mouse rests over the view: a Preview point in the red list
    assert preview_points(scenario.negative) == 1
    scenario.controller.undo()  # Ctrl+Z
    scenario.controller.wait()
    assert np.array_equal(scenario.target_voxels(), after_first) and defined_points(scenario.negative) == []
    assert preview_points(scenario.negative) == 1
    scenario.controller.redo()  # Ctrl+Y
    scenario.controller.wait()
    assert np.array_equal(scenario.target_voxels(), after_second) and len(defined_points(scenario.negative)) == 1
    click(scenario, view, POSTERIOR, positive=False)  # the next click runs, once
    assert not voxel_at(scenario, POSTERIOR) and len(defined_points(scenario.negative)) == 2
    assert len(scenario.controller.target().clicks()) == 3


def test_a_deleted_click_point_comes_back_and_the_next_click_runs(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    click(scenario, view, ANTERIOR, positive=False)
    after_second = scenario.target_voxels()
    view.leave()
    scenario.negative.RemoveNthControlPoint(0)  # the user deletes it in the Markups module
    scenario.controller.wait()
    assert scenario.controller.last_error == DELETED_POINT and len(defined_points(scenario.negative)) == 1
    assert np.array_equal(scenario.target_voxels(), after_second)
    click(scenario, view, POSTERIOR, positive=False)
    assert not voxel_at(scenario, POSTERIOR)


def test_after_leaving_the_module_a_point_placed_in_the_view_is_no_click(module, app):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    before, messages = scenario.target_voxels(), list(scenario.controller.messages)
    scenario.controller.exit()
    assert scenario.controller.placing is None
    place_mode(app, scenario.positive)  # Slicer's own toolbar, in another module, on the old list
    view.click(*view.ras_to_xy(POSTERIOR))
    scenario.controller.wait()
    assert len(defined_points(scenario.positive)) == 2, "the markups widget placed the point"
    assert np.array_equal(scenario.target_voxels(), before) and scenario.controller.messages == messages
