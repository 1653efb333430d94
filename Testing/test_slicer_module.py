"""The Slicer module's logic on real MRML (slicer-core): clicks → segment, protection, undo/redo, bad inputs.

Every scene is built as the application builds its own (Testing/slicer_scene.py). The scenario functions are
the ones ``SAMMed3DTest`` runs inside Slicer (SAMMed3DLib/slicer/scenario.py). Queued clicks and the undo limit:
test_slicer_history.py; failed clicks that must leave the scene as it was: test_slicer_scene_safety.py.
"""

import numpy as np
import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.slicer_scene import expect_one_error

from SAMMed3DLib.slicer import mrml
from SAMMed3DLib.slicer.controller import Inputs
from SAMMed3DLib.slicer.scenario import (
    SPHERE_CENTER_RAS,
    PhantomModel,
    Scenario,
    add_volume,
    oblique_ijk_to_ras,
    scene_fingerprint,
)
from SAMMed3DLib.slicer.scenario import (
    tiny_checkpoint as write_tiny_checkpoint,
)

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop


@pytest.fixture
def scenario(app):
    scenario = Scenario(app.scene, model=PhantomModel())
    yield scenario
    scenario.controller.cleanup()


def test_click_lands_on_the_object_and_protects_the_neighbour(scenario):
    scenario.check_clicks_land_and_neighbour_is_untouched()
    assert "CPU" in scenario.controller.status


def test_negative_click_undo_redo_reset_restore_exactly(scenario):
    scenario.check_clicks_land_and_neighbour_is_untouched()
    scenario.check_negative_click_and_undo_redo()


def test_second_volume_and_coming_back(scenario):
    scenario.check_clicks_land_and_neighbour_is_untouched()
    first = scenario.target_voxels()
    scenario.check_second_volume()
    # Back on the first volume: its clicks are shown again and undo still works on its own history.
    assert scenario.positive.GetNumberOfControlPoints() == 1
    scenario.controller.undo()
    scenario.controller.wait()
    assert first.any() and not scenario.target_voxels().any()


def test_protect_off_overlaps_but_still_never_changes_the_neighbour(scenario):
    scenario.controller.set_options(protect_others=False)
    before = scenario.neighbour_digest()
    scenario.click(SPHERE_CENTER_RAS)
    neighbour = mrml.read_segment(
        scenario.segmentation, scenario.neighbour, scenario.geometry, scenario.geometry.full_region()
    )
    assert (scenario.target_voxels() & neighbour).any()
    assert scenario.neighbour_digest() == before


def test_start_from_existing_segment_refines_it(scenario):
    scenario.check_clicks_land_and_neighbour_is_untouched()
    scenario.controller.finish()
    scenario.controller.wait()
    kept = scenario.target_voxels()
    assert kept.any() and scenario.positive.GetNumberOfControlPoints() == 0
    scenario.controller.set_options(start_from_existing=True)
    scenario.click(np.add(SPHERE_CENTER_RAS, (0.0, 0.0, -16.0)), positive=False)
    assert_refined(scenario, kept, scenario.target_voxels())


def assert_refined(scenario, kept: np.ndarray, after: np.ndarray) -> None:
    """A negative click 16 mm below the centre refined ``kept``: smaller, same object, the clicked voxel gone."""
    negative = np.add(SPHERE_CENTER_RAS, (0.0, 0.0, -16.0))
    i, j, k = np.round(np.linalg.solve(scenario.geometry.ijk_to_ras, [*negative, 1.0])[:3]).astype(int)
    assert after.any() and after.sum() < kept.sum()
    assert (after & ~kept).sum() < 0.1 * kept.sum(), "the refined mask is not the kept object"
    assert kept[k, j, i] and not after[k, j, i]


def _select_volume(scenario, volume):
    scenario.controller.set_inputs(
        Inputs(volume, scenario.segmentation, scenario.target, scenario.positive, scenario.negative)
    )
    scenario.controller.wait()


def test_no_volume(scenario):
    _select_volume(scenario, None)
    expect_one_error(scenario, "select an input volume", lambda: scenario.click(SPHERE_CENTER_RAS))


def test_2d_volume(scenario):
    flat = add_volume(
        scenario.scene, "Slice", np.full((1, 40, 40), 100, np.int16), oblique_ijk_to_ras((1, 1, 1), 0, (0, 0, 0))
    )
    _select_volume(scenario, flat)
    expect_one_error(scenario, "2-D", lambda: scenario.click((0.0, 0.0, 0.0)))


def test_rgb_volume(scenario):
    rgb = add_volume(scenario.scene, "Photo", np.zeros((8, 40, 40, 3), np.uint8), np.eye(4), components=3)
    _select_volume(scenario, rgb)
    expect_one_error(scenario, "RGB", lambda: scenario.click((5.0, 5.0, 5.0)))


def test_point_outside_the_volume(scenario):
    expect_one_error(scenario, "outside the image volume", lambda: scenario.click((500.0, 0.0, 0.0)))


def test_volume_under_a_transform_needs_hardening(scenario):
    transform = scenario.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    scenario.volume.SetAndObserveTransformNodeID(transform.GetID())
    expect_one_error(scenario, "transform", lambda: scenario.click(SPHERE_CENTER_RAS))
    scenario.controller.set_options(harden_transforms=True)
    count = len(scenario.controller.messages)
    scenario.click(SPHERE_CENTER_RAS)
    assert scenario.controller.messages[count:] == [] and scenario.target_voxels().any()


def test_segmentation_on_another_grid(scenario, app):
    other = add_volume(app.scene, "Other", np.full((10, 10, 10), 5, np.int16), np.diag([3.0, 3.0, 3.0, 1.0]))
    scenario.check_clicks_land_and_neighbour_is_untouched()
    _select_volume(scenario, other)
    expect_one_error(scenario, "different image grid", lambda: scenario.click((9.0, 9.0, 9.0)))


def test_no_weights(app, tmp_path):
    scenario = Scenario(app.scene)
    scenario.controller.set_options(model="sam-med3d-turbo", cache_dir=str(tmp_path / "empty-cache"))
    expect_one_error(scenario, "press download", lambda: scenario.click(SPHERE_CENTER_RAS))
    scenario.controller.set_options(model=str(tmp_path / "missing.pth"))
    expect_one_error(scenario, "not found", lambda: scenario.click(SPHERE_CENTER_RAS))


def test_cancelled_download_changes_nothing(app, tmp_path, tiny_checkpoint):
    registry = tmp_path / "registry.json"
    entry = {
        "id": "tiny", "name": "Tiny", "description": "test", "filename": "tiny.pth",
        "urls": [tiny_checkpoint.as_uri()], "size": None, "sha256": None, "license": "Apache-2.0", "citation": "-",
    }  # fmt: skip
    registry.write_text(__import__("json").dumps({"version": 1, "models": [entry]}))
    scenario = Scenario(app.scene)
    scenario.controller.set_options(model="tiny", registry=str(registry), cache_dir=str(tmp_path / "cache"))
    before = scene_fingerprint(app.scene)
    progress = scenario.controller.download()
    progress.cancel()
    scenario.controller.wait()
    assert "cancel" in scenario.controller.last_error.lower()
    assert not (tmp_path / "cache" / "checkpoints" / "tiny.pth").exists()
    assert scene_fingerprint(app.scene) == before
    scenario.controller.download()  # the same download, not cancelled, then a click works
    scenario.controller.wait()
    scenario.click(SPHERE_CENTER_RAS)
    assert (
        "Model ready: " + str(tmp_path / "cache" / "checkpoints" / "tiny.pth"),
        False,
    ) in scenario.controller.messages
    assert scenario.controller.target().clicks()


def test_cuda_without_gpu_falls_back_to_cpu_with_a_message(app, tiny_checkpoint):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the fallback cannot happen here")
    scenario = Scenario(app.scene, checkpoint=tiny_checkpoint)
    scenario.controller.set_options(device="cuda")
    scenario.click(SPHERE_CENTER_RAS)
    warnings = [text for text, is_error in scenario.controller.messages if not is_error]
    assert any("CUDA is not available" in text for text in warnings), scenario.controller.messages
    assert scenario.controller.last_error is None
    assert scenario.controller.status.endswith("CPU")


def test_real_network_end_to_end(app, tmp_path):
    """The real SAM-Med3D architecture (tiny random weights) through load_model, the worker and MRML."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pth")
    scenario = Scenario(app.scene, checkpoint=checkpoint)
    neighbour = scenario.neighbour_digest()
    scenario.click(SPHERE_CENTER_RAS)
    assert scenario.controller.last_error is None, scenario.controller.last_error
    target, step = scenario.controller.target(), scenario.controller.last_step
    assert step.encoded and len(target.clicks()) == 1
    # Nothing holds a step's mask: the session's next write needs no copy of the volume.
    assert step.mask is None and target.session._mask.IsUnique()
    edit = step.payload.edit
    if edit is not None:  # random weights may predict nothing; when they predict, only the region changed
        voxels = scenario.target_voxels()
        (x, y, z), (sx, sy, sz) = edit.region
        outside = voxels.copy()
        outside[z : z + sz, y : y + sy, x : x + sx] = False
        assert not outside.any()
    assert scenario.neighbour_digest() == neighbour
    assert "encoded" in scenario.controller.status


def test_non_linear_transform_is_refused_even_with_hardening(scenario):
    import vtk

    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in ((0, 0, 0), (50, 0, 0), (0, 50, 0), (0, 0, 50)):
        source.InsertNextPoint(point)
        target.InsertNextPoint(point[0] + 2, point[1], point[2] + 1)
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    transform = scenario.scene.AddNewNodeByClass("vtkMRMLTransformNode")
    transform.SetAndObserveTransformToParent(warp)
    scenario.volume.SetAndObserveTransformNodeID(transform.GetID())
    scenario.controller.set_options(harden_transforms=True)
    expect_one_error(scenario, "non-linear", lambda: scenario.click(SPHERE_CENTER_RAS))


def test_changing_the_device_keeps_the_segment_and_continues_from_it(scenario):
    scenario.check_clicks_land_and_neighbour_is_untouched()
    kept = scenario.target_voxels()
    scenario.controller.set_model("phantom", PhantomModel())  # same name, other device: a new session
    scenario.controller.set_options(device="auto")
    scenario.controller.set_model("phantom", PhantomModel())
    scenario.controller.wait()
    assert scenario.positive.GetNumberOfControlPoints() == 0 and np.array_equal(scenario.target_voxels(), kept)
    scenario.click(np.add(SPHERE_CENTER_RAS, (0.0, 0.0, -16.0)), positive=False)
    assert_refined(scenario, kept, scenario.target_voxels())


def test_volume_to_sitk_keeps_the_oblique_anisotropic_geometry(scenario):
    image = mrml.read_volume(scenario.volume)[0]
    matrix = scenario.geometry.ijk_to_ras
    assert image.GetSize() == scenario.geometry.dims
    assert np.allclose(image.GetSpacing(), scenario.volume.GetSpacing())
    for index in ((0, 0, 0), (7, 50, 3), (71, 63, 35)):
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        assert np.allclose(lps * (-1, -1, 1), (matrix @ [*index, 1.0])[:3])
    voxels = mrml._voxels(scenario.volume.GetImageData())
    assert image[10, 20, 30] == voxels[30, 20, 10]


def test_reference_geometry_is_taken_from_the_volume(scenario):
    segmentation = scenario.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segment_id = segmentation.GetSegmentation().AddEmptySegment("S")
    scenario.select(scenario.volume, segmentation, segment_id)
    scenario.click(SPHERE_CENTER_RAS)
    parameter = segmentation.GetSegmentation().GetConversionParameter(mrml._GEOMETRY_PARAMETER)
    assert mrml._same_geometry(parameter, scenario.geometry)
    assert mrml.read_segment(segmentation, segment_id, scenario.geometry, scenario.geometry.full_region()).any()


def test_points_are_read_in_world_coordinates(scenario):
    shift = scenario.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = shift.GetMatrixTransformToParent()
    matrix.SetElement(0, 3, 100.0)
    shift.SetMatrixTransformToParent(matrix)
    scenario.positive.SetAndObserveTransformNodeID(shift.GetID())
    local = np.subtract(SPHERE_CENTER_RAS, (100.0, 0.0, 0.0))
    scenario.positive.AddControlPoint(*local)  # local coordinates; world = the sphere centre
    scenario.controller.wait()
    assert scenario.controller.last_error is None
    assert scenario.controller.target().clicks()[0][0] == pytest.approx(SPHERE_CENTER_RAS)


def test_a_second_segment_of_the_same_volume_reuses_the_embedding(scenario):
    scenario.click(SPHERE_CENTER_RAS)
    assert scenario.controller.last_step.encoded
    other = scenario.segmentation.GetSegmentation().AddEmptySegment("Second")
    scenario.select(scenario.volume, scenario.segmentation, other)
    scenario.click(SPHERE_CENTER_RAS)
    session = scenario.controller.target().session
    assert len(session.clicks) == 1 and not scenario.controller.last_step.encoded
