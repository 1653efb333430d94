"""Audit defects of issue 9 on real MRML (slicer-core), each with a test that failed on the old code."""

import numpy as np

from SAMMed3DLib.slicer import mrml
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, PhantomModel, Scenario

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
