"""The ResNet stem's fused inference path (model/fused_resnet.py) computes what its modules compute."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from ofa_cn.model.blocks import FrozenBatchNorm2d
from ofa_cn.model.fast_paths import fast_paths
from ofa_cn.model.fused_resnet import fold_batchnorm, onednn_conv_available
from ofa_cn.model.resnet import ResNetStem

pytestmark = pytest.mark.skipif(not onednn_conv_available(), reason="this torch build lacks oneDNN's conv ops")

LAYERS = (1, 2, 1)  # a downsampling first block in every stage, one plain block in stage 2
# Folding changes the order of float operations only: the fused features differ from the plain
# path's by ~8e-7 relative (L2), at most ~2e-6 of the largest feature for any element. The
# tolerance: every element within 1e-5 of the largest feature (eps ignored: off by 0.2 of it).
RTOL = 0.0
ATOL_OF_MAX = 1e-5


def randomize_norms_(stem: ResNetStem, seed: int = 0) -> ResNetStem:
    """Statistics, affine parameters and eps far from the identity, so that each one matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in stem.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.eps = float(torch.empty(()).uniform_(1e-3, 1e-1, generator=g))
    return stem


def tiny_stem(frozen_bn: bool, seed: int = 0) -> ResNetStem:
    torch.manual_seed(seed)
    return randomize_norms_(ResNetStem(LAYERS, drop_path_rate=0.1, frozen_bn=frozen_bn), seed).eval()


def images(batch: int = 3, height: int = 40, width: int = 56) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


def plain(stem: ResNetStem, x: torch.Tensor) -> torch.Tensor:
    """The modules' own forward (the fused path switched off)."""
    with fast_paths(fused_resnet=False):
        return stem(x)


def assert_fused_equals_plain(stem: ResNetStem, x: torch.Tensor):
    """A fused call (checked to have folded the weights) against the plain path."""
    with torch.no_grad():
        stem.__dict__.pop("_folded", None)
        fused = stem(x)
        assert "_folded" in stem.__dict__, "the fused path did not run"
        expected = plain(stem, x)
    assert fused.shape == expected.shape
    torch.testing.assert_close(fused, expected, rtol=RTOL, atol=ATOL_OF_MAX * expected.abs().max().item())


def test_fold_batchnorm_equals_conv_then_batchnorm():
    g = torch.Generator().manual_seed(0)
    weight, x = torch.randn(5, 3, 3, 3, generator=g), torch.randn(2, 3, 7, 6, generator=g)
    gamma, beta, mean = (torch.randn(5, generator=g) for _ in range(3))
    var = torch.rand(5, generator=g) + 0.1
    expected = F.batch_norm(F.conv2d(x, weight, padding=1), mean, var, gamma, beta, training=False, eps=0.01)
    scale, bias = fold_batchnorm(gamma, beta, mean, var, 0.01)
    torch.testing.assert_close(F.conv2d(x, weight * scale[:, None, None, None], bias, padding=1), expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frozen_bn", [False, True], ids=["BatchNorm2d", "FrozenBatchNorm2d"])
def test_fused_stem_equals_the_plain_path(frozen_bn):
    stem = tiny_stem(frozen_bn)
    for x in (images(), images(batch=1), images(batch=2, height=56, width=40)):
        assert_fused_equals_plain(stem, x)
    with torch.no_grad():
        out = stem(images())
    assert out.shape == (3, 1024, 3, 4) and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("frozen_bn", [False, True], ids=["BatchNorm2d", "FrozenBatchNorm2d"])
def test_the_folded_weights_follow_changes_of_the_weights(frozen_bn):
    stem, x = tiny_stem(frozen_bn), images()
    with torch.no_grad():
        before = stem(x)
        stem.load_state_dict(tiny_stem(frozen_bn, seed=1).state_dict())  # copies in place
        after = stem(x)
        assert (after - before).abs().max() > 0.1 * before.abs().max()
        torch.testing.assert_close(after, plain(stem, x), rtol=RTOL, atol=ATOL_OF_MAX * after.abs().max().item())
        changes = [lambda: stem.layer2[1].conv2.weight.mul_(-1), lambda: stem.layer3[0].bn3.running_var.mul_(3),
                   lambda: stem.layer1[0].downsample[1].bias.add_(1), lambda: setattr(stem.bn1, "eps", 0.5)]
        for change in changes:
            before = stem(x)
            change()
            after = stem(x)
            assert (after - before).abs().max() > 1e-3 * before.abs().max()  # the change shows in the output
            torch.testing.assert_close(after, plain(stem, x), rtol=RTOL,
                                       atol=ATOL_OF_MAX * after.abs().max().item())


def test_a_stem_with_folded_weights_can_be_copied_and_saved():
    stem, x = tiny_stem(frozen_bn=False), images()
    with torch.no_grad():
        expected = stem(x)
    assert "_folded" in stem.__dict__
    copied = copy.deepcopy(stem)
    buffer = io.BytesIO()
    torch.save(stem, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for other in (copied, loaded):
        assert "_folded" not in other.__dict__
        with torch.no_grad():
            torch.testing.assert_close(other(x), expected, rtol=0, atol=0)
            other.layer1[0].conv1.weight.mul_(2)  # its own weights, its own folded copy
    with torch.no_grad():
        torch.testing.assert_close(stem(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("frozen_bn", [False, True], ids=["BatchNorm2d", "FrozenBatchNorm2d"])
def test_training_autograd_and_autocast_take_the_plain_path(frozen_bn):
    stem, x = tiny_stem(frozen_bn), images()
    with torch.no_grad():
        stem(x)  # leaves folded weights behind
    reference = copy.deepcopy(stem)
    with fast_paths(fused_resnet=False):
        expected_grad = reference(x)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            expected_autocast = reference(x)
        reference.train()
        torch.manual_seed(1)  # the same drop-path draws
        with torch.no_grad():  # training mode alone must keep it plain
            expected_train = reference(x)  # BatchNorm2d: batch statistics, running statistics updated
    out = stem(x)
    assert out.requires_grad
    torch.testing.assert_close(out, expected_grad, rtol=0, atol=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(stem(x), expected_autocast, rtol=0, atol=0)
    stem.train()
    assert "_folded" not in stem.__dict__  # train() drops the folded copy
    torch.manual_seed(1)
    with torch.no_grad():
        torch.testing.assert_close(stem(x), expected_train, rtol=0, atol=0)
