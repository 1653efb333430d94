"""The network interface the session uses, and a cache of image embeddings shared by the sessions of one image.

Tensors are in ROI index order ``[i, j, k]`` (the ROI's axes: the image's, permuted/flipped towards R, A, S).
"""

from collections import OrderedDict
from typing import Optional, Protocol, Tuple

import torch

from .roi import Roi

EMBEDDING_CACHE = 8
"""ROIs whose image embedding is kept (each is 0.8 MB for the official network)."""


class Network(Protocol):
    """What the session needs of the network (:func:`SAMMed3DLib.load_model`'s result, or a stand-in)."""

    def encode(self, crop: torch.Tensor) -> torch.Tensor:
        """Normalised ROI ``[1, 1, 128, 128, 128]`` (ROI index order) → image embedding."""

    def decode(
        self, embedding: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Prompts (ROI voxel coords ``[1, N, 3]``, labels ``[1, N]``, logits ``[1, 1, 32, 32, 32]``) →
        (low-res logits ``[1, 1, 32, 32, 32]``, IoU prediction)."""


class EmbeddingCache:
    """Image embeddings of the most recent ROIs of one image, shareable by several sessions on it
    (e.g. one session per segment), so that a ROI is encoded once whichever segment asks.

    It is bound to one network: asking with another (a new checkpoint or device) empties it.
    """

    def __init__(self, capacity: int = EMBEDDING_CACHE) -> None:
        self.capacity = capacity
        self._model: Optional[Network] = None
        self._entries: OrderedDict[Roi, torch.Tensor] = OrderedDict()

    def get(self, model: Network, roi: Roi) -> Optional[torch.Tensor]:
        """The embedding ``model`` computed for ``roi``, or None; a different ``model`` empties the cache."""
        if model is not self._model:
            self._model = model
            self._entries.clear()
        embedding = self._entries.get(roi)
        if embedding is not None:
            self._entries.move_to_end(roi)
        return embedding

    def put(self, model: Network, roi: Roi, embedding: torch.Tensor) -> None:
        """Keep ``model``'s embedding of ``roi``, dropping the least recently used beyond ``capacity``."""
        self.get(model, roi)
        self._entries[roi] = embedding
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
