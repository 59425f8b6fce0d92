"""Multi-head attention with an additive position bias, per-head output scales and a KV cache.

Convention for the whole model package: batch first. x is [B, T, D]; per-head tensors are
[B, H, T, d_head]; an attention bias is [B or 1, H or 1, T_query, T_key], float, with -inf where
a key must not be seen (padding, future positions).

The logit of query i and key j in head h is

    ((W_q x_i + b_q) . (W_k y_j + b_k)) * scaling + bias[h, i, j],   scaling = (d_head * factor)^-1/2

with factor 2 in every released model (so 1/sqrt(128) for d_head 64). It runs through
`torch.nn.functional.scaled_dot_product_attention` with the bias as a float mask and an explicit
scale, so fused kernels apply, except when training on a CPU (see `_needs_bias_grad_on_cpu`);
`eager_attention` is the plain formula, the path taken with the `sdpa` fast path off (the
reference that `scripts/benchmark.py` times against). A full pass of cross-attention on a CPU
runs in the folded order of `folded_attention.py` instead (fast path `folded_cross_attention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fast_paths import get_fast_paths
from .folded_attention import folded_attention, folding_saves_work
from .linear import Linear


def eager_attention(q, k, v, bias, scale: float, dropout_p: float = 0.0):
    """softmax(q k^T * scale + bias) v with the softmax in float32, as the original computes it.

    Args:
        q: [B, H, T, d]; k, v: [B, H, S, d]; bias: broadcastable to [B, H, T, S] or None.
    Returns:
        [B, H, T, d]
    """
    logits = torch.matmul(q * scale, k.transpose(-1, -2))  # [B, H, T, S]
    if bias is not None:
        logits = logits + bias
    probs = torch.softmax(logits.float(), dim=-1).type_as(q)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, v)


def _needs_bias_grad_on_cpu(bias: torch.Tensor | None, q: torch.Tensor) -> bool:
    """Whether autograd wants the gradient of a CPU attention bias (training the position tables).

    The CPU's fused SDPA kernel has no bias gradient, so SDPA falls back to its unfused "math"
    path, which also scans every row of logits for all -inf (three extra passes over [B, H, T, S]);
    `eager_attention` does none of that and is then the faster of the two.
    """
    return bias is not None and bias.requires_grad and torch.is_grad_enabled() and q.device.type == "cpu"


class MultiheadAttention(nn.Module):
    """Attention of OFA (self or cross); parameter names are the released checkpoint's.

    Args:
        embed_dim: D of the queries and of the output.
        num_heads: H.
        kdim: width of the keys/values input (the encoder's D for cross-attention).
        dropout: attention-probability dropout (training only).
        scale_factor: the `attn_scale_factor` in scaling = (d_head * scale_factor) ** -0.5.
        scale_heads: learn one output scale per head (`c_attn`).

    Fast path `folded_cross_attention` (default on): on a CPU, cross-attention called with its
    input (`forward(x, y)`) runs in the folded order of `folded_attention` where that needs fewer
    multiply-adds (few queries over many keys: a teacher-forced decoder pass); False: always
    project the keys and values first, the original's order. Not on CUDA: there the products are
    a small share of the time, SDPA's kernels keep the logits in float32 under bf16 autocast (the
    folded order would round them to bf16), and the folded order is unmeasured.
    """

    def __init__(self, embed_dim: int, num_heads: int, kdim: int | None = None, dropout: float = 0.0,
                 scale_factor: float = 2.0, scale_heads: bool = True):
        super().__init__()
        kdim = kdim or embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        assert self.head_dim * num_heads == embed_dim, f"D={embed_dim} not divisible by H={num_heads}"
        self.scaling = (self.head_dim * scale_factor) ** -0.5
        self.dropout = dropout
        self.c_attn = nn.Parameter(torch.ones(num_heads)) if scale_heads else None
        # registration order k, v, q, out = the released state-dict order
        self.k_proj = Linear(kdim, embed_dim)
        self.v_proj = Linear(kdim, embed_dim)
        self.q_proj = Linear(embed_dim, embed_dim)
        self.out_proj = Linear(embed_dim, embed_dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, T, d]

    def project_kv(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of y [B, S, kdim] -> two [B, H, S, d]."""
        return self._split(self.k_proj(y)), self._split(self.v_proj(y))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
        """Queries from x [B, T, D] against cached k, v [B, H, S, d]; bias [.., T, S]. -> [B, T, D]"""
        q = self._split(self.q_proj(x))  # [B, H, T, d]
        p = self.dropout if self.training else 0.0
        if get_fast_paths().sdpa and not _needs_bias_grad_on_cpu(bias, q):
            mask = None if bias is None else bias.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=self.scaling)
        else:
            out = eager_attention(q, k, v, bias, self.scaling, p)
        return self._merge_heads(out)

    def _merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Per-head outputs [B, H, T, d] -> scaled per head, concatenated, projected: [B, T, D]"""
        B, H, T, d = out.shape
        if self.c_attn is not None:
            out = out * self.c_attn.view(1, -1, 1, 1).to(out.dtype)  # per-head output scale
        out = out.transpose(1, 2).reshape(B, T, H * d)  # [B, T, D]
        return self.out_proj(out)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of x [B, T, D] over y [B, S, kdim] (y = x for self-attention). -> [B, T, D]

        Cross-attention (y given) with few queries over many keys runs in the folded order on a
        CPU (`folded_attention`: no key/value projections; same result up to float rounding)
        unless the `folded_cross_attention` fast path is off.
        """
        if (y is not None and get_fast_paths().folded_cross_attention and y.device.type == "cpu"
                and folding_saves_work(x.size(1), y.size(1), x.size(2), y.size(2), self.num_heads)):
            q = self._split(self.q_proj(x))  # [B, H, T, d]
            p = self.dropout if self.training else 0.0
            out = folded_attention(q, y, self.k_proj.weight, self.k_proj.bias, self.v_proj.weight,
                                   self.v_proj.bias, bias, self.scaling, p)
            return self._merge_heads(out)
        k, v = self.project_kv(x if y is None else y)
        return self.attend(x, k, v, bias)
