"""The off-screen Slicer views themselves (Testing/support/views.py): the markups widget's preview and defined
points under real mouse events, place mode, the rendered slice and segment colours, and the render time.

The module's end-to-end behaviour in these views: test_slicer_views.py.
"""

import statistics

import numpy as np
import pytest
from support.views import SliceView, ThreeDView, defined_points, place_mode, preview_points, tinted

from SAMMed3DLib.slicer.scenario import (
    NEIGHBOUR_OFFSET_RAS,
    SPHERE_CENTER_RAS,
    point_lists,
    segmentation_with_neighbour,
    sphere_volume,
)


@pytest.fixture
def scene(app):
    """The phantom volume, its segmentation (a yellow neighbour, an empty target) and the point lists."""
    volume = sphere_volume(app.scene)
    segmentation, target, neighbour = segmentation_with_neighbour(app.scene, volume)
    positive, negative = point_lists(app.scene)
    return app, volume, segmentation, positive, negative


@pytest.fixture
def red(scene):
    """The axial slice view through the sphere centre, 400×400."""
    app, volume = scene[:2]
    view = SliceView(app, "Red")
    view.show_volume(volume)
    view.jump_to(SPHERE_CENTER_RAS)
    yield view
    view.close()


def test_moving_the_mouse_in_place_mode_creates_one_preview_point_under_the_cursor(scene, red):
    app, positive = scene[0], scene[3]
    place_mode(app, positive)
    x, y = red.ras_to_xy(SPHERE_CENTER_RAS)
    for dx in (0, 15, 30):  # the widget moves its one preview point with the mouse
        red.move(x + dx, y)
        assert positive.GetNumberOfControlPoints() == 1 and preview_points(positive) == 1
        position = [0.0, 0.0, 0.0]
        positive.GetNthControlPointPositionWorld(0, position)
        assert np.allclose(position, red.xy_to_ras(round(x + dx), round(y)), atol=1e-6)
        assert position[2] == pytest.approx(SPHERE_CENTER_RAS[2]), "the point is not on the axial slice"
    assert defined_points(positive) == []


def test_a_click_turns_the_preview_point_defined_once(scene, red):
    app, positive = scene[0], scene[3]
    defined_events = []
    positive.AddObserver(positive.PointPositionDefinedEvent, lambda caller, event: defined_events.append(event))
    place_mode(app, positive)
    x, y = red.ras_to_xy(SPHERE_CENTER_RAS)
    red.click(x, y)
    assert len(defined_events) == 1 and preview_points(positive) == 0
    assert np.allclose(defined_points(positive), [red.xy_to_ras(round(x), round(y))], atol=1e-6)
    red.move(x + 20, y)  # persistent place mode: the next preview appears after the defined point
    assert preview_points(positive) == 1 and len(defined_points(positive)) == 1
    assert positive.GetNthControlPointPositionStatus(1) == positive.PositionPreview


def test_leaving_the_view_removes_the_preview_and_keeps_defined_points(scene, red):
    app, positive = scene[0], scene[3]
    place_mode(app, positive)
    x, y = red.ras_to_xy(SPHERE_CENTER_RAS)
    red.click(x, y)
    red.move(x + 20, y)
    red.leave()
    assert positive.GetNumberOfControlPoints() == 1 and preview_points(positive) == 0


def test_a_right_click_leaves_place_mode_and_a_click_then_places_nothing(scene, red):
    app, positive = scene[0], scene[3]
    interaction = app.app_logic.GetInteractionNode()
    place_mode(app, positive)
    x, y = red.ras_to_xy(SPHERE_CENTER_RAS)
    red.move(x, y)
    red.click(x, y, "Right")
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform
    assert positive.GetNumberOfControlPoints() == 0
    red.click(x + 10, y)
    assert positive.GetNumberOfControlPoints() == 0


def test_the_slice_image_and_a_segment_are_rendered_in_their_colours(scene, red):
    segmentation = scene[2]
    neighbour_centre = np.add(SPHERE_CENTER_RAS, NEIGHBOUR_OFFSET_RAS)
    red.jump_to(neighbour_centre)
    pixels = red.pixels()
    assert pixels.shape == (400, 400, 3)
    x, y = (int(round(v)) for v in red.ras_to_xy(neighbour_centre))
    colour = segmentation.GetSegmentation().GetSegment("Neighbour").GetColor()
    around = tinted(pixels[y - 5 : y + 6, x - 5 : x + 6], colour)
    assert around.mean() > 0.9, "the neighbour segment is not drawn in its colour at its centre"
    far_x, far_y = (int(round(v)) for v in red.ras_to_xy(np.subtract(SPHERE_CENTER_RAS, NEIGHBOUR_OFFSET_RAS)))
    assert not tinted(pixels[far_y - 5 : far_y + 6, far_x - 5 : far_x + 6], colour).any()
    assert pixels[far_y, far_x].min() > 200 and (pixels[far_y, far_x] == pixels[far_y, far_x, 0]).all()  # grey
    segmentation.GetDisplayNode().SetVisibility(False)
    hidden = red.pixels()
    assert not tinted(hidden, colour).any(), "the segment is drawn while hidden"
    fill = segmentation.GetDisplayNode().GetOpacity2DFill()  # the fill blends with the slice image under it
    expected = fill * np.multiply(colour, 255.0) + (1 - fill) * hidden[y, x]
    assert np.allclose(pixels[y, x], expected, atol=3), (pixels[y, x], expected)


def test_keys_over_the_view_reach_its_widgets(red):
    red.move(*red.ras_to_xy(SPHERE_CENTER_RAS))
    offset = red.node.GetSliceOffset()
    red.key("f")  # Slicer's slice-view key: next slice
    step = red.node.GetSliceOffset() - offset
    assert 0.5 < step < 3.0, step  # one slice of the oblique 0.9 × 1.1 × 2.2 mm phantom
    red.key("b")
    assert red.node.GetSliceOffset() == pytest.approx(offset)


def test_a_400_px_slice_view_renders_in_tens_of_milliseconds(scene, red):
    red.render()
    times = []
    for step in range(12):  # a new slice position each time: the slice logic reslices, the managers update
        red.node.SetSliceOffset(SPHERE_CENTER_RAS[2] + step)
        times.append(red.render())
    median = statistics.median(times)
    print(f"400x400 slice view render: median {1000 * median:.1f} ms, max {1000 * max(times):.1f} ms")
    assert median < 0.1


def test_the_three_d_view_renders_a_segment_surface(scene):
    app, segmentation = scene[0], scene[2]
    segmentation.CreateClosedSurfaceRepresentation()
    view = ThreeDView(app)
    try:
        view.look_at(SPHERE_CENTER_RAS, (0.0, 1.0, 0.0), 300.0)
        colour = segmentation.GetSegmentation().GetSegment("Neighbour").GetColor()
        assert tinted(view.pixels(), colour, strength=0.5).sum() > 200
    finally:
        view.close()


def test_the_readme_screenshot_script_renders_its_clicks(tmp_path):
    """Resources/Screenshots/render_screenshots.py end to end (stand-in network): it must keep working as the
    module changes (it once called a controller method that no longer existed)."""
    import importlib.util
    from pathlib import Path

    import SimpleITK as sitk

    script = Path(__file__).resolve().parents[1] / "Resources" / "Screenshots" / "render_screenshots.py"
    spec = importlib.util.spec_from_file_location("render_screenshots", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.render(None, tmp_path)
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert pixels.shape[:2] == (2 * module.VIEW_SIZE + 2, 2 * module.VIEW_SIZE + 2)
    assert tinted(pixels, module.SEGMENT[1]).sum() > 1000  # the segment is drawn in its colour
