"""Inference of the ResNet stem with each BatchNorm folded into its convolution (CPU, oneDNN).

In eval mode a BatchNorm is a fixed affine map per channel, bn(y) = y * s + t with
s = gamma / sqrt(running_var + eps) and t = beta - running_mean * s. A convolution followed by
it is therefore one convolution with weight W * s (scaled per output channel) and bias t.
oneDNN runs each folded convolution with its ReLU, and the last one of a Bottleneck with the
residual add and ReLU, as post-ops: no separate passes over the activations for BatchNorm,
ReLU or the add. Results equal the plain path's up to float rounding (relative L2 difference
~2e-6 on ResNet101).

The folded weights are plain channels-last tensors, all in one anonymous memory mapping of
their own. oneDNN's packed layout (`_reorder_convolution_weight`) would save the weight reorder
of each call, but its tensors live on malloc's heap among the model's freed blocks (the tasks
keep freed memory for reuse, `ofa_cn/train/malloc.py`), and where they land changes what the rest of
the model can reuse: peak memory then varied from run to run by more than the weights' own size
(so did that of plain folded weights on the heap). In a mapping of their own the folded weights
cost about their size in every run, and go back to the system when the cache is dropped.

`ResNetStem.forward` dispatches here and keeps the folded weights (`FoldedStem`) as a cache.
"""

from __future__ import annotations

import functools
import mmap
from typing import NamedTuple

import torch
from torch import nn


@functools.lru_cache(maxsize=None)
def onednn_conv_available() -> bool:
    """Whether this torch build has oneDNN's fused convolution ops (x86 builds do; some others may not)."""
    mkldnn = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_convolution_pointwise")
            and hasattr(mkldnn, "_convolution_pointwise_"))


def fold_batchnorm(gamma: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm after a bias-free convolution W, as the convolution's scale and bias.

    Args:
        gamma, beta, mean, var: [C_out] the norm's affine weight and bias and its running statistics.
        eps: added to var before the square root.
    Returns:
        scale, bias [C_out]: bn(conv(x, W)) = conv(x, W * scale[:, None, None, None], bias).
    """
    scale = gamma * (var + eps).rsqrt()  # as FrozenBatchNorm2d computes it
    return scale, beta - mean * scale


class FoldedConv(NamedTuple):
    """A convolution with its BatchNorm folded in, in the arguments of oneDNN's conv ops."""

    weight: torch.Tensor  # [C_out, C_in, k, k] channels-last
    bias: torch.Tensor  # [C_out]
    padding: list[int]
    stride: list[int]
    dilation: list[int]
    groups: int


class FoldedBlock(NamedTuple):
    """A Bottleneck's folded convolutions: 1x1 reduce, 3x3, 1x1 expand, shortcut projection or None."""

    conv1: FoldedConv
    conv2: FoldedConv
    conv3: FoldedConv
    downsample: FoldedConv | None


class FoldedStem(NamedTuple):
    """The stem's folded convolutions and what they were computed from."""

    key: tuple  # `source_key` of the stem when folded
    conv1: FoldedConv
    blocks: list[FoldedBlock]


def conv_norm_pairs(stem: nn.Module) -> list[tuple[nn.Conv2d, nn.Module]]:
    """Every (conv, norm) of a ResNetStem: the stem's, then per block conv1, conv2, conv3, downsample."""
    pairs = [(stem.conv1, stem.bn1)]
    for layer in (stem.layer1, stem.layer2, stem.layer3):
        for block in layer:
            pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    return pairs


def source_key(stem: nn.Module) -> tuple:
    """Identifies the values the folded weights come from: the storage and in-place version of
    every conv weight and norm tensor, and each norm's eps. Any in-place change (load_state_dict,
    an optimizer step, `.mul_`) bumps a version; `.to()`, `.half()` make new tensors."""
    key = []
    for conv, bn in conv_norm_pairs(stem):
        for t in (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var):
            key.append((t.data_ptr(), t._version))
        key.append(bn.eps)
    return tuple(key)


def _mapped_empty(numel: int) -> torch.Tensor:
    """An uninitialised float32 [numel] tensor in an anonymous memory mapping of its own (not
    malloc's heap); unmapped when the tensor and its views are freed."""
    return torch.frombuffer(mmap.mmap(-1, 4 * numel), dtype=torch.float32)


def _fold(conv: nn.Conv2d, bn: nn.Module, out: torch.Tensor) -> FoldedConv:
    """conv then bn -> one FoldedConv whose weight is written into `out`, a flat [conv.weight.numel()]."""
    assert conv.bias is None and bn.running_mean is not None and bn.weight is not None, \
        "the stem's convs have no bias, its norms running statistics and an affine weight and bias"
    scale, bias = fold_batchnorm(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    c_out, c_in, kh, kw = conv.weight.shape
    weight = out.view(c_out, kh, kw, c_in).permute(0, 3, 1, 2)  # [C_out, C_in, kh, kw] channels-last
    torch.mul(conv.weight, scale[:, None, None, None], out=weight)
    return FoldedConv(weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)


def fold_stem(stem: nn.Module) -> FoldedStem:
    """Fold every BatchNorm of a ResNetStem (eval mode) into its convolution.

    Args:
        stem: a ResNetStem (its norms: BatchNorm2d with running statistics, or FrozenBatchNorm2d).
    Returns:
        a FoldedStem; its weights are new tensors, as large as the stem's conv weights together.
    """
    pairs = conv_norm_pairs(stem)
    flat = _mapped_empty(sum(conv.weight.numel() for conv, _ in pairs))
    folded = []
    with torch.no_grad():
        start = 0
        for conv, bn in pairs:
            folded.append(_fold(conv, bn, flat[start:start + conv.weight.numel()]))
            start += conv.weight.numel()
    convs = iter(folded)  # in conv_norm_pairs' order
    conv1 = next(convs)
    blocks = [FoldedBlock(next(convs), next(convs), next(convs), None if block.downsample is None else next(convs))
              for layer in (stem.layer1, stem.layer2, stem.layer3) for block in layer]
    return FoldedStem(source_key(stem), conv1, blocks)


def _conv(x: torch.Tensor, f: FoldedConv, relu: bool) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(x, f.weight, f.bias, f.padding, f.stride, f.dilation, f.groups,
                                                   "relu" if relu else "none", [], "")


def _conv_add_relu_(shortcut: torch.Tensor, x: torch.Tensor, f: FoldedConv) -> torch.Tensor:
    """shortcut = relu(conv(x) + shortcut), in place, in one oneDNN call (in place: no new output
    to allocate and fill). oneDNN's "sum" post-op is refused here; "add" is a binary post-op."""
    return torch.ops.mkldnn._convolution_pointwise_.binary(shortcut, x, f.weight, f.bias, f.padding, f.stride,
                                                           f.dilation, f.groups, "add", None, "relu", [], "")


def fused_forward(folded: FoldedStem, images: torch.Tensor, maxpool: nn.Module) -> torch.Tensor:
    """The stem on folded weights: images [B, 3, H, W] (channels-last) -> [B, 1024, H/16, W/16] channels-last.

    Computes what ResNetStem.forward computes in eval mode (drop path is the identity there).
    """
    x = _conv(images, folded.conv1, relu=True)  # [B, 64, H/2, W/2]
    x = maxpool(x)  # [B, 64, H/4, W/4]
    for block in folded.blocks:
        y = _conv(x, block.conv1, relu=True)  # [B, planes, h, w]
        y = _conv(y, block.conv2, relu=True)  # [B, planes, h/s, w/s]
        # x is this function's own tensor (maxpool's or a block's output): the block may overwrite it
        shortcut = x if block.downsample is None else _conv(x, block.downsample, relu=False)  # [B, 4 planes, ..]
        x = _conv_add_relu_(shortcut, y, block.conv3)  # [B, 4 planes, h/s, w/s]
    return x
