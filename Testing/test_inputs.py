"""Input checks (SAMMed3DLib.inputs): images, grids and clicks refused with one clear message."""

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import make_image, sphere_phantom

from SAMMed3DLib import InputError
from SAMMed3DLib import inputs as I
from SAMMed3DLib.roi import Grid, model_input, roi_for_points


@pytest.mark.parametrize(
    "image, message",
    [
        (sitk.Image([32, 32], sitk.sitkInt16) + 1, "2-D"),
        (sitk.Image([8, 8, 8], sitk.sitkVectorUInt8, 3), "components"),
        (sitk.Image([8, 8, 8, 2], sitk.sitkInt16), "4-D"),
        (sitk.Image([8, 8, 8], sitk.sitkInt16), "empty"),
        (make_image(np.where(np.arange(512).reshape(8, 8, 8) == 7, np.nan, 1.0), pixel_type=np.float32), "NaN"),
        (make_image(np.arange(512).reshape(8, 8, 8), direction=(1, 0, 0, 0, 1e-6, 0, 0, 0, 1)), "degenerate"),
    ],
    ids=["2d", "rgb", "4d", "constant", "nan", "direction"],
)
def test_bad_images_rejected(image, message):
    with pytest.raises(InputError, match=message):
        I.check_image(image)


def test_point_outside_rejected():
    image, _ = sphere_phantom(size=(20, 20, 20))
    grid = Grid.of(image)
    I.check_point_inside(grid, np.array(image.TransformContinuousIndexToPhysicalPoint((-0.4, 0, 19.4))))
    with pytest.raises(InputError, match="outside the image"):
        I.check_point_inside(grid, np.array(image.TransformContinuousIndexToPhysicalPoint((-0.6, 0, 0))))


def test_near_parallel_axes_are_refused():
    """Two axes 0.6° apart: the determinant (0.01) passed the old check; the angle does not."""
    tilt = np.radians(0.6)
    direction = (1, 0, 0, 0, 1, np.sin(np.pi / 2 - tilt), 0, 0, np.cos(np.pi / 2 - tilt))
    with pytest.raises(InputError, match="degenerate"):
        I.check_image(make_image(np.arange(512).reshape(8, 8, 8), direction=direction))


def test_gantry_tilt_shear_is_accepted():
    tilt = np.radians(25.0)
    I.check_image(
        make_image(np.arange(512).reshape(8, 8, 8), direction=(1, 0, 0, 0, 1, np.sin(tilt), 0, 0, np.cos(tilt)))
    )


def test_image_smaller_than_one_model_voxel_is_refused():
    """A header in metres: 20 voxels of 0.001 "mm" are 0.02 mm, less than one 1.5 mm voxel of the model."""
    with pytest.raises(InputError, match=r"less than one 1.5 mm model voxel .*metres"):
        I.check_image(make_image(np.arange(8000).reshape(20, 20, 20), spacing=(0.001, 0.001, 0.001)))
    I.check_image(make_image(np.arange(8000).reshape(20, 20, 20), spacing=(0.1, 0.1, 0.1)))  # 2 mm: usable


def test_float64_values_beyond_float32_are_refused_and_near_1e30_handled_silently():
    values = np.random.default_rng(0).normal(1e30, 1e29, (20, 20, 20))
    image = make_image(values, pixel_type=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in square" would fail here
        I.check_image(image)
        roi = roi_for_points(Grid.of(image), [image.TransformIndexToPhysicalPoint((10, 10, 10))])
        normalised = model_input(image, roi)
    inside = normalised[normalised != normalised[0, 0, 0]]
    assert np.isfinite(normalised).all() and abs(float(inside.std()) - 1.0) < 0.1
    with pytest.raises(InputError, match="beyond float32 range"):
        I.check_image(make_image(values * 1e10, pixel_type=np.float64))


@pytest.mark.parametrize(
    "values, message",
    [
        (np.where(np.arange(512).reshape(8, 8, 8) > 300, 0.5, 0.0), r"non-integer values \(e.g. 0.5\)"),
        (np.where(np.arange(512).reshape(8, 8, 8) == 3, np.nan, 1.0), "NaN or infinite"),
        (np.where(np.arange(512).reshape(8, 8, 8) == 3, np.inf, 1.0), "NaN or infinite"),
        (np.zeros((8, 8, 8)), "no labelled voxels"),
    ],
    ids=["fractional", "nan", "inf", "empty"],
)
def test_bad_label_maps_are_refused(values, message):
    image = make_image(np.arange(512).reshape(8, 8, 8))
    with pytest.raises(InputError, match=message):
        I.check_label_map(make_image(values, pixel_type=np.float32), image, "the label map")


def test_float_label_map_with_whole_values_is_accepted():
    image = make_image(np.arange(512).reshape(8, 8, 8))
    values = make_image(np.arange(512).reshape(8, 8, 8) % 3, pixel_type=np.float32)
    labels, found = I.check_label_map(values, image, "x")
    assert found == [1, 2] and labels.shape == (8, 8, 8)


def test_intensity_image_as_label_map_is_refused():
    """Also: the image given as its own label map evaluated thousands of "labels"."""
    image = make_image(np.arange(4096).reshape(16, 16, 16))
    with pytest.raises(InputError, match=r"has 4095 different values; a label map has at most 1000 \(is it an image"):
        I.check_label_map(image, image, "the label map")
