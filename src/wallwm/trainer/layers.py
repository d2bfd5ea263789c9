"""Transformer blocks on PyTorch's scaled-dot-product attention (flash / memory-efficient kernels).

The blocks compute exactly what ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``
compute with ``norm_first=True``, ReLU and no dropout, and keep their parameter names and their
initialisation order, so checkpoints written with the ``nn`` layers load unchanged and a seed
gives the same initial weights (both tested). Written out because the ``nn`` layers route
through ``F.multi_head_attention_forward`` -- a long Python path with fast-path branches and
mask conversions on every call -- and hide the attention call that ``torch.compile`` and the
fused GPU kernels need to see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with packed input projections (``nn.MultiheadAttention``'s names)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        # nn.MultiheadAttention's initialisation, in its order (the out projection's default
        # init ran above), so a seed gives the weights it gives the nn layers
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, x_BLD: torch.Tensor) -> torch.Tensor:
        b, length, d = x_BLD.shape
        return x_BLD.view(b, length, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self,
        x_BLD: torch.Tensor,
        context_BMD: torch.Tensor | None = None,
        keep_BM: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention of ``x_BLD`` (or cross-attention to ``context_BMD``).

        ``keep_BM`` marks the keys that may be attended to (True: attend).
        """
        if context_BMD is None:
            q, k, v = F.linear(x_BLD, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            d = x_BLD.shape[-1]
            w, bias = self.in_proj_weight, self.in_proj_bias
            q = F.linear(x_BLD, w[:d], bias[:d])
            k, v = F.linear(context_BMD, w[d:], bias[d:]).chunk(2, dim=-1)
        mask = None if keep_BM is None else keep_BM[:, None, None, :]
        out_BHLd = F.scaled_dot_product_attention(
            self._split(q), self._split(k), self._split(v), attn_mask=mask
        )
        out: torch.Tensor = self.out_proj(out_BHLd.transpose(1, 2).flatten(2))
        return out


class Block(nn.Module):
    """Pre-norm self-attention + ReLU MLP (``nn.TransformerEncoderLayer``, ``norm_first``)."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads)
        self.linear1 = nn.Linear(width, hidden)
        self.linear2 = nn.Linear(hidden, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x_BLD: torch.Tensor, keep_BL: torch.Tensor | None = None) -> torch.Tensor:
        """One block; ``keep_BL`` masks padded keys (True: a real token)."""
        x_BLD = x_BLD + self.self_attn(self.norm1(x_BLD), keep_BM=keep_BL)
        out: torch.Tensor = x_BLD + self.linear2(F.relu(self.linear1(self.norm2(x_BLD))))
        return out


class CrossBlock(nn.Module):
    """Self-attention, cross-attention to a context, MLP (``nn.TransformerDecoderLayer``)."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads)
        self.multihead_attn = Attention(width, heads)
        self.linear1 = nn.Linear(width, hidden)
        self.linear2 = nn.Linear(hidden, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)

    def forward(
        self,
        x_BLD: torch.Tensor,
        context_BMD: torch.Tensor,
        keep_BM: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One block of ``x_BLD`` reading ``context_BMD`` (used as it is, not normalised).

        ``keep_BM`` marks the context tokens that may be read (True: a real token).
        """
        x_BLD = x_BLD + self.self_attn(self.norm1(x_BLD))
        x_BLD = x_BLD + self.multihead_attn(self.norm2(x_BLD), context_BMD, keep_BM)
        out: torch.Tensor = x_BLD + self.linear2(F.relu(self.linear1(self.norm3(x_BLD))))
        return out
