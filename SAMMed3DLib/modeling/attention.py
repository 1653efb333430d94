"""Multi-head self-attention of the image encoder, with the reference's relative-position bias.

Token grids are channels-last ``[B, X, Y, Z, C]``.
"""

from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .common import Linear
from .rel_pos import combine_terms, padded_keys_log_mass, relative_table, term_d, term_h, term_w


class Attention(nn.Module):
    """Self-attention over a cubic token grid with decomposed relative positions.

    ``rel_size`` is the side of the grid the relative tables were trained for: the window side for
    windowed blocks, the token grid side for global blocks.
    """

    def __init__(self, dim: int, num_heads: int, rel_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.rel_size = rel_size
        self.qkv = Linear(dim, dim * 3, bias=True)
        self.proj = Linear(dim, dim)
        self.rel_pos_d = nn.Parameter(torch.zeros(2 * rel_size - 1, self.head_dim))
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_size - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_size - 1, self.head_dim))

    def _tables(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.rel_size
        return tuple(relative_table(p, s) for p in (self.rel_pos_d, self.rel_pos_h, self.rel_pos_w))

    def _split_heads(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, S, S, S, C]`` → q, k, v each ``[B*heads, S, S, S, head_dim]``."""
        b, s1, s2, s3, _ = x.shape
        qkv = self.qkv(x).reshape(b, s1, s2, s3, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(4, 0, 5, 1, 2, 3, 6).reshape(3, b * self.num_heads, s1, s2, s3, self.head_dim)
        return qkv[0], qkv[1], qkv[2]

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, batch: int
    ) -> torch.Tensor:
        """Fused attention of ``[B*heads, Nq, hd]`` queries over ``[B*heads, Nk, hd]`` keys with an additive
        ``[B*heads, Nq, Nk]`` bias. Passed as 4-D ``[B, heads, …]`` tensors, which lets PyTorch use its fused
        (flash) CPU kernel rather than the unfused path it takes for 3-D inputs."""

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, self.num_heads, *t.shape[1:])

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=heads(bias))
        return out.reshape(batch * self.num_heads, *out.shape[2:])

    def _merge_heads(self, out: torch.Tensor, batch: int, side: int) -> torch.Tensor:
        """``[B*heads, side³, head_dim]`` → projected ``[B, side, side, side, C]``."""
        out = out.reshape(batch, self.num_heads, side, side, side, self.head_dim)
        out = out.permute(0, 2, 3, 4, 1, 5).reshape(batch, side, side, side, -1)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full attention over a ``[B, S, S, S, C]`` grid whose side equals ``rel_size``."""
        b, side = x.shape[0], x.shape[1]
        q, k, v = self._split_heads(x)
        t_d, t_h, t_w = self._tables()
        bias = combine_terms(term_d(q, t_d), term_h(q, t_h), term_w(q, t_w), side)
        n = side**3
        out = self._attend(
            q.reshape(-1, n, self.head_dim), k.reshape(-1, n, self.head_dim), v.reshape(-1, n, self.head_dim), bias, b
        )
        return self._merge_heads(out, b, side)

    def forward_in_padded_window(self, x: torch.Tensor) -> torch.Tensor:
        """Exact windowed attention for a ``[B, n, n, n, C]`` grid with ``n < rel_size``.

        The reference zero-pads the grid to one ``rel_size³`` window after the pre-attention norm,
        so every padded token's q, k and v equal the qkv bias. Their keys all score the same dot
        product, and their bias terms factorise, so the whole padded set acts as one extra key of
        value ``v_bias`` whose logit is the log of their summed weights. Only ``n³`` tokens are
        projected and attended; the result equals full attention over the padded window.
        """
        b, n = x.shape[0], x.shape[1]
        window = self.rel_size
        q, k, v = self._split_heads(x)
        q_bias, k_bias, v_bias = self.qkv.bias.to(q.dtype).reshape(3, self.num_heads, self.head_dim).unbind(0)
        bh = q.shape[0]
        # A query's h/w terms read q along its row up to the window side; past n that q is the bias.
        q_pad = q_bias.repeat(b, 1)[:, None, None, None, :].expand(bh, n, n, window - n, self.head_dim)
        q_row = torch.cat([q, q_pad], dim=3)
        full_d, full_h, full_w = self._tables()
        t_d = term_d(q, full_d[:n])
        t_h = term_h(q_row, full_h[:n])
        t_w = term_w(q_row, full_w)
        tokens = n**3
        # The real keys' bias and the padded keys' pooled logit side by side: [B*heads, n³, n³ + 1].
        bias = q.new_empty(bh, tokens, tokens + 1)
        combine_terms(t_d, t_h, t_w, n, out=bias[:, :, :tokens])
        k_dot = torch.einsum("nabcd,nd->nabc", q, k_bias.repeat(b, 1)) * self.scale
        bias[:, :, tokens] = (k_dot + padded_keys_log_mass(t_d, t_h, t_w, n)).reshape(bh, tokens)
        zero_key = q.new_zeros(bh, 1, self.head_dim)
        keys = torch.cat([k.reshape(bh, tokens, self.head_dim), zero_key], dim=1)
        values = torch.cat([v.reshape(bh, tokens, self.head_dim), v_bias.repeat(b, 1)[:, None, :]], dim=1)
        out = self._attend(q.reshape(bh, tokens, self.head_dim), keys, values, bias, b)
        return self._merge_heads(out, b, n)
