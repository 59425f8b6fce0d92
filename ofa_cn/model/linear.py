"""`Linear`: nn.Linear with faster CPU products (oneDNN's matmul, and W x^T for a few rows).

The state-dict keys and the results are nn.Linear's (up to float rounding); which product runs is
chosen per call from `fast_paths` (`onednn_linear`, `transposed_linear`). The plain path is
`F.linear`; every other branch below is a fast path that computes the same product.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .fast_paths import get_fast_paths

# Row counts (a decoding step's few rows) that run as (W x^T)^T when oneDNN is off.
TRANSPOSED_ROWS = (2, 64)


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
    """x W^T + b through oneDNN's matmul, and, with the `onednn_backward` fast path, most backward
    products too.

    Backward with `onednn_backward` (the default where torch has AVX-512 kernels): grad_x = grad W
    goes through oneDNN (faster than torch's mm on every shape of the model there, measured);
    grad_W = grad^T x through oneDNN only when in > out (fc2), the one shape where oneDNN beat
    torch's mm for it. Without it (AVX2 hosts): torch's mm for both, faster there on every shape.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [N, in], weight [out, in], bias [out] or None -> [N, out]"""
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.onednn_backward = get_fast_paths().onednn_backward
        return _onednn_mm(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()  # [N, out]
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_mm(grad, weight.t()) if ctx.onednn_backward else grad.mm(weight)  # [N, in]
        if ctx.needs_input_grad[1]:
            out_features, in_features = weight.shape
            if ctx.onednn_backward and in_features > out_features:
                grad_weight = _onednn_mm(grad.t(), x.t())  # [out, in]
            else:
                grad_weight = grad.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)  # [out]
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    """nn.Linear (same parameters and keys) with faster products on CPU.

    Training (autograd on) in float32 on a CPU: the forward product runs through oneDNN unless
    the `onednn_linear` fast path is "off" (oneDNN beats the default BLAS on the model's shapes,
    most of all on the wide output projection), and so do most backward products where the
    `onednn_backward` fast path is on (AVX-512 hosts; see `_OneDNNLinearFunction`). Under torch.compile, F.linear: the compiler picks the kernels.

    Without autograd, in float32 on a CPU with oneDNN, the product runs through oneDNN's matmul
    (`onednn_linear`): "plain" hands it the weight as it is, except for layers with `pack_weight`
    set; "packed" does so for every layer: the weight is reordered into oneDNN's blocked layout
    once and that copy is kept until the weight changes (it costs the weight's size in memory, and
    saves the reorder on every call, which matters most for the few rows of a decoding step).
    "off" with `transposed_linear` on: the few rows of a decoding step (`TRANSPOSED_ROWS`) as
    (W x^T)^T, which MKL streams faster than x W^T. Results equal nn.Linear's up to float rounding.
    """

    pack_weight = False  # per layer: pack this weight under onednn_linear "plain" too

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
        paths = get_fast_paths()
        onednn = paths.onednn_linear != "off" and x.dtype == torch.float32 and weight.dtype == torch.float32 \
            and _onednn_linear_available()
        if torch.is_grad_enabled():
            if not onednn:
                return F.linear(x, weight, self.bias)
            out = _OneDNNLinearFunction.apply(x.reshape(rows, self.in_features), weight, self.bias)
            return out.view(*x.shape[:-1], self.out_features)
        if onednn:
            packed = paths.onednn_linear == "packed" or self.pack_weight
            weight = self._packed_weight() if packed else self.weight.detach()
            bias = None if self.bias is None else self.bias.detach()
            out = _onednn_mm(x.reshape(rows, self.in_features), weight, bias)
            return out.view(*x.shape[:-1], self.out_features)
        lo, hi = TRANSPOSED_ROWS
        if not (paths.transposed_linear and lo <= rows <= hi):
            return super().forward(x)
        xt = x.reshape(rows, self.in_features).t()  # [in, rows]
        if self.bias is None:
            out = torch.mm(self.weight, xt)
        else:
            out = torch.addmm(self.bias[:, None], self.weight, xt)  # [out, rows]
        return out.t().contiguous().view(*x.shape[:-1], self.out_features)
