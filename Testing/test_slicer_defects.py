"""Defects found in an audit, on real MRML (slicer-core), each with a test that failed on the old code."""

import numpy as np
import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark

from SAMMed3DLib.slicer import controller, markups, mrml
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, PhantomModel, Scenario

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop

BELOW = tuple(np.add(SPHERE_CENTER_RAS, (0.0, 0.0, -16.0)))  # mm RAS, inside the sphere


def _scenario(app):
    return Scenario(app.scene, model=PhantomModel())


def test_volume_geometries_compare_by_value():
    a = mrml.VolumeGeometry(np.eye(4), (4, 5, 6))
    b = mrml.VolumeGeometry(np.eye(4).copy(), (4, 5, 6))
    assert a == b and hash(a) == hash(b)
    assert a != mrml.VolumeGeometry(np.diag([2.0, 1.0, 1.0, 1.0]), (4, 5, 6))
    assert a != mrml.VolumeGeometry(np.eye(4), (4, 5, 7))


def test_clicks_keep_working_after_the_volume_node_is_modified(app):
    """Volume Rendering adds a display node (the volume node is modified): the next click still works."""
    scenario = _scenario(app)
    try:
        scenario.click(SPHERE_CENTER_RAS)
        first = scenario.target_voxels()
        display = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
        scenario.volume.AddAndObserveDisplayNodeID(display.GetID())
        scenario.volume.Modified()
        scenario.click(BELOW, positive=False)
        assert scenario.controller.last_error is None, scenario.controller.last_error
        assert scenario.target_voxels().sum() < first.sum()
    finally:
        scenario.controller.cleanup()


def _selection_and_interaction(scene):
    return scene.GetNodeByID("vtkMRMLSelectionNodeSingleton"), scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")


def test_leaving_the_module_removes_observers_and_restores_the_active_place_list(app):
    """Defect 5: after exit a point placed in the lists (Slicer's toolbar, another module) is no click, place mode
    into our lists is over and Slicer's previous active place list is back."""
    scenario = _scenario(app)
    try:
        selection, interaction = _selection_and_interaction(app.scene)
        own = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "The user's list")
        selection.SetActivePlaceNodeID(own.GetID())
        scenario.controller.start_placing(True)
        assert selection.GetActivePlaceNodeID() == scenario.positive.GetID()
        assert interaction.GetCurrentInteractionMode() == interaction.Place
        scenario.controller.exit()
        assert selection.GetActivePlaceNodeID() == own.GetID()
        assert interaction.GetCurrentInteractionMode() != interaction.Place
        scenario.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)
        scenario.controller.wait()
        assert not scenario.controller.busy and not scenario.target_voxels().any()
        assert scenario.controller.messages == []
        scenario.controller.enter(app.scene)  # shown again: the list shows the clicks (none), clicks run again
        assert scenario.positive.GetNumberOfControlPoints() == 0
        scenario.click(SPHERE_CENTER_RAS)
        assert scenario.target_voxels().any() and scenario.controller.last_error is None
    finally:
        scenario.controller.cleanup()


def test_place_mode_left_in_a_view_is_reported(app):
    """Defect 8: a right-click or double-click in a view leaves place mode; the +/- buttons hear of it."""
    scenario = _scenario(app)
    try:
        seen = []
        scenario.controller.on_place_mode = lambda: seen.append(scenario.controller.placing)
        scenario.controller.start_placing(False)
        assert scenario.controller.placing is False and seen[-1] is False
        scenario.controller.start_placing(True)
        assert scenario.controller.placing is True and seen[-1] is True
        _, interaction = _selection_and_interaction(app.scene)
        interaction.SwitchToViewTransformMode()  # what the markups widget does on a right-click
        assert scenario.controller.placing is None and seen[-1] is None
    finally:
        scenario.controller.cleanup()


def test_a_deleted_click_point_is_put_back_and_later_clicks_run(app):
    """A click's point deleted in the Markups module: refused with one message, the point is back, nothing else
    changed; a queued click whose point is deleted before it runs is dropped."""
    scenario = _scenario(app)
    try:
        scenario.click(SPHERE_CENTER_RAS)
        scenario.click(BELOW, positive=False)
        after_second = scenario.target_voxels()
        scenario.negative.RemoveNthControlPoint(0)
        scenario.controller.wait()
        assert [text for text, error in scenario.controller.messages if error] == [controller.DELETED_POINT]
        assert np.allclose(markups.control_points_ras(scenario.negative), [BELOW])
        assert np.array_equal(scenario.target_voxels(), after_second) and scenario.controller.can_undo
        scenario.controller.undo()
        scenario.controller.wait()
        assert scenario.negative.GetNumberOfControlPoints() == 0
        scenario.click(BELOW, positive=False)
        assert np.array_equal(scenario.target_voxels(), after_second)
    finally:
        scenario.controller.cleanup()
