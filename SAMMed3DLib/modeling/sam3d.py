"""The assembled SAM-Med3D network (the official ``vit_b_ori`` build for 128³ crops)."""

from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

import torch
from torch import nn

from .common import Linear
from .image_encoder import ImageEncoderViT3D
from .mask_decoder import MaskDecoder3D
from .prompt_encoder import PromptEncoder3D

IMAGE_SIZE = 128
"""Side of the model's input crop, in voxels (at 1.5 mm: a 192 mm field of view)."""
LOW_RES_SIZE = 32
"""Side of the decoder's logit grid, in voxels (4x coarser than the crop)."""


def decode_step(
    network: nn.Module,
    embedding: torch.Tensor,
    coords: torch.Tensor,
    labels: torch.Tensor,
    mask_logits: Optional[torch.Tensor] = None,
    multimask_output: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Prompt encoder then mask decoder, through their official call signatures.

    Works for any network with ``prompt_encoder`` and ``mask_decoder`` of the official interface (ours,
    or the reference in the tests and benchmarks). ``coords`` ``[B, N, 3]`` crop voxel indices,
    ``labels`` ``[B, N]``, ``mask_logits`` ``[B, 1, 32, 32, 32]`` or None → (logits, IoU estimates).
    """
    sparse, dense = network.prompt_encoder(points=(coords, labels), boxes=None, masks=mask_logits)
    return network.mask_decoder(
        image_embeddings=embedding,
        image_pe=network.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
    )


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

    def set_encoder_precision(self, dtype: torch.dtype) -> None:
        """Run the image encoder in ``dtype`` (the prompt encoder and mask decoder stay fp32). On a GPU the
        whole encoder is cast. On a CPU only the weights of its linear layers are: their matrix products are
        most of the work and bf16 ones are ~2.5x faster on CPUs with bf16 instructions, whereas reduced-
        precision norms, attention, sums and convolutions are slower there than fp32."""
        if self.device.type != "cpu":
            self.image_encoder.to(dtype)
            return
        self.image_encoder.float()
        for module in self.image_encoder.modules():
            if isinstance(module, Linear):
                module.to(dtype)

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
        mask = None if mask_logits is None else mask_logits.to(device)
        return decode_step(self, embedding.to(device), coords.to(device), labels.to(device), mask)


@dataclass(frozen=True)
class SAMMed3DConfig:
    """Architecture hyper-parameters; the defaults are the official ``vit_b_ori`` (ViT-B, 100.5 M parameters)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 14
    global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    prompt_embed_dim: int = 384
    decoder_mlp_dim: int = 2048

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "SAMMed3DConfig":
        """Read the hyper-parameters off the weight shapes (official files give the defaults).

        Raises KeyError when a tensor the architecture needs is absent; the caller reports it.
        """
        grid = IMAGE_SIZE // 16
        embed_dim = state["image_encoder.pos_embed"].shape[-1]
        depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
        rows = [state[f"image_encoder.blocks.{i}.attn.rel_pos_d"].shape for i in range(depth)]
        global_idx = tuple(i for i, r in enumerate(rows) if r[0] == 2 * grid - 1)
        windowed = [r[0] for i, r in enumerate(rows) if i not in global_idx]
        return cls(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=embed_dim // rows[0][1],
            mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
            window_size=(windowed[0] + 1) // 2 if windowed else 0,
            global_attn_indexes=global_idx,
            prompt_embed_dim=state["image_encoder.neck.0.weight"].shape[0],
            decoder_mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        )


TINY_CONFIG = SAMMed3DConfig(
    embed_dim=48,
    depth=3,
    num_heads=2,
    mlp_ratio=2.0,
    window_size=14,
    global_attn_indexes=(1,),
    prompt_embed_dim=48,
    decoder_mlp_dim=64,
)
"""The real architecture and geometry (128³ → 8³, 14³ windows, a global block, every official key) with
narrow layers: a ~2 MB random-weight checkpoint that encodes in milliseconds, for self-tests."""


def build_sam_med3d(config: SAMMed3DConfig = SAMMed3DConfig()) -> SAMMed3D:
    """The network with freshly initialised weights; default config = the official architecture."""
    grid = IMAGE_SIZE // 16
    dim = config.prompt_embed_dim
    return SAMMed3D(
        image_encoder=ImageEncoderViT3D(
            img_size=IMAGE_SIZE,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=dim,
            window_size=config.window_size,
            global_attn_indexes=config.global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder3D(dim, (grid, grid, grid), (IMAGE_SIZE,) * 3, mask_in_chans=16),
        mask_decoder=MaskDecoder3D(transformer_dim=dim, mlp_dim=config.decoder_mlp_dim),
    )
