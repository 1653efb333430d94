"""RAS ↔ LPS: the one place the two patient coordinate systems meet.

Slicer's world space is RAS (x to the Right, y Anterior, z Superior); SimpleITK, ITK and DICOM use LPS
(Left, Posterior, Superior). The two differ by the sign of the first two axes, so one map converts
either way.
"""

from typing import Sequence

import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
"""3x3 matrix between RAS and LPS (its own inverse): ``RAS_TO_LPS @ v`` flips a vector or direction columns."""


def ras_to_lps(points: Sequence[float]) -> np.ndarray:
    """RAS mm → LPS mm for a point ``[3]`` or points ``[..., 3]`` (negate the first two coordinates)."""
    values = np.asarray(points, dtype=float)
    if values.shape[-1:] != (3,):
        raise ValueError(f"expected points with 3 coordinates, got shape {values.shape}")
    return values * np.diagonal(RAS_TO_LPS)


lps_to_ras = ras_to_lps
"""LPS mm → RAS mm: the same flip."""
