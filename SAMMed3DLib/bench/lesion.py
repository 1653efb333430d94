"""A stand-in for a trained network's answer: the real network runs, but its mask is a smooth blob.

Random weights (the benchmarks' and tests' checkpoints) give a ragged mask over most of the ROI: a refinement
flips ~15 % of the voxels of its whole box, the worst case for the paste and for a server's answer, while a
trained model answers an object whose refinement moves its surface by a few mm. :class:`LesionShaped` gives
that realistic answer at the real network's cost (the benchmarks ``bench-session`` and ``bench-server``, and a
server started with ``serve --answer lesion`` for the latter).
"""

from typing import Any, Tuple

import torch

LOW_RES = 32
"""Side of the decoder's low-resolution logits (voxels)."""


class LesionShaped:
    """``model`` (a :class:`~SAMMed3DLib.embeddings.Network`), its decoder logits replaced by a blob centred in
    the ROI: radius 4, 4.5 or 5 low-resolution voxels (24-30 mm in a 1.5 mm ROI), by the number of prompts
    modulo 3, so that each refinement moves the surface by 3 or 6 mm, the same in every process and session."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def device(self) -> Any:
        """The wrapped network's device (the session interpolates there)."""
        return getattr(self.model, "device", None)

    def encode(self, crop: torch.Tensor) -> torch.Tensor:
        return self.model.encode(crop)

    def decode(
        self, embedding: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        logits, iou = self.model.decode(embedding, coords, labels, mask_logits)
        axis = torch.arange(LOW_RES, dtype=torch.float32) - (LOW_RES - 1) / 2
        distance = torch.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
        radius = 4.0 + (int(coords.shape[1]) % 3) * 0.5
        return (radius - distance)[None, None].to(logits), iou
