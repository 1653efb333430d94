"""The module end to end in a real slice view (Testing/support/views.py): place mode entered by the module's
own code, points placed by Slicer's markups widget (a *Preview* point under the mouse, *Defined* on click), the
controller running the stand-in network, the segment checked in the scene and in the rendered pixels; Ctrl+Z /
Ctrl+Y with a preview point in the list, a deleted point, a right-click that ends place mode, leaving the
module, the volume node modified between clicks, a second volume, a second segment next to a finished one.

Keyboard shortcuts are Qt's, taken before the view sees the key: a test calls what the shortcut calls.
"""

import numpy as np
import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.views import defined_points, module_in_red_view, place_mode, preview_points, tinted

from SAMMed3DLib.slicer import mrml
from SAMMed3DLib.slicer.controller import DELETED_POINT
from SAMMed3DLib.slicer.scenario import (
    SPHERE_CENTER_RAS,
    PhantomModel,
    add_volume,
    oblique_ijk_to_ras,
    sphere_volume,
    sphere_voxels,
)

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop

ANTERIOR = np.add(SPHERE_CENTER_RAS, (0.0, 12.0, 0.0))  # inside the sphere, on the axial slice of its centre
POSTERIOR = np.add(SPHERE_CENTER_RAS, (0.0, -12.0, 0.0))


@pytest.fixture
def module(app):
    yield from module_in_red_view(app, PhantomModel())  # the controller is entered (the module is shown)


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


def hover(view, ras) -> None:
    """The mouse rests over ``ras``: the widget's preview point follows it."""
    view.move(*view.ras_to_xy(ras))


def ring(view, ras, inner: float = 12.0, outer: float = 30.0) -> np.ndarray:
    """The rendered pixels between ``inner`` and ``outer`` px around ``ras`` (the point glyph left out)."""
    pixels = view.pixels()
    x, y = view.ras_to_xy(ras)
    yy, xx = np.mgrid[: pixels.shape[0], : pixels.shape[1]]
    distance = np.hypot(xx - x, yy - y)
    return pixels[(distance >= inner) & (distance <= outer)]


def segment_colour(segmentation, segment_id):
    return segmentation.GetSegmentation().GetSegment(segment_id).GetColor()


def test_a_click_in_the_view_segments_the_sphere_in_the_scene_and_on_screen(module):
    scenario, view = module
    colour = segment_colour(scenario.segmentation, scenario.target)
    assert not tinted(view.pixels(), colour).any()
    scenario.controller.start_placing(True)
    hover(view, SPHERE_CENTER_RAS)
    scenario.controller.wait()
    assert preview_points(scenario.positive) == 1, "no preview point under the mouse"
    assert scenario.controller.messages == [] and not scenario.target_voxels().any(), "a preview ran as a click"
    click(scenario, view, SPHERE_CENTER_RAS)
    sphere = sphere_voxels(scenario.geometry.ijk_to_ras, scenario.geometry.dims, SPHERE_CENTER_RAS, 24.0)
    target = scenario.target_voxels()
    assert 2 * (target & sphere).sum() / (target.sum() + sphere.sum()) > 0.8
    assert len(defined_points(scenario.positive)) == 1
    assert tinted(ring(view, SPHERE_CENTER_RAS), colour).mean() > 0.9, "the segment is not drawn around the click"
    far = np.add(SPHERE_CENTER_RAS, (-40.0, 0.0, 0.0))  # outside the sphere, in the volume
    assert not tinted(ring(view, far, 0.0, 8.0), colour).any()


def test_a_negative_click_carves_the_segment_on_screen_and_undo_restores_it(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    click(scenario, view, ANTERIOR, positive=False)
    assert not voxel_at(scenario, ANTERIOR) and voxel_at(scenario, POSTERIOR)
    colour = segment_colour(scenario.segmentation, scenario.target)
    assert tinted(ring(view, ANTERIOR, 0.0, 6.0), colour).mean() < 0.1
    assert tinted(ring(view, POSTERIOR, 0.0, 6.0), colour).mean() > 0.9
    view.leave()
    scenario.controller.undo()  # Ctrl+Z: the carved voxels are drawn again
    scenario.controller.wait()
    assert tinted(ring(view, ANTERIOR, 0.0, 6.0), colour).mean() > 0.9


def test_a_click_after_the_volume_node_changed_still_runs(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    display = view.app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")  # as Volume Rendering adds one
    scenario.volume.AddAndObserveDisplayNodeID(display.GetID())
    click(scenario, view, ANTERIOR, positive=False)
    assert not voxel_at(scenario, ANTERIOR)


def test_a_second_volume_in_the_view(module):
    scenario, view = module
    click(scenario, view, SPHERE_CENTER_RAS)
    first = scenario.target_voxels()
    volume = sphere_volume(view.app.scene, "Phantom 2", dims=(60, 60, 48), spacing=(1.3, 1.3, 1.0), angle=-10.0)
    segmentation = mrml.new_segmentation(view.app.scene, volume)
    segment_id = mrml.add_empty_segment(segmentation)
    scenario.select(volume, segmentation, segment_id)
    scenario.segmentation.GetDisplayNode().SetVisibility(False)  # its blue would blend into the new colour
    view.show_volume(volume)
    view.jump_to(SPHERE_CENTER_RAS)
    assert defined_points(scenario.positive) == [], "the second volume shows the first one's clicks"
    click(scenario, view, SPHERE_CENTER_RAS)
    geometry = mrml.volume_geometry(volume)
    voxels = mrml.read_segment(segmentation, segment_id, geometry, geometry.full_region())
    sphere = sphere_voxels(geometry.ijk_to_ras, geometry.dims, SPHERE_CENTER_RAS, 24.0)
    assert 2 * (voxels & sphere).sum() / (voxels.sum() + sphere.sum()) > 0.8
    assert np.array_equal(scenario.target_voxels(), first), "the first volume's segment changed"
    assert tinted(ring(view, SPHERE_CENTER_RAS), segment_colour(segmentation, segment_id)).mean() > 0.9


def two_spheres(scene):
    """A 1 mm volume with two bright balls (radius 15 mm) 60 mm apart along R; returns (node, centres)."""
    dims = (110, 60, 50)
    matrix = oblique_ijk_to_ras((1.0, 1.0, 1.0), 0.0, (0.0, 0.0, 0.0))  # LPS-like axes: R and A decrease
    matrix[:3, 3] = np.add(SPHERE_CENTER_RAS, (25.0, 30.0, -25.0))
    centres = (tuple(SPHERE_CENTER_RAS), tuple(np.add(SPHERE_CENTER_RAS, (-60.0, 0.0, 0.0))))
    voxels = np.full(dims[::-1], 100, np.int16)
    for centre in centres:
        voxels[sphere_voxels(matrix, dims, centre, 15.0)] = 1000
    return add_volume(scene, "Two spheres", voxels, matrix), centres


def test_a_second_segment_next_to_a_finished_one(module):
    scenario, view = module
    volume, (left, right) = two_spheres(view.app.scene)
    segmentation = mrml.new_segmentation(view.app.scene, volume)
    first = mrml.add_empty_segment(segmentation)
    scenario.select(volume, segmentation, first)
    view.show_volume(volume)
    view.jump_to(left)
    click(scenario, view, left)
    scenario.controller.finish()  # Enter
    scenario.controller.wait()
    geometry = mrml.volume_geometry(volume)
    kept = mrml.read_segment(segmentation, first, geometry, geometry.full_region())
    assert kept.any() and defined_points(scenario.positive) == []
    second = mrml.add_empty_segment(segmentation)
    scenario.select(volume, segmentation, second)
    click(scenario, view, right)
    assert np.array_equal(mrml.read_segment(segmentation, first, geometry, geometry.full_region()), kept)
    voxels = mrml.read_segment(segmentation, second, geometry, geometry.full_region())
    ball = sphere_voxels(geometry.ijk_to_ras, geometry.dims, right, 15.0)
    assert 2 * (voxels & ball).sum() / (voxels.sum() + ball.sum()) > 0.8 and not (voxels & kept).any()
    assert len(defined_points(scenario.positive)) == 1
    for centre, segment_id in ((left, first), (right, second)):
        colour = segment_colour(segmentation, segment_id)
        assert tinted(ring(view, centre, 12.0, 20.0), colour).mean() > 0.9, f"segment {segment_id} not drawn"


def test_a_write_that_only_clears_voxels_is_drawn(module):
    """A segment write whose mask only removes voxels (a negative click inside the segment) is shown at once:
    the slice view is told about the cleared voxels, not only about the added ones."""
    scenario, view = module
    geometry, segmentation, segment_id = scenario.geometry, scenario.segmentation, scenario.target
    colour = segment_colour(segmentation, segment_id)
    centre = np.round(np.linalg.solve(geometry.ijk_to_ras, [*SPHERE_CENTER_RAS, 1.0])[:3]).astype(int)
    region = (tuple(int(c) - 10 for c in centre), (20, 20, 20))
    block = np.ones((20, 20, 20), dtype=bool)
    mrml.write_segment(segmentation, segment_id, geometry, region, block)
    assert tinted(ring(view, SPHERE_CENTER_RAS, 0.0, 4.0), colour).mean() > 0.9
    mrml.write_segment(segmentation, segment_id, geometry, region, np.zeros_like(block))
    assert not scenario.target_voxels().any()
    assert not tinted(ring(view, SPHERE_CENTER_RAS, 0.0, 4.0), colour).any(), "the cleared voxels are still drawn"
