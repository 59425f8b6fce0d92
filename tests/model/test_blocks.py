"""The building blocks: DropPath and FrozenBatchNorm2d (model/blocks.py), Bottleneck (model/resnet.py).

The checks use hand-computed values and need only torch. (When these replaced timm's and
torchvision's, they were also compared bit for bit with those, in commit ea9dbb1; the project's
environment no longer has either library, so those comparisons would only ever skip.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ofa_cn.model.blocks import DropPath, FrozenBatchNorm2d, drop_path
from ofa_cn.model.resnet import Bottleneck

from conftest import REFERENCE, require_reference


def frozen_bn_2ch(eps: float = 0.0) -> FrozenBatchNorm2d:
    bn = FrozenBatchNorm2d(2, eps=eps)
    bn.weight.copy_(torch.tensor([3.0, -1.0]))
    bn.bias.copy_(torch.tensor([1.0, -1.0]))
    bn.running_mean.copy_(torch.tensor([1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))  # 1/sqrt: 0.5 and 2, exact in float32
    return bn


# ---------------------------------------------------------------------------------------------
# FrozenBatchNorm2d


def test_frozen_bn_hand_computed():
    # channel 0: scale 3 * 0.5 = 1.5, shift 1 - 1 * 1.5 = -0.5
    # channel 1: scale -1 * 2 = -2,   shift -1 - 2 * -2 = 3
    x = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.5]]]])  # [1, 2, 1, 2]
    expected = torch.tensor([[[[1.0, 4.0]], [[-1.0, 2.0]]]])
    assert torch.equal(frozen_bn_2ch()(x), expected)


def test_frozen_bn_equals_batchnorm_in_eval():
    bn = nn.BatchNorm2d(2).eval()
    frozen = frozen_bn_2ch(eps=1e-5)
    bn.load_state_dict(frozen.state_dict(), strict=False)
    x = torch.randn(3, 2, 5, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(frozen(x), bn(x))


def test_frozen_bn_buffers_and_no_parameters():
    bn = FrozenBatchNorm2d(3)
    assert [n for n, _ in bn.named_buffers()] == ["weight", "bias", "running_mean", "running_var"]
    assert list(bn.parameters()) == []
    assert bn.eps == 1e-5
    assert "3, eps=1e-05" in repr(bn)


def test_frozen_bn_loads_a_batchnorm_state_dict_strictly():
    source = nn.BatchNorm2d(2)
    source.running_mean.fill_(0.5)
    sd = source.state_dict()
    assert "num_batches_tracked" in sd
    frozen = FrozenBatchNorm2d(2)
    frozen.load_state_dict(sd, strict=True)  # num_batches_tracked is dropped, not unexpected
    assert torch.equal(frozen.running_mean, torch.full((2,), 0.5))


# ---------------------------------------------------------------------------------------------
# DropPath


def test_drop_path_is_identity_in_eval_and_at_zero():
    x = torch.randn(4, 3, 2)
    assert DropPath(0.5).eval()(x) is x
    assert DropPath(0.0).train()(x) is x
    assert drop_path(x, 0.5, training=False) is x


def test_drop_path_drops_the_seeded_samples_and_rescales_the_rest():
    p, seed = 0.25, 3
    x = torch.randn(16, 3, 2, 5, generator=torch.Generator().manual_seed(0))
    out = DropPath(p).train()(x, generator=torch.Generator().manual_seed(seed))

    # one draw per sample, from the same seeded generator
    kept = torch.empty(16).bernoulli_(1 - p, generator=torch.Generator().manual_seed(seed)).bool()
    assert 0 < kept.sum() < 16, "pick a seed that both keeps and drops samples"
    assert torch.equal(out[~kept], torch.zeros_like(out[~kept]))
    assert torch.equal(out[kept], x[kept] * (1 / (1 - p)))


def test_drop_path_keeps_the_expectation():
    p = 0.3
    out = drop_path(torch.ones(20_000, 2), p, training=True, generator=torch.Generator().manual_seed(1))
    dropped = (out[:, 0] == 0).float().mean().item()
    assert abs(dropped - p) < 0.02
    assert abs(out.mean().item() - 1.0) < 0.03
    assert torch.equal(out.unique(), torch.tensor([0.0, 1 / (1 - p)]))


def test_drop_path_p1_drops_everything_and_bad_p_is_refused():
    assert torch.equal(drop_path(torch.ones(5, 2), 1.0, training=True), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DropPath(1.5)
    assert "p=0.1" in repr(DropPath(0.1))


# ---------------------------------------------------------------------------------------------
# Bottleneck

# one released first block (layer1.0: 64 -> 64 -> 256, with a downsample shortcut), key: shape
RELEASED_FIRST_BLOCK = {
    "conv1.weight": [64, 64, 1, 1],
    **{f"bn1.{b}": [64] for b in ("weight", "bias", "running_mean", "running_var")},
    "bn1.num_batches_tracked": [],
    "conv2.weight": [64, 64, 3, 3],
    **{f"bn2.{b}": [64] for b in ("weight", "bias", "running_mean", "running_var")},
    "bn2.num_batches_tracked": [],
    "conv3.weight": [256, 64, 1, 1],
    **{f"bn3.{b}": [256] for b in ("weight", "bias", "running_mean", "running_var")},
    "bn3.num_batches_tracked": [],
    "downsample.0.weight": [256, 64, 1, 1],
    **{f"downsample.1.{b}": [256] for b in ("weight", "bias", "running_mean", "running_var")},
    "downsample.1.num_batches_tracked": [],
}


def first_block(inplanes: int, planes: int, stride: int, norm=nn.BatchNorm2d) -> Bottleneck:
    out = planes * Bottleneck.expansion
    downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), norm(out))
    return Bottleneck(inplanes, planes, stride=stride, downsample=downsample, norm_layer=norm)


def shapes(module: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_bottleneck_keys_are_the_released_ones():
    assert list(shapes(first_block(64, 64, 1)).items()) == list(RELEASED_FIRST_BLOCK.items())
    frozen = {k: v for k, v in RELEASED_FIRST_BLOCK.items() if not k.endswith("num_batches_tracked")}
    assert shapes(first_block(64, 64, 1, norm=FrozenBatchNorm2d)) == frozen
    later = Bottleneck(256, 64)  # not the first of its stage: no shortcut projection
    assert list(shapes(later)) == [k for k in RELEASED_FIRST_BLOCK if not k.startswith("downsample.")]


def test_bottleneck_keys_match_the_manifest():
    path = require_reference(REFERENCE) / "ofa_cn_base.manifest.tsv"
    prefix = "encoder.embed_images.layer1.0."
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.startswith(prefix)]
    assert [(k[len(prefix):], s) for k, s, _ in rows] == [(k, str(v)) for k, v in RELEASED_FIRST_BLOCK.items()]


def test_bottleneck_forward_order():
    # every size different: inplanes 6, planes 3 -> 12 out, stride 2 on a 5x7 input
    torch.manual_seed(0)
    block = first_block(6, 3, 2).eval()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):  # visible statistics
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.normal_(), m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 6, 5, 7)

    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, eps=m.eps)

    h = F.relu(bn(block.bn1, F.conv2d(x, block.conv1.weight)))
    h = F.relu(bn(block.bn2, F.conv2d(h, block.conv2.weight, stride=2, padding=1)))
    h = bn(block.bn3, F.conv2d(h, block.conv3.weight))
    shortcut = bn(block.downsample[1], F.conv2d(x, block.downsample[0].weight, stride=2))
    expected = F.relu(h + shortcut)

    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 12, 3, 4)
    torch.testing.assert_close(out, expected)


def test_bottleneck_drop_path_drops_only_the_branch():
    block = Bottleneck(8, 2, drop_path=DropPath(1.0)).train()  # every branch dropped
    x = torch.randn(3, 8, 4, 4)
    assert torch.equal(block(x.clone()), F.relu(x))  # relu(0 + shortcut)
