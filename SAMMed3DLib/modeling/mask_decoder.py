"""Mask decoder of SAM-Med3D: image embedding + prompt embeddings → 32³ mask logits and IoU estimates."""

from typing import Tuple

import torch
from torch import nn

from .common import MLP, LayerNorm3d
from .transformer import TwoWayTransformer3D


class MaskDecoder3D(nn.Module):
    """Predicts ``num_multimask_outputs + 1`` masks; the first is the single-mask output used interactively."""

    def __init__(
        self,
        transformer_dim: int = 384,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        mlp_dim: int = 2048,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = TwoWayTransformer3D(depth=2, embedding_dim=transformer_dim, num_heads=8, mlp_dim=mlp_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm3d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose3d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """→ (logits ``[B, K, 32, 32, 32]``, IoU ``[B, K]``) with K = 1, or 3 when ``multimask_output``."""
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, keep=keep
        )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        keep: slice = slice(None),
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The masks and IoU estimates of the mask tokens ``keep`` selects (default: all ``K + 1``)."""
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)
        # One image embedding may serve a batch of prompt sets.
        src = image_embeddings.expand(batch, -1, -1, -1, -1) if image_embeddings.shape[0] == 1 else image_embeddings
        src = src + dense_prompt_embeddings
        pos = image_pe.expand(batch, -1, -1, -1, -1) if image_pe.shape[0] == 1 else image_pe
        grid = src.shape[2:]
        hs, src = self.transformer(src, pos, tokens)
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]
        upscaled = self._upscale(src.reshape(batch, *grid, -1))
        mlps = list(self.output_hypernetworks_mlps)[keep]
        first = range(self.num_mask_tokens)[keep].start
        hyper_in = torch.stack([mlp(mask_tokens_out[:, first + i]) for i, mlp in enumerate(mlps)], dim=1)
        masks = upscaled.reshape(batch, -1, upscaled.shape[-1]) @ hyper_in.transpose(1, 2)  # [B, voxels, K]
        side = [4 * n for n in grid]
        masks = masks.reshape(batch, *grid, 2, 2, 2, 2, 2, 2, -1)  # see _upscale for the voxel order
        masks = masks.permute(0, 10, 1, 4, 7, 2, 5, 8, 3, 6, 9).reshape(batch, -1, *side)
        return masks, self.iou_prediction_head(hs[:, 0])[:, keep]

    def _upscale(self, tokens: torch.Tensor) -> torch.Tensor:
        """``output_upscaling`` on channels-last tokens ``[B, X, Y, Z, C]``: the two stride-2 transposed
        convolutions (kernel = stride = 2, so every input voxel writes its own 2³ block) as matrix products,
        the norm over the last axis. Returns ``[B, X, Y, Z, 2, 2, 2, 2, 2, 2, C/8]``: output voxel
        ``(4x + 2a + d, 4y + 2b + e, 4z + 2c + f)`` at ``[:, x, y, z, a, b, c, d, e, f]``."""
        deconv1, norm, act1, deconv2, act2 = self.output_upscaling
        return act2(_block_deconv(act1(norm.channels_last(_block_deconv(tokens, deconv1))), deconv2))


def _block_deconv(x: torch.Tensor, deconv: nn.ConvTranspose3d) -> torch.Tensor:
    """A ``kernel_size = stride = 2`` transposed convolution on channels-last ``[..., C_in]``:
    one product → ``[..., 2, 2, 2, C_out]`` (the 2³ output block of each input voxel, then channels)."""
    c_in, c_out = deconv.weight.shape[:2]
    weight = deconv.weight.permute(0, 2, 3, 4, 1).reshape(c_in, 8 * c_out)
    out = torch.addmm(deconv.bias.repeat(8), x.reshape(-1, c_in), weight)
    return out.reshape(*x.shape[:-1], 2, 2, 2, c_out)
