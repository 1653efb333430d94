"""The assembled SAM-Med3D network (the official ``vit_b_ori`` build for 128³ crops)."""

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .image_encoder import ImageEncoderViT3D
from .mask_decoder import MaskDecoder3D
from .prompt_encoder import PromptEncoder3D

IMAGE_SIZE = 128
"""Side of the model's input crop, in voxels (at 1.5 mm: a 192 mm field of view)."""
LOW_RES_SIZE = 32
"""Side of the decoder's logit grid, in voxels (4x coarser than the crop)."""


class SAMMed3D(nn.Module):
    """Image encoder, prompt encoder and mask decoder, named as in the official checkpoints."""

    def __init__(self, image_encoder: ImageEncoderViT3D, prompt_encoder: PromptEncoder3D, mask_decoder: MaskDecoder3D):
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.no_mask_embed.weight.device

    @torch.inference_mode()
    def encode(self, crop: torch.Tensor) -> torch.Tensor:
        """Normalised crop ``[B, 1, 128, 128, 128]`` → float32 image embedding ``[B, 384, 8, 8, 8]``."""
        dtype = self.image_encoder.pos_embed.dtype
        return self.image_encoder(crop.to(self.device, dtype)).float()

    @torch.inference_mode()
    def decode(
        self,
        embedding: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_logits: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One refinement step.

        ``coords`` ``[B, N, 3]`` crop voxel indices (array order), ``labels`` ``[B, N]`` (1/0),
        ``mask_logits`` the previous ``[B, 1, 32, 32, 32]`` logits or None.
        Returns (low-res logits ``[B, 1, 32, 32, 32]``, IoU estimate ``[B, 1]``).
        """
        device = self.device
        sparse, dense = self.prompt_encoder(
            points=(coords.to(device), labels.to(device)),
            boxes=None,
            masks=None if mask_logits is None else mask_logits.to(device),
        )
        return self.mask_decoder(
            image_embeddings=embedding.to(device),
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )

    @staticmethod
    def upsample_logits(low_res: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
        """32³ logits → ``size³`` logits, trilinear without corner alignment (the official inference)."""
        return F.interpolate(low_res, size=(size, size, size), mode="trilinear", align_corners=False)


def build_sam_med3d() -> SAMMed3D:
    """The official architecture with freshly initialised weights (parameters ≈ 100.5 M)."""
    grid = IMAGE_SIZE // 16
    return SAMMed3D(
        image_encoder=ImageEncoderViT3D(img_size=IMAGE_SIZE, out_chans=384),
        prompt_encoder=PromptEncoder3D(384, (grid, grid, grid), (IMAGE_SIZE,) * 3, mask_in_chans=16),
        mask_decoder=MaskDecoder3D(transformer_dim=384),
    )
