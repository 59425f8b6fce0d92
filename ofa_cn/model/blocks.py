"""Two small layers shared by the ResNet stem and the transformer layers.

`DropPath` (stochastic depth) and `FrozenBatchNorm2d`, written here so that the model needs
only torch. Both compute exactly what timm's `DropPath` and torchvision's `FrozenBatchNorm2d`
compute, in the same operation order, so outputs match theirs bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic depth: zero a whole sample's residual branch with probability p.

    Kept samples are scaled by 1/(1-p), so the expected value is unchanged (timm's `drop_path`
    with scale_by_keep=True).

    Args:
        x: [B, ...] the residual branch; one keep/drop draw per sample along dim 0.
        p: drop probability in [0, 1].
        training: identity unless True.
        generator: random source for the draws (default: torch's global one).
    Returns:
        a tensor of x's shape: x * mask / (1 - p), mask [B, 1, ..., 1] of 0s and 1s.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep, generator=generator)
    if keep > 0.0:  # p == 1 drops every sample; nothing to rescale
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """`drop_path` as a module: active in training mode, identity in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return drop_path(x, self.p, self.training, generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers, none trainable).

    Same buffers, in the same order, as torchvision's: weight, bias, running_mean, running_var;
    no `num_batches_tracked`. A checkpoint saved from a BatchNorm2d still loads strictly: that
    key is dropped on load.

    Args:
        num_features: C of the [B, C, H, W] input.
        eps: added to running_var before the square root.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # released checkpoints come from BatchNorm2d, which also saves a step counter we have no use for
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, C, H, W]: (x - mean) / sqrt(var + eps) * weight + bias, folded."""
        # fold into one scale and shift per channel, shaped [1, C, 1, 1] (torchvision's order of operations)
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        shift = b - rm * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
