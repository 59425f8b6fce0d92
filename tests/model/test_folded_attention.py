"""folded_attention: cross-attention without key/value projections computes the plain formula."""

from __future__ import annotations

import pytest
import torch

from ofa_cn.model.attention import MultiheadAttention, eager_attention
from ofa_cn.model.fast_paths import fast_paths
from ofa_cn.model.folded_attention import folded_attention, folding_saves_work

B, T, S, D, H, KDIM = 4, 3, 11, 16, 2, 12  # d_head 8; folding pays at these sizes (checked below)
# float64 everywhere but the softmax, which both orders take in float32 (as the original does):
# the logits differ in their last bits, the outputs by ~1e-7; a wrong head or term gives ~0.1
TOL = dict(rtol=1e-5, atol=1e-6)


def make_attention(seed: int) -> tuple[MultiheadAttention, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    attn = MultiheadAttention(D, H, kdim=KDIM).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    return attn, g


def plain(attn: MultiheadAttention, q, y, bias, dropout_p=0.0):
    k, v = attn.project_kv(y)
    return eager_attention(q, k, v, bias, attn.scaling, dropout_p)


def test_the_sizes_of_these_tests_and_of_the_base_model_fold():
    assert folding_saves_work(T, S, D, KDIM, H)
    assert folding_saves_work(20, 268, 768, 768, 12)  # ofa_cn_base, 256 px, target length 20
    assert folding_saves_work(1, 268, 768, 768, 12)  # one decoding step without the K/V cache
    # more queries than d_head / (H ...): projecting the keys once is cheaper
    assert not folding_saves_work(64, 268, 768, 768, 12)
    assert not folding_saves_work(268, 268, 768, 768, 12)  # self-attention shapes


@pytest.mark.parametrize("bias_shape", [None, (1, H, T, S), (B, 1, T, S), (B, H, T, S)])
def test_values_equal_the_plain_order(bias_shape):
    attn, g = make_attention(0)
    q = torch.randn(B, H, T, D // H, generator=g, dtype=torch.float64)
    y = torch.randn(B, S, KDIM, generator=g, dtype=torch.float64)
    bias = None
    if bias_shape is not None:
        bias = torch.randn(bias_shape, generator=g, dtype=torch.float64)
        bias[..., -3:] = float("-inf")  # padded keys
    ours = folded_attention(q, y, attn.k_proj.weight, attn.k_proj.bias, attn.v_proj.weight, attn.v_proj.bias,
                            bias, attn.scaling)
    assert ours.shape == (B, H, T, D // H)
    torch.testing.assert_close(ours, plain(attn, q, y, bias), **TOL)


def test_without_projection_biases():
    attn, g = make_attention(1)
    q = torch.randn(B, H, T, D // H, generator=g, dtype=torch.float64)
    y = torch.randn(B, S, KDIM, generator=g, dtype=torch.float64)
    w_k, w_v = attn.k_proj.weight, attn.v_proj.weight
    ours = folded_attention(q, y, w_k, None, w_v, None, None, attn.scaling)
    k = (y @ w_k.t()).view(B, S, H, -1).transpose(1, 2)
    v = (y @ w_v.t()).view(B, S, H, -1).transpose(1, 2)
    torch.testing.assert_close(ours, eager_attention(q, k, v, None, attn.scaling), **TOL)


def test_dropout_drops_the_same_probabilities_as_the_plain_order():
    attn, g = make_attention(2)
    q = torch.randn(B, H, T, D // H, generator=g, dtype=torch.float64)
    y = torch.randn(B, S, KDIM, generator=g, dtype=torch.float64)
    torch.manual_seed(5)
    ours = folded_attention(q, y, attn.k_proj.weight, attn.k_proj.bias, attn.v_proj.weight, attn.v_proj.bias,
                            None, attn.scaling, dropout_p=0.4)
    torch.manual_seed(5)
    theirs = plain(attn, q, y, None, dropout_p=0.4)
    torch.testing.assert_close(ours, theirs, **TOL)
    assert not torch.allclose(ours, plain(attn, q, y, None))  # the dropout did drop something


def test_cross_attention_folds_with_the_same_values_and_gradients_as_projecting_first():
    attn, g = make_attention(3)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, S, KDIM, generator=g, dtype=torch.float64)
    bias = torch.randn(1, H, T, S, generator=g, dtype=torch.float64)
    bias[..., :2] = float("-inf")
    key_calls = []
    attn.k_proj.register_forward_hook(lambda *args: key_calls.append(1))
    weights = torch.linspace(-1, 1, B * T * D, dtype=torch.float64).view(B, T, D)
    results = []
    for fold in (True, False):
        attn.zero_grad(set_to_none=True)
        key_calls.clear()
        inputs = [t.clone().requires_grad_(True) for t in (x, y, bias)]
        with fast_paths(folded_cross_attention=fold):
            out = attn(*inputs)
        (out * weights).sum().backward()
        results.append([out.detach()] + [t.grad for t in inputs] + [p.grad for p in attn.parameters()])
        assert len(key_calls) == (0 if fold else 1)  # folded: no key projection ran
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **TOL)
