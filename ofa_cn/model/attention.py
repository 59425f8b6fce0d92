"""Multi-head attention with an additive position bias, per-head output scales and a KV cache.

Convention for the whole model package: batch first. x is [B, T, D]; per-head tensors are
[B, H, T, d_head]; an attention bias is [B or 1, H or 1, T_query, T_key], float, with -inf where
a key must not be seen (padding, future positions).

The logit of query i and key j in head h is

    ((W_q x_i + b_q) . (W_k y_j + b_k)) * scaling + bias[h, i, j],   scaling = (d_head * factor)^-1/2

with factor 2 in every released model (so 1/sqrt(128) for d_head 64). It runs through
`torch.nn.functional.scaled_dot_product_attention` with the bias as a float mask and an explicit
scale, so fused kernels apply, except when training on a CPU (see `_needs_bias_grad_on_cpu`);
`eager_attention` is the plain formula, also the reference that `scripts/benchmark.py` times against.
A full pass of cross-attention runs in the folded order of `folded_attention.py` instead.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .folded_attention import folded_attention, folding_saves_work

_BACKEND = "sdpa"


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Run attention with "sdpa" (default) or "eager" (softmax(q k^T s + bias) v, fp32 softmax)."""
    global _BACKEND
    if name not in ("sdpa", "eager"):
        raise ValueError(f"attention backend must be 'sdpa' or 'eager', got {name!r}")
    previous, _BACKEND = _BACKEND, name
    try:
        yield
    finally:
        _BACKEND = previous


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
    `eager_attention` is then faster: base train step, per encoder layer, 1.27x at 256 px and
    1.2x at 480 px (2-core CPU, fp32).
    """
    return bias is not None and bias.requires_grad and torch.is_grad_enabled() and q.device.type == "cpu"


@functools.lru_cache(maxsize=None)
def _onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's linear ops (x86 builds do; some others may not)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def _onednn_mm(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b_t^T (+ bias) through oneDNN's matmul. a [M, K], b_t [N, K] (plain or oneDNN-packed),
    bias [N] -> [M, N]; a and a plain b_t may be strided views (a transpose costs no copy)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    """x W^T + b through oneDNN's matmul, and most backward products too.

    Backward (2-core AVX-512 CPU, fp32): grad_x = grad W through oneDNN is 1.06-1.36x faster than
    torch's mm on every shape of the model (encoder, decoder, output projection); grad_W = grad^T x
    is 1.08-1.22x faster through oneDNN when in > out (fc2) and up to 1.09x slower otherwise,
    so it goes through oneDNN only there.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [N, in], weight [out, in], bias [out] or None -> [N, out]"""
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_mm(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()  # [N, out]
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_mm(grad, weight.t())  # [N, in]
        if ctx.needs_input_grad[1]:
            out_features, in_features = weight.shape
            if in_features > out_features:
                grad_weight = _onednn_mm(grad.t(), x.t())  # [out, in]
            else:
                grad_weight = grad.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)  # [out]
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    """nn.Linear (same parameters and keys) with faster products on CPU.

    Training (autograd on) in float32 on a CPU: the forward product runs through oneDNN unless
    `onednn` is "off" (1.04-1.2x faster than the default BLAS for encoder-sized products, 2.2x for
    the output projection of a training batch), and so do most backward products (see
    `_OneDNNLinearFunction`). Under torch.compile, F.linear: the compiler picks the kernels.

    Without autograd, in float32 on a CPU with oneDNN, the product runs through oneDNN's matmul
    (`onednn`): "plain" hands it the weight as it is, except for layers with `pack_weight` set;
    "packed" does so for every layer: the weight is reordered into oneDNN's blocked layout once
    and that copy is kept until the weight changes (it costs the weight's size in memory). On a
    2-core AVX-512 CPU oneDNN is 1.1-1.2x faster than the default BLAS for encoder-sized products
    and 2-5x for the few rows of a decoding step, packed about 2x faster again there. "off" uses
    `transposed_rows`: the few rows of a decoding step as (W x^T)^T, which MKL streams about twice
    as fast as x W^T. Results equal nn.Linear's up to float rounding.
    """

    onednn = "plain"  # "packed", "plain" or "off"
    transposed_rows = (2, 64)  # with onednn "off": row counts that use W x^T; (0, -1) switches it off
    pack_weight = False  # per layer: pack this weight under onednn "plain" too

    def __getstate__(self):
        # The packed copy is an opaque oneDNN tensor that cannot be copied or pickled; it is a
        # cache, rebuilt on the next use (deepcopy for EMA, torch.save of a module).
        state = self.__dict__.copy()
        state.pop("_onednn_packed", None)
        return state

    def _packed_weight(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version)
        cached = self.__dict__.get("_onednn_packed")
        if cached is None or cached[0] != key:
            cached = (key, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach()))
            self.__dict__["_onednn_packed"] = cached
        return cached[1]

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., in] -> [..., out]

        weight: for autograd, an alias of `self.weight` (same values) to take its gradient
            through instead (the tied output projection: `TokenEmbedding.projection_weight`).
        """
        if weight is None or not torch.is_grad_enabled():
            weight = self.weight  # no autograd: an alias changes nothing (and the cache is the parameter's)
        if x.device.type != "cpu" or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
            return F.linear(x, weight, self.bias)  # other devices, autocast, torch.compile: plain F.linear
        rows = x.numel() // self.in_features
        onednn = self.onednn != "off" and x.dtype == torch.float32 and weight.dtype == torch.float32 \
            and _onednn_linear_available()
        if torch.is_grad_enabled():
            if not onednn:
                return F.linear(x, weight, self.bias)
            out = _OneDNNLinearFunction.apply(x.reshape(rows, self.in_features), weight, self.bias)
            return out.view(*x.shape[:-1], self.out_features)
        if onednn:
            packed = self.onednn == "packed" or self.pack_weight
            weight = self._packed_weight() if packed else self.weight.detach()
            bias = None if self.bias is None else self.bias.detach()
            out = _onednn_mm(x.reshape(rows, self.in_features), weight, bias)
            return out.view(*x.shape[:-1], self.out_features)
        lo, hi = self.transposed_rows
        if not lo <= rows <= hi:
            return super().forward(x)
        xt = x.reshape(rows, self.in_features).t()  # [in, rows]
        if self.bias is None:
            out = torch.mm(self.weight, xt)
        else:
            out = torch.addmm(self.bias[:, None], self.weight, xt)  # [out, rows]
        return out.t().contiguous().view(*x.shape[:-1], self.out_features)


class MultiheadAttention(nn.Module):
    """Attention of OFA (self or cross); parameter names are the released checkpoint's.

    Args:
        embed_dim: D of the queries and of the output.
        num_heads: H.
        kdim: width of the keys/values input (the encoder's D for cross-attention).
        dropout: attention-probability dropout (training only).
        scale_factor: the `attn_scale_factor` in scaling = (d_head * scale_factor) ** -0.5.
        scale_heads: learn one output scale per head (`c_attn`).

    `fold_cross_projections` (class-wide, default True): on a CPU, cross-attention called with its
    input (`forward(x, y)`) runs in the folded order of `folded_attention` where that needs fewer
    multiply-adds (few queries over many keys: a teacher-forced decoder pass); False: always
    project the keys and values first, the original's order. Not on CUDA: there the products are
    a small share of the time, SDPA's kernels keep the logits in float32 under bf16 autocast (the
    folded order would round them to bf16), and the folded order is unmeasured.
    """

    fold_cross_projections = True

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
        if _BACKEND == "sdpa" and not _needs_bias_grad_on_cpu(bias, q):
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
        unless `fold_cross_projections` is off.
        """
        if (y is not None and self.fold_cross_projections and y.device.type == "cpu"
                and folding_saves_work(x.size(1), y.size(1), x.size(2), y.size(2), self.num_heads)):
            q = self._split(self.q_proj(x))  # [B, H, T, d]
            p = self.dropout if self.training else 0.0
            out = folded_attention(q, y, self.k_proj.weight, self.k_proj.bias, self.v_proj.weight,
                                   self.v_proj.bias, bias, self.scaling, p)
            return self._merge_heads(out)
        k, v = self.project_kv(x if y is None else y)
        return self.attend(x, k, v, bias)
