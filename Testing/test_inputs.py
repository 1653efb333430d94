"""Input checks (SAMMed3DLib.inputs): images, grids and clicks refused with one clear message."""

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import make_image, sphere_phantom

from SAMMed3DLib import InputError
from SAMMed3DLib import inputs as I
from SAMMed3DLib.roi import Grid


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
