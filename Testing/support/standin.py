"""A deterministic stand-in for the SAM-Med3D network behind the same ``encode``/``decode`` interface.

It segments by region growing on the normalised crop: the connected region around the positive
clicks whose intensity is closer to the first positive click's than to the crop's background
(median), minus regions holding a negative click. With no positive click it returns the mask prompt.
It counts its calls so tests can check when the engine encodes and decodes.
"""

from typing import List, Optional, Tuple

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

LOGIT = 8.0


class StandInModel:
    """``encode`` keeps the crop as the "embedding"; ``decode`` region-grows from the clicks."""

    def __init__(self) -> None:
        self.encode_calls = 0
        self.decode_calls: List[Tuple[np.ndarray, np.ndarray, Optional[torch.Tensor]]] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode(self, crop: torch.Tensor) -> torch.Tensor:
        assert tuple(crop.shape) == (1, 1, 128, 128, 128), crop.shape
        self.encode_calls += 1
        return crop.clone()

    def decode(
        self, embedding: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_logits: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        assert coords.ndim == 3 and coords.shape[-1] == 3 and labels.shape == coords.shape[:2]
        assert mask_logits is None or tuple(mask_logits.shape) == (1, 1, 32, 32, 32)
        coords_np = coords[0].round().long().numpy()
        labels_np = labels[0].numpy()
        self.decode_calls.append((coords_np, labels_np, None if mask_logits is None else mask_logits.clone()))
        region = grow(embedding[0, 0].numpy(), coords_np, labels_np)
        if region is None:
            low = mask_logits if mask_logits is not None else torch.full((1, 1, 32, 32, 32), -LOGIT)
            return low.clone(), torch.ones(1, 1)
        full = torch.from_numpy(region.astype(np.float32))[None, None] * 2 - 1
        return F.avg_pool3d(full, 4) * LOGIT, torch.ones(1, 1)

    @staticmethod
    def upsample_logits(low: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low, size=(128, 128, 128), mode="trilinear", align_corners=False)


def grow(crop: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> Optional[np.ndarray]:
    """Boolean ``[128]³`` region for the clicks (array-order crop indices), or None without a positive click."""
    inside = [tuple(c) for c in coords if np.all((c >= 0) & (c < 128))]
    positives = [c for c, lab in zip(inside, labels) if lab == 1]
    negatives = [c for c, lab in zip(inside, labels) if lab == 0]
    if not positives:
        return None
    seed = crop[positives[0]]
    # The ROI's zero padding outside the image is the crop's minimum; leave it out of the background.
    background = float(np.median(crop[crop > crop.min()]))
    candidate = np.abs(crop - seed) < np.abs(crop - background)
    components, _ = ndimage.label(candidate)
    keep = {components[c] for c in positives} - {0}
    drop = {components[c] for c in negatives}
    return np.isin(components, sorted(keep - drop))
