"""Auto-extension's geometry: which faces of a ROI the predicted object reaches, and where on such a face the
neighbouring ROI's seed points lie. ROI voxel order (i, j, k); points LPS mm."""

from typing import List, Tuple

import numpy as np

from .modeling import IMAGE_SIZE
from .roi import Roi

EXTEND_SHIFT = 96
"""ROI voxels between neighbouring ROIs of an auto-extension (overlap 32 voxels = 48 mm)."""
EXTEND_SLAB = 8
"""Depth, in ROI voxels, of the band at a face from which extension seeds are taken."""


def touching_faces(roi: Roi, logits: np.ndarray) -> List[Tuple[int, int]]:
    """(axis, side) of ROI faces that the mask reaches, leaving out faces at the image boundary."""
    faces = []
    for axis in range(3):
        for side, edge, open_ in (
            (0, roi.valid_lo[axis], roi.valid_lo[axis] == 0),
            (1, roi.valid_hi[axis] - 1, roi.valid_hi[axis] == IMAGE_SIZE),
        ):
            if open_ and bool((np.take(logits, edge, axis=axis) > 0).any()):
                faces.append((axis, side))
    return faces


def face_seeds(roi: Roi, logits: np.ndarray, axis: int, side: int, count: int = 3) -> List[np.ndarray]:
    """Up to ``count`` LPS points of the mask in the band next to a face, nearest the band's centroid first."""
    band = slice(IMAGE_SIZE - EXTEND_SLAB, IMAGE_SIZE) if side else slice(0, EXTEND_SLAB)
    index = [slice(None)] * 3
    index[axis] = band
    voxels = np.argwhere(logits[tuple(index)] > 0)
    if len(voxels) == 0:
        return []
    voxels[:, axis] += band.start
    order = np.argsort(np.linalg.norm(voxels - voxels.mean(axis=0), axis=1), kind="stable")
    picks = voxels[order[:: max(1, len(order) // count)][:count]]
    return [roi.grid.to_physical(v.astype(float)) for v in picks]
