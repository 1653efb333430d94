"""Decomposed relative-position terms of the SAM-Med3D image encoder.

The encoder attends over a cubic token grid of side ``S`` (8 for global blocks, the 14³ window for
windowed blocks). Tokens are indexed ``(a, b, c)`` for queries and ``(i, j, l)`` for keys, in the
grid's X-Y-Z order. The trained weights were learnt with the reference implementation, whose bias is
not the textbook MViTv2 sum ``q·Rd[a,i] + q·Rh[b,j] + q·Rw[c,l]``. Its broadcasting adds, for query
``(a, b, c)`` and key ``(i, j, l)``::

    Td[a, b, c, l] + Th[a, b, i, l] + Tw[a, b, j, l]

with ``Td[a,b,c,l] = q[a,b,c]·Rd[a,l]``, ``Th[a,b,w,l] = q[a,b,w]·Rh[b,l]`` and
``Tw[a,b,w,l] = q[a,b,w]·Rw[w,l]`` — i.e. the last key index pairs with every table, and the ``h`` and
``w`` terms read the query at another position of its row. We reproduce exactly that, since it is what
the checkpoints expect; the comparison test against the reference package proves it.
"""

from functools import lru_cache
from typing import Optional

import torch


@lru_cache(maxsize=16)
def _relative_index(size: int, device: torch.device) -> torch.Tensor:
    """``[size, size]`` long tensor whose ``[p, r]`` entry is ``p - r + size - 1``."""
    # Cached across calls, so it must not be an inference tensor (those cannot enter autograd later).
    with torch.inference_mode(False):
        pos = torch.arange(size, device=device)
        return pos[:, None] - pos[None, :] + (size - 1)


def relative_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """Expand a ``[2*size-1, C]`` embedding into the ``[size, size, C]`` table ``R[p, r]``."""
    if rel_pos.shape[0] != 2 * size - 1:
        raise ValueError(
            f"relative-position table has {rel_pos.shape[0]} rows; a {size}-token axis needs {2 * size - 1}"
        )
    return rel_pos[_relative_index(size, rel_pos.device)]


def term_d(q: torch.Tensor, table_d: torch.Tensor) -> torch.Tensor:
    """``Td[n,a,b,c,l] = q[n,a,b,c]·table_d[a,l]``; q ``[N,A,B,C,hd]``, table ``[A,L,hd]`` → ``[N,A,B,C,L]``."""
    return torch.einsum("nabcd,ald->nabcl", q, table_d)


def term_h(q_row: torch.Tensor, table_h: torch.Tensor) -> torch.Tensor:
    """``Th[n,a,b,w,l] = q[n,a,b,w]·table_h[b,l]``; q ``[N,A,B,W,hd]``, table ``[B,L,hd]`` → ``[N,A,B,W,L]``."""
    return torch.einsum("nabwd,bld->nabwl", q_row, table_h)


def term_w(q_row: torch.Tensor, table_w: torch.Tensor) -> torch.Tensor:
    """``Tw[n,a,b,w,l] = q[n,a,b,w]·table_w[w,l]``; q ``[N,A,B,W,hd]``, table ``[W,L,hd]`` → ``[N,A,B,W,L]``."""
    return torch.einsum("nabwd,wld->nabwl", q_row, table_w)


def combine_terms(
    t_d: torch.Tensor, t_h: torch.Tensor, t_w: torch.Tensor, n: int, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Bias between the ``n³`` queries and the ``n³`` keys of the grid corner ``[0, n)³``.

    ``t_d`` is ``[N,n,n,n,L]``; ``t_h`` and ``t_w`` are ``[N,n,n,W,L]`` with ``W, L >= n``.
    Returns ``[N, n³, n³]`` (query and key tokens flattened in X-Y-Z order), written into ``out`` when
    given (any ``[N, n³, n³]`` view whose last axis has stride 1, e.g. a slice of a wider buffer).
    """
    batch = t_d.shape[0]
    # The h and w terms do not depend on the query's last index: add them on the small grid first,
    # then broadcast once into the output (no full-size temporary, no copy to contiguous).
    hw = t_h[:, :, :, None, :n, None, :n] + t_w[:, :, :, None, None, :n, :n]
    t_d = t_d[:, :, :, :, None, None, :n]
    if torch.is_grad_enabled() and (t_d.requires_grad or hw.requires_grad):
        # out= has no autograd; when gradients are wanted, take the differentiable route.
        bias = (t_d + hw).reshape(batch, n**3, n**3)
        return bias if out is None else out.copy_(bias)
    if out is None:
        out = hw.new_empty(batch, n**3, n**3)
    torch.add(t_d, hw, out=out.view(batch, n, n, n, n, n, n))
    return out


def padded_keys_log_mass(t_d: torch.Tensor, t_h: torch.Tensor, t_w: torch.Tensor, n: int) -> torch.Tensor:
    """``log Σ exp(bias)`` over the keys of a ``W³`` window that lie outside the real corner ``[0, n)³``.

    Shapes as in :func:`combine_terms` with ``W = L`` (the window side) and ``n < W``. The sum
    factorises along the key axes, so it costs ``O(W²)`` per query instead of ``O(W³)``.
    Returns ``[N, n, n, n]``.
    """
    h_all, h_real, h_pad = (torch.logsumexp(t, dim=3) for t in (t_h, t_h[:, :, :, :n], t_h[:, :, :, n:]))
    w_all, w_real, w_pad = (torch.logsumexp(t, dim=3) for t in (t_w, t_w[:, :, :, :n], t_w[:, :, :, n:]))
    # For l < n a key is padded when i >= n or (i < n and j >= n); for l >= n every (i, j) is padded.
    inner_low = torch.logaddexp(h_pad + w_all, h_real + w_pad)[..., :n]
    inner_high = (h_all + w_all)[..., n:]
    inner = torch.cat([inner_low, inner_high], dim=-1)  # [N, n, n, L]
    return torch.logsumexp(t_d + inner[:, :, :, None, :], dim=-1)
