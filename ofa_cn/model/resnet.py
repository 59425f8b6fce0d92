"""The image stem: a Bottleneck ResNet cut after stage 3 (no layer4, no pooling head).

A [B, 3, H, W] image becomes [B, 1024, H/16, W/16] features, one per 16x16-pixel patch. The
blocks stride on the 3x3 conv ("ResNet v1.5"), and their attribute names are the released keys
(`layer3.5.conv2.weight`, `layer1.0.downsample.1.running_var`), the same as timm's `Bottleneck`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .blocks import DropPath, FrozenBatchNorm2d
from .config import linear_rates
from .fast_paths import get_fast_paths
from .fused_resnet import FoldedStem, fold_stem, fused_forward, onednn_conv_available, source_key

STAGE_PLANES = (64, 128, 256)
STAGE_STRIDES = (1, 2, 2)
STEM_CHANNELS = 64


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, plus a shortcut.

    Args:
        inplanes: input channels.
        planes: width of the 1x1 and 3x3 convs; the block outputs planes * expansion channels.
        stride: of the 3x3 conv (and of `downsample`, which must match it).
        downsample: shortcut projection when the shape changes (1x1 conv + norm), else None.
        norm_layer: called with a channel count; nn.BatchNorm2d or FrozenBatchNorm2d.
        drop_path: stochastic depth on the residual branch, or None.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, drop_path: nn.Module | None = None):
        super().__init__()
        outplanes = planes * self.expansion
        # registration order = the released state-dict order: conv1 bn1 conv2 bn2 conv3 bn3 downsample
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, outplanes, kernel_size=1, bias=False)
        self.bn3 = norm_layer(outplanes)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, inplanes, H, W] -> [B, planes * 4, H / stride, W / stride]"""
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:  # after the branch, so its output is not held meanwhile
            shortcut = self.downsample(shortcut)
        x += shortcut  # in place: x is this block's own fresh tensor
        return self.act3(x)


class ResNetStem(nn.Module):
    """ResNet stem + layer1..layer3.

    The convolutions run on channels-last (NHWC) activations (fast path `channels_last`:
    oneDNN's fast layout on CPU, tensor-core friendly on GPU; same values up to rounding).
    In eval mode without autograd, on CPU in float32, it runs through `fused_resnet` (fast path
    `fused_resnet`): every BatchNorm folded into its conv, ReLU and residual add fused into the
    convs by oneDNN. The folded weights are a cache (as large as the conv weights), rebuilt when a
    weight or a norm statistic changes, and dropped by `train()`.

    Args:
        layers: Bottleneck blocks per stage, e.g. (3, 4, 23) for ResNet101.
        drop_path_rate: stochastic depth; within a stage, block i > 0 gets linspace(0, rate, n)[i]
            and the first block of each stage none (as the original).
        frozen_bn: FrozenBatchNorm2d (fixed statistics, no `num_batches_tracked`) instead of
            BatchNorm2d, for `freeze_resnet`.
    """

    def __init__(self, layers: tuple[int, int, int], drop_path_rate: float = 0.0, frozen_bn: bool = False):
        super().__init__()
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = STEM_CHANNELS
        for stage, (blocks, planes, stride) in enumerate(zip(layers, STAGE_PLANES, STAGE_STRIDES), start=1):
            rates = linear_rates(drop_path_rate, blocks)
            out = planes * Bottleneck.expansion
            stage_blocks = []
            for i in range(blocks):
                downsample = None
                if i == 0:  # first block: change width/stride, shortcut through a 1x1 conv
                    downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), norm(out))
                rate = rates[i] if i > 0 else 0.0
                stage_blocks.append(Bottleneck(
                    inplanes if i == 0 else out, planes, stride=stride if i == 0 else 1,
                    downsample=downsample, norm_layer=norm,
                    drop_path=DropPath(rate) if rate > 0 else None,
                ))
            setattr(self, f"layer{stage}", nn.Sequential(*stage_blocks))
            inplanes = out
        self.init_weights()

    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def __getstate__(self):
        # The folded weights are a cache as large as the conv weights, not worth copying or saving;
        # the next fused call rebuilds them (deepcopy for EMA, torch.save of a module).
        state = self.__dict__.copy()
        state.pop("_folded", None)
        return state

    def train(self, mode: bool = True):
        if mode:
            # Training changes the weights, also in ways no version counter sees (fairseq copies
            # into `p.data`); drop the folded copy, which also frees its memory while training.
            self.__dict__.pop("_folded", None)
        return super().train(mode)

    def _use_fused(self, images: torch.Tensor) -> bool:
        paths = get_fast_paths()
        return (paths.fused_resnet and paths.channels_last and not self.training and not torch.is_grad_enabled()
                and not torch.compiler.is_compiling()  # torch.compile fuses the plain path itself
                and images.device.type == "cpu" and images.dtype == torch.float32
                and self.conv1.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                and onednn_conv_available())

    def _folded_weights(self) -> FoldedStem:
        """The cached FoldedStem, rebuilt if a weight or norm statistic changed since."""
        cached = self.__dict__.get("_folded")
        if cached is None or cached.key != source_key(self):
            self.__dict__.pop("_folded", None)  # free the old copy before building the new one
            cached = self.__dict__["_folded"] = fold_stem(self)
        return cached

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> features [B, 1024, H/16, W/16] (channels-last strides unless switched off)"""
        if get_fast_paths().channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self._use_fused(images):
            return fused_forward(self._folded_weights(), images, self.maxpool)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer3(self.layer2(self.layer1(x)))
