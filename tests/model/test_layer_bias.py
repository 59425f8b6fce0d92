"""layer_bias: the encoder's per-layer attention bias equals the written-out sum, gradients included."""

from __future__ import annotations

import pytest
import torch

from ofa_cn.model.encoder import layer_bias

H, N, L = 3, 6, 4  # heads, image patches, text tokens
S = N + L


def written_out(abs_bias, token_table, text_bucket, image_table, image_bucket):
    """abs + a relative tensor that is zero off the two diagonal blocks (the original's layout)."""
    rows = max(abs_bias.size(0), 1 if image_bucket is None else image_bucket.size(0))
    n = 0 if image_bucket is None else N
    rel = torch.zeros(rows, H, S if n else L, S if n else L)
    rel[:, :, n:, n:] = token_table[text_bucket].permute(2, 0, 1)
    if image_bucket is not None:
        rel[:, :, :n, :n] = image_table[image_bucket].permute(0, 3, 1, 2)
    return abs_bias + rel


@pytest.mark.parametrize("abs_rows,image_rows", [(1, 1), (2, 1), (1, 2), (2, 2), (1, None)])
def test_layer_bias_equals_the_written_out_sum(abs_rows, image_rows):
    g = torch.Generator().manual_seed(abs_rows * 10 + (image_rows or 0))
    size = S if image_rows else L
    abs_bias = torch.randn(abs_rows, H, size, size, generator=g)
    abs_bias[..., -1] = float("-inf")  # a padded key
    token_table, image_table = torch.randn(7, H, generator=g), torch.randn(11, H, generator=g)
    text_bucket = torch.randint(0, 7, (L, L), generator=g)
    image_bucket = None if image_rows is None else torch.randint(0, 11, (image_rows, N, N), generator=g)
    upstream = torch.randn(max(abs_rows, image_rows or 1), H, size, size, generator=g)
    results = []
    for f in (layer_bias, written_out):
        inputs = [t.clone().requires_grad_(True) for t in (abs_bias, token_table, image_table)]
        out = f(inputs[0], inputs[1], text_bucket, inputs[2], image_bucket)
        out.masked_fill(out.isinf(), 0).backward(upstream)
        results.append([out.detach()] + [t.grad for t in inputs])
    for ours, theirs in zip(*results):
        assert (ours is None and theirs is None) or torch.equal(ours, theirs)  # the same additions: bit for bit
    assert results[0][2].abs().sum() > 0 and (image_rows is None or results[0][3].abs().sum() > 0)
