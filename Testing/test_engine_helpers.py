"""The engine's one Dice and its one RAS ↔ LPS flip."""

import numpy as np
import pytest
import SimpleITK as sitk

from SAMMed3DLib.coordinates import RAS_TO_LPS, lps_to_ras, ras_to_lps
from SAMMed3DLib.metrics import dice


def test_dice():
    a = np.zeros((4, 5, 6), bool)
    b = a.copy()
    assert dice(a, b) == 1.0  # both empty: nothing to miss
    a[1, 1:3, 2] = True  # 2 voxels
    b[1, 2:5, 2] = 7  # 3 voxels, non-zero = inside; 1 shared
    assert dice(a, b) == pytest.approx(2 * 1 / (2 + 3)) and dice(b, a) == dice(a, b)
    assert dice(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        dice(a, a[:3])


def test_ras_lps_flip_matches_simpleitk_and_slicer():
    """SimpleITK's physical space is LPS: an identity-direction image's +x axis points Left, i.e. −R."""
    image = sitk.Image([4, 4, 4], sitk.sitkUInt8)
    lps = np.array(image.TransformContinuousIndexToPhysicalPoint((2.0, 3.0, 1.0)))
    assert np.array_equal(lps_to_ras(lps), [-2.0, -3.0, 1.0])
    points = np.arange(12.0).reshape(2, 2, 3)
    assert np.array_equal(ras_to_lps(lps_to_ras(points)), points)  # its own inverse, any leading shape
    assert np.array_equal(RAS_TO_LPS @ points[0, 0], ras_to_lps(points[0, 0]))
    with pytest.raises(ValueError, match="3 coordinates"):
        ras_to_lps([1.0, 2.0])
