"""MultiheadAttention: the CPU training path (eager, for the bias gradient) computes what SDPA does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ofa_cn.model.attention import MultiheadAttention

B, T, S, D, H, KDIM = 2, 5, 7, 24, 3, 20


def sdpa_reference(attn: MultiheadAttention, x, y, bias):
    """The layer's formula written out with F.scaled_dot_product_attention (its math path here)."""
    split = lambda t: t.view(t.size(0), t.size(1), H, D // H).transpose(1, 2)  # noqa: E731
    q, k, v = split(F.linear(x, attn.q_proj.weight, attn.q_proj.bias)), \
        split(F.linear(y, attn.k_proj.weight, attn.k_proj.bias)), split(F.linear(y, attn.v_proj.weight, attn.v_proj.bias))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scaling)  # [B, H, T, d]
    out = out * attn.c_attn.view(1, -1, 1, 1)
    return F.linear(out.transpose(1, 2).reshape(B, T, D), attn.out_proj.weight, attn.out_proj.bias)


def test_training_with_a_learned_bias_matches_sdpa_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    attn = MultiheadAttention(D, H, kdim=KDIM)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    x, y = torch.randn(B, T, D, generator=g), torch.randn(B, S, KDIM, generator=g)
    bias = torch.randn(1, H, T, S, generator=g)
    bias[..., -2:] = float("-inf")  # masked keys, as padding
    results = []
    for run in (lambda b: attn(x, y, b), lambda b: sdpa_reference(attn, x, y, b)):
        attn.zero_grad(set_to_none=True)
        b = bias.clone().requires_grad_(True)
        out = run(b)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out.detach(), b.grad] + [p.grad for p in attn.parameters()])
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert results[0][1].abs().sum() > 0 and results[0][1][..., -2:].abs().max() == 0  # a real bias gradient


def test_sdpa_is_skipped_only_when_the_cpu_bias_needs_a_gradient(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    attn = MultiheadAttention(D, H, kdim=KDIM)
    x, y, bias = torch.randn(B, T, D), torch.randn(B, S, KDIM), torch.randn(1, H, T, S)
    attn(x, y, bias.requires_grad_(True))
    assert calls == []  # eager: the bias gradient without SDPA's unfused fallback
    attn(x, y, bias.detach())
    with torch.no_grad():
        attn(x, y, bias)
    assert calls == [1, 1]


@pytest.mark.parametrize("onednn_backward", [True, False])
def test_linear_training_path_matches_torch_linear_values_and_gradients(monkeypatch, onednn_backward):
    """Both backward choices (oneDNN's products, or torch's mm: `onednn_backward`) give torch's gradients."""
    import dataclasses

    from ofa_cn.model import fast_paths as switchboard
    from ofa_cn.model import linear

    switched = dataclasses.replace(switchboard.get_fast_paths(), onednn_backward=onednn_backward)
    monkeypatch.setattr(switchboard, "_current", switched)  # restored after the test

    calls = []
    apply = linear._OneDNNLinearFunction.apply
    monkeypatch.setattr(linear._OneDNNLinearFunction, "apply", lambda *a: calls.append(1) or apply(*a))
    g = torch.Generator().manual_seed(1)
    # in > out and in < out take different weight-gradient products; the upstream gradient is
    # once a transposed view (backward makes it contiguous).
    for (n_in, n_out), bias in [((13, 11), True), ((13, 11), False), ((11, 13), True), ((11, 13), False)]:
        layer = linear.Linear(n_in, n_out, bias=bias)
        x = torch.randn(3, 4, n_in, generator=g)
        upstream = torch.randn(4, 3, n_out, generator=g).transpose(0, 1) if bias else torch.randn(3, 4, n_out, generator=g)
        results = []
        for forward in (layer, lambda t: F.linear(t, layer.weight, layer.bias)):
            layer.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_(True)
            out = forward(xi)
            out.backward(upstream)
            results.append([out.detach(), xi.grad] + [p.grad for p in layer.parameters()])
        for ours, theirs in zip(*results):
            assert ours.abs().sum() > 0
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    if linear._onednn_linear_available():
        assert calls == [1, 1, 1, 1]  # the oneDNN forward ran (and its backward gave torch's gradients)


def test_linear_training_path_skips_the_gradients_nobody_needs():
    from ofa_cn.model import linear

    layer = linear.Linear(7, 5)
    layer.weight.requires_grad_(False)
    x = torch.randn(6, 7, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(6, 7), rtol=1e-5, atol=1e-6)
    assert layer.weight.grad is None and layer.bias.grad is not None
    x = torch.randn(6, 7)
    layer.weight.requires_grad_(True)
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, x.sum(0).expand(5, 7), rtol=1e-5, atol=1e-6)
