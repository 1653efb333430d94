"""Render the README's screenshots with real Slicer views (Testing/support/views.py), off screen.

    python Resources/Screenshots/render_screenshots.py [--weights PATH_OR_ID] [--out DIR]

The volume is the MNI152 T1 template (1 mm) shipped in nilearn's wheel. The module's controller runs the
clicks: each is placed with the mouse through a slice view's interactor in place mode, the markups widget
turns it into a control point and the module's point observer hands it to the controller, as in Slicer.
Without ``--weights`` the network is the test suite's stand-in (``PhantomModel``: bright voxels near the
positive clicks, none near the negative ones), because the real checkpoints cannot be downloaded where the
pictures are made; with ``--weights`` (a checkpoint file, or a registry id already downloaded with
``python -m SAMMed3DLib download``) the real SAM-Med3D network segments the same clicks. Writes
``SAMMed3D-views.png`` (Slicer's four-up layout: axial, 3-D, sagittal, coronal) into ``--out`` (default:
this folder). A click that fails prints ``error: ...`` and exits with status 2, writing nothing.
"""

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing")]

from support.slicer_scene import build_app_scene  # noqa: E402
from support.views import SliceView, ThreeDView, place_mode  # noqa: E402

from SAMMed3DLib.slicer import markups, mrml  # noqa: E402
from SAMMed3DLib.slicer.controller import Inputs, SegmentationController  # noqa: E402
from SAMMed3DLib.slicer.scenario import PhantomModel, add_volume  # noqa: E402

CLICKS = (  # (RAS mm in MNI space, positive, view that takes the click): white matter of the right hemisphere
    ((26.0, -14.0, 30.0), True, "Red"),
    ((28.0, 12.0, 30.0), True, "Red"),
    ((26.0, -14.0, 52.0), False, "Green"),
)
VIEW_SIZE = 360  # px, each of the four views
SEGMENT = ("White matter (right)", (0.95, 0.6, 0.2))  # name, colour RGB 0..1


def mni_volume(scene):
    """The MNI152 T1 1 mm template as a scalar volume node (intensities 0..1 scaled to 0..1000, int16)."""
    from nilearn.datasets import load_mni152_template

    image = load_mni152_template(resolution=1)
    voxels = np.asarray(image.dataobj, dtype=np.float32) * 1000.0  # (i, j, k) = (R, A, S) axes
    return add_volume(scene, "MNI152 T1", np.ascontiguousarray(voxels.transpose(2, 1, 0)).astype(np.int16),
                      np.asarray(image.affine, float))  # fmt: skip


def module_controller(scene, volume, weights: Optional[str]) -> Tuple[SegmentationController, Inputs]:
    """The controller with the panel's default nodes, entered as the shown module is (it observes the point
    lists: a placed point is a click), on the stand-in or real network."""
    segmentation = mrml.new_segmentation(scene, volume)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", SEGMENT[0], list(SEGMENT[1]))
    positive, negative = (markups.new_point_list(scene, name, colour) for name, colour in markups.POINT_LISTS)
    controller = SegmentationController()
    if weights is None:
        controller.set_options(device="cpu")
        controller.set_model("stand-in", PhantomModel())
    else:
        controller.set_options(device="auto", model=weights)
    inputs = Inputs(volume, segmentation, segment_id, positive, negative)
    controller.set_inputs(inputs)
    controller.enter(scene)
    controller.wait()
    return controller, inputs


def click(view: SliceView, controller, inputs: Inputs, ras: Sequence[float], positive: bool) -> None:
    """Place mode on the green or red list, mouse over ``ras`` in ``view``, click; wait for the segment."""
    place_mode(view.app, inputs.positive if positive else inputs.negative)
    x, y = view.ras_to_xy(ras)
    view.move(x, y)
    view.click(x, y)
    view.leave()
    controller.wait()
    if controller.last_error:
        print(f"error: {controller.last_error}", file=sys.stderr)
        raise SystemExit(2)


def four_up(images: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Slicer's four-up layout from (top-left, top-right, bottom-left, bottom-right) [y-up] pixel arrays."""
    size = images[0].shape[0]
    mosaic = np.zeros((2 * size + gap, 2 * size + gap, 3), np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, 2)
        top = (1 - row) * (size + gap)  # y-up arrays: the top row of the layout has the larger y
        mosaic[top : top + size, column * (size + gap) : column * (size + gap) + size] = image
    return mosaic


def write_png(pixels: np.ndarray, path: Path) -> None:
    """Write y-up RGB pixels as a PNG (top row first)."""
    import vtk
    from vtk.util import numpy_support

    data = vtk.vtkImageData()
    data.SetDimensions(pixels.shape[1], pixels.shape[0], 1)
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(pixels.reshape(-1, 3), deep=True))
    writer = vtk.vtkPNGWriter()
    writer.SetCompressionLevel(9)
    writer.SetInputData(data)
    writer.SetFileName(str(path))
    writer.Write()


def render(weights: Optional[str], out: Path) -> Path:
    app = build_app_scene()
    volume = mni_volume(app.scene)
    controller, inputs = module_controller(app.scene, volume, weights)
    views = {name: SliceView(app, name, (VIEW_SIZE, VIEW_SIZE)) for name in ("Red", "Yellow", "Green")}
    centre = CLICKS[0][0]
    for view in views.values():
        view.show_volume(volume)
        view.jump_to(centre)
    try:
        for ras, positive, name in CLICKS:
            views[name].jump_to(ras)
            click(views[name], controller, inputs, ras, positive)
        for view in views.values():
            view.jump_to(centre)
        inputs.segmentation.CreateClosedSurfaceRepresentation()
        three_d = ThreeDView(app, (VIEW_SIZE, VIEW_SIZE))
        views["Red"].node.SetSliceVisible(True)  # the axial slice in the 3-D view (the slice view's eye toggle)
        three_d.look_at(centre, (0.9, 0.8, 1.1), 330.0)
        images = [views["Red"].pixels(), three_d.pixels(), views["Yellow"].pixels(), views["Green"].pixels()]
        three_d.close()
    finally:
        for view in views.values():
            view.close()
        controller.cleanup()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "SAMMed3D-views.png"
    write_png(four_up(images), path)
    app.close()
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="checkpoint file or registry id (default: the stand-in network)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    args = parser.parse_args(argv)
    print(render(args.weights, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
