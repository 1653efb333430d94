"""SAM-Med3D network parts, one file each; names match the official checkpoint keys."""

from .image_encoder import ImageEncoderViT3D
from .mask_decoder import MaskDecoder3D
from .prompt_encoder import PromptEncoder3D
from .sam3d import IMAGE_SIZE, LOW_RES_SIZE, TINY_CONFIG, SAMMed3D, SAMMed3DConfig, build_sam_med3d, decode_step

__all__ = [
    "IMAGE_SIZE",
    "LOW_RES_SIZE",
    "ImageEncoderViT3D",
    "MaskDecoder3D",
    "PromptEncoder3D",
    "SAMMed3D",
    "SAMMed3DConfig",
    "TINY_CONFIG",
    "build_sam_med3d",
    "decode_step",
]
