"""ViT-B image encoder of SAM-Med3D: a ``[B, 1, 128, 128, 128]`` crop → ``[B, 384, 8, 8, 8]`` embedding.

Spatial axes stay in the crop's voxel-index order throughout (channels-first outside the blocks,
channels-last ``[B, X, Y, Z, C]`` inside them).
"""

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .attention import Attention
from .common import LayerNorm3d, MLPBlock


class PatchEmbed3D(nn.Module):
    """Non-overlapping ``patch³`` patches → channels-last tokens ``[B, X/p, Y/p, Z/p, C]``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-pad ``[B, S, S, S, C]`` to a multiple of ``window`` and split into ``[B*nW, w, w, w, C]``."""
    b, s, _, _, c = x.shape
    pad = (-s) % window
    x = F.pad(x, (0, 0, 0, pad, 0, pad, 0, pad))
    m = (s + pad) // window
    x = x.reshape(b, m, window, m, window, m, window, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(-1, window, window, window, c)


def _window_unpartition(windows: torch.Tensor, window: int, batch: int, side: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`, cropping the padding away."""
    m = -(-side // window)
    x = windows.reshape(batch, m, m, m, window, window, window, -1).permute(0, 1, 4, 2, 5, 3, 6, 7)
    x = x.reshape(batch, m * window, m * window, m * window, -1)
    return x[:, :side, :side, :side]


class Block3D(nn.Module):
    """Pre-norm transformer block; ``window_size`` 0 means global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, rel_size=window_size or grid_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        side, window = x.shape[1], self.window_size
        if window == 0 or window == side:
            return self.attn(x)
        if side < window:
            return self.attn.forward_in_padded_window(x)
        return self.attend_windows(x)

    def attend_windows(self, x: torch.Tensor) -> torch.Tensor:
        """Windowed attention computed the direct way: pad, partition, attend every window token."""
        windows = _window_partition(x, self.window_size)
        return _window_unpartition(self.attn(windows), self.window_size, x.shape[0], x.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT3D(nn.Module):
    """Patch embedding + absolute position + ViT blocks + convolutional neck."""

    def __init__(
        self,
        img_size: int = 128,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 384,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed3D(patch_size, 1, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block3D(embed_dim, num_heads, mlp_ratio, 0 if i in global_attn_indexes else window_size, grid)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv3d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm3d(out_chans),
            nn.Conv3d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, 1, S, S, S]`` normalised crop (S = img_size) → ``[B, out_chans, S/p, S/p, S/p]``."""
        expected = (1, self.img_size, self.img_size, self.img_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"image_encoder expects a [B, {', '.join(map(str, expected))}] tensor, got {list(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"image_encoder expects a floating-point tensor, got {x.dtype}")
        x = self.patch_embed(x.to(self.pos_embed.dtype)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 4, 1, 2, 3))
