"""Small building blocks shared by the SAM-Med3D network parts.

Volumes inside the network are channels-first ``[B, C, X, Y, Z]`` where X, Y, Z are the three
spatial axes of the 128³ crop in its voxel-index order (the order the model was trained with).
"""

from typing import Type

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm3d(nn.Module):
    """Layer normalisation over the channel axis of a ``[B, C, X, Y, Z]`` volume."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channels_last(x.movedim(1, -1)).movedim(-1, 1)

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalisation of a channels-last ``[..., C]`` tensor."""
        # layer_norm over the last axis is one fused kernel; it equals the mean/variance formula.
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class Linear(nn.Linear):
    """``nn.Linear`` whose weights may be stored in a lower precision than its input: the input is cast to the
    weights' dtype for the product and the result back to the input's dtype (bf16 matrix products inside an
    fp32 network, for CPUs with bf16 dot-product instructions). With equal dtypes it is ``nn.Linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype:
            return super().forward(x)
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them (the transformer feed-forward)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = Linear(embedding_dim, mlp_dim)
        self.lin2 = Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (hypernetwork and IoU heads)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x
