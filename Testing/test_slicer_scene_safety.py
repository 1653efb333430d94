"""A failed click changes nothing in the scene — not even the segmentation's set-up — and never downloads.

``scene_fingerprint`` must see everything a click may change: voxels, the source representation, conversion
parameters (reference geometry) and which segments share a labelmap layer.
"""

import hashlib
import json

import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.slicer_scene import expect_one_error

from SAMMed3DLib.slicer import mrml
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, PhantomModel, Scenario, scene_fingerprint, sphere_volume

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop


def _fresh_segmentation(scene, names=("A", "B")):
    """A segmentation as a user makes one in the Segment Editor: never prepared, empty segments in one layer."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Fresh")
    node.CreateDefaultDisplayNodes()
    ids = [node.GetSegmentation().AddEmptySegment(name) for name in names]
    return node, ids


def test_fingerprint_sees_preparation_and_layer_separation(app):
    volume = sphere_volume(app.scene)
    node, (a, _) = _fresh_segmentation(app.scene)
    segmentation = node.GetSegmentation()
    before = scene_fingerprint(app.scene)
    mrml.prepare_segmentation(node, mrml.volume_geometry(volume))
    prepared = scene_fingerprint(app.scene)
    assert prepared != before, "setting the reference geometry went unnoticed"
    assert segmentation.GetNumberOfLayers() == 1
    segmentation.SeparateSegmentLabelmap(a)
    assert segmentation.GetNumberOfLayers() == 2
    assert scene_fingerprint(app.scene) != prepared, "separating a shared layer went unnoticed"


def test_bad_clicks_leave_a_fresh_segmentation_as_it_was(app):
    scenario = Scenario(app.scene, model=PhantomModel())
    node, (a, _) = _fresh_segmentation(app.scene)
    scenario.select(scenario.volume, node, a)
    expect_one_error(scenario, "outside the image volume", lambda: scenario.click((500.0, 0.0, 0.0)))
    scenario.select(scenario.volume, node, "")
    expect_one_error(scenario, "select a segment", lambda: scenario.click(SPHERE_CENTER_RAS))
    scenario.select(scenario.volume, node, a)  # and a good click then prepares it and works
    count = len(scenario.controller.messages)
    scenario.click(SPHERE_CENTER_RAS)
    assert scenario.controller.messages[count:] == []
    assert mrml.read_segment(node, a, scenario.geometry, scenario.geometry.full_region()).any()
    scenario.controller.cleanup()


def test_a_click_never_downloads_over_a_damaged_cached_model(app, tmp_path, srv, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    url = srv.add("/tiny.pth", data)  # the registry's source: a local server that logs every request
    entry = {
        "id": "tiny", "name": "Tiny", "description": "test", "filename": "tiny.pth", "urls": [url],
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "license": "Apache-2.0", "citation": "-",
    }  # fmt: skip
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"version": 1, "models": [entry]}))
    cached = tmp_path / "cache" / "checkpoints" / "tiny.pth"
    cached.parent.mkdir(parents=True)
    middle = len(data) // 2  # inside the tensor records: the archive's directory stays intact
    damaged = data[:middle] + bytes(1000) + data[middle + 1000 :]  # right size, wrong bytes: only the hash tells
    cached.write_bytes(damaged)
    scenario = Scenario(app.scene)
    scenario.controller.set_options(model="tiny", registry=str(registry), cache_dir=str(tmp_path / "cache"))
    node, (a, _) = _fresh_segmentation(app.scene)
    scenario.select(scenario.volume, node, a)
    text = expect_one_error(scenario, "press download", lambda: scenario.click(SPHERE_CENTER_RAS))
    assert "damaged" in text and "SHA-256" in text
    assert srv.hits == [], "a click went to the network"
    assert cached.read_bytes() == damaged, "a click deleted the cached file"
    scenario.controller.cleanup()
