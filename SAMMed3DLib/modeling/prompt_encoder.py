"""Prompt encoder of SAM-Med3D: click points and a low-resolution mask → sparse and dense embeddings.

Point coordinates are voxel indices of the 128³ crop in its array order ``(x0, x1, x2)`` (the order
``torch.argwhere`` returns on the crop tensor), as floats; labels are 1 (positive), 0 (negative) or
-1 (padding, ignored).
"""

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .common import LayerNorm3d


class PositionEmbeddingRandom3D(nn.Module):
    """Fourier features of 3-D positions with a fixed random projection."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(3, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """``[..., 3]`` positions in ``[0, 1]`` → ``[..., 3 * num_pos_feats]`` features."""
        phase = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        sin = torch.sin(phase)
        # The trained layout is (sin, cos, sin): three blocks to reach a 384-wide embedding.
        return torch.cat([sin, torch.cos(phase), sin], dim=-1)

    def dense(self, size: Tuple[int, int, int]) -> torch.Tensor:
        """Encoding of every cell centre of a grid → ``[C, X, Y, Z]``.

        The reference puts the second grid axis in the first feature slot and the first in the
        second; the decoder was trained with that, so it stays.
        """
        device = self.positional_encoding_gaussian_matrix.device
        centres = [torch.arange(n, device=device, dtype=torch.float32) + 0.5 for n in size]
        c0, c1, c2 = torch.meshgrid(*centres, indexing="ij")
        coords = torch.stack([c1 / size[0], c0 / size[1], c2 / size[2]], dim=-1)
        return self.encode(coords).permute(3, 0, 1, 2)

    def points(self, coords: torch.Tensor, image_size: Tuple[int, int, int]) -> torch.Tensor:
        """Voxel coordinates ``[B, N, 3]`` inside a volume of ``image_size`` → ``[B, N, C]``."""
        scale = torch.tensor(image_size, dtype=torch.float32, device=coords.device)
        return self.encode(coords.to(torch.float32) / scale)


class PromptEncoder3D(nn.Module):
    """Embeds points (sparse) and an optional ``[B, 1, 32, 32, 32]`` mask of logits (dense)."""

    def __init__(
        self,
        embed_dim: int = 384,
        image_embedding_size: Tuple[int, int, int] = (8, 8, 8),
        input_image_size: Tuple[int, int, int] = (128, 128, 128),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_input_size = tuple(4 * s for s in image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom3D(embed_dim // 3)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(2))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv3d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv3d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans),
            nn.GELU(),
            nn.Conv3d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: Optional[torch.Tensor] = None
        self._dense_pe_key: Optional[tuple] = None

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, ``[1, C, 8, 8, 8]``.

        It depends only on the random projection, so it is computed once per version of that buffer
        (every refinement click needs it).
        """
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        key = (id(matrix), matrix._version, matrix.device, torch.is_inference_mode_enabled())
        if self._dense_pe_key != key:
            self._dense_pe = self.pe_layer.dense(self.image_embedding_size).unsqueeze(0)
            self._dense_pe_key = key
        return self._dense_pe

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        batch = coords.shape[0]
        # Voxel indices name cell corners; the +0.5 moves them to cell centres. A padding point
        # (label -1) ends the sequence, as during training.
        coords = torch.cat([coords.to(torch.float32) + 0.5, coords.new_zeros(batch, 1, 3, dtype=torch.float32)], 1)
        labels = torch.cat([labels, labels.new_full((batch, 1), -1)], dim=1)
        emb = self.pe_layer.points(coords, self.input_image_size)
        label = labels[..., None]
        emb = torch.where(label == -1, self.not_a_point_embed.weight, emb)
        emb = emb + torch.where(label == 0, self.point_embeddings[0].weight, 0.0)
        return emb + torch.where(label == 1, self.point_embeddings[1].weight, 0.0)

    def _check(self, points: Optional[Tuple[torch.Tensor, torch.Tensor]], masks: Optional[torch.Tensor]) -> None:
        if points is not None:
            coords, labels = points
            if coords.ndim != 3 or coords.shape[-1] != 3 or labels.shape != coords.shape[:2]:
                raise ValueError(
                    "points must be (coords [B, N, 3], labels [B, N]); "
                    f"got {list(coords.shape)} and {list(labels.shape)}"
                )
            if not bool(((labels == -1) | (labels == 0) | (labels == 1)).all()):
                raise ValueError("point labels must be 1 (positive), 0 (negative) or -1 (padding)")
        if masks is not None and (masks.ndim != 5 or tuple(masks.shape[1:]) != (1, *self.mask_input_size)):
            raise ValueError(
                f"mask prompt must be [B, 1, {', '.join(map(str, self.mask_input_size))}], got {list(masks.shape)}"
            )

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """→ (sparse ``[B, N+1, C]``, dense ``[B, C, 8, 8, 8]``). Boxes are not part of SAM-Med3D."""
        if boxes is not None:
            raise ValueError("SAM-Med3D takes no box prompts; pass boxes=None")
        self._check(points, masks)
        if points is not None:
            batch = points[0].shape[0]
        else:
            batch = masks.shape[0] if masks is not None else 1
        weight = self.no_mask_embed.weight
        if points is not None:
            sparse = self._embed_points(points[0].to(weight.device), points[1].to(weight.device))
        else:
            sparse = weight.new_empty(batch, 0, self.embed_dim)
        if masks is not None:
            dense = self.mask_downscaling(masks.to(weight))
        else:
            dense = weight.reshape(1, -1, 1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return sparse, dense
