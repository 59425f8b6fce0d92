"""The token embedding's sparse lookup gradients give the same gradients as dense ones, the
parameter's gradient is always dense (what optimizers, clipping and DDP expect), and the lookups'
rows are added into the output projection's gradient without copying it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers import randomize_, tiny_config
from ofa_cn.model.embedding import TokenEmbedding
from ofa_cn.model.fast_paths import fast_paths
from ofa_cn.model.ofa import OFAModel


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 30000, (3, 7), generator=g)
    src[1, -2:] = 1  # padding
    prev = torch.randint(4, 30000, (3, 5), generator=g)
    return {"src_tokens": src, "src_lengths": src.ne(1).sum(1), "patch_images": torch.randn(3, 3, 32, 32, generator=g),
            "patch_masks": torch.ones(3, dtype=torch.bool), "prev_output_tokens": prev}


def grads(model, features_only=False, dense=False, monkeypatch=None):
    model.zero_grad(set_to_none=True)
    if dense:
        monkeypatch.setattr(TokenEmbedding, "forward", nn.Embedding.forward)
    out, _ = model(**batch(), features_only=features_only)
    (out.float() ** 2).mean().backward()
    if dense:
        monkeypatch.undo()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("features_only", [False, True])
def test_sparse_lookups_give_the_dense_gradients(features_only, monkeypatch):
    model = randomize_(OFAModel.from_config(tiny_config(dropout=0.0)), seed=3).train()
    assert isinstance(model.encoder.embed_tokens, TokenEmbedding)
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight  # still tied
    sparse = grads(model, features_only)
    dense = grads(model, features_only, dense=True, monkeypatch=monkeypatch)
    assert sparse.keys() == dense.keys()
    weight = "encoder.embed_tokens.weight"
    assert not sparse[weight].is_sparse  # densified by the hook when no dense gradient arrived
    rows = sparse[weight].abs().sum(1).nonzero().squeeze(1)
    assert 0 < len(rows) < 30325 if features_only else len(rows) == 30325  # the projection reaches every row
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], atol=1e-6, rtol=1e-5, msg=name)


def test_a_deep_copy_gets_its_own_hook():
    model = randomize_(OFAModel.from_config(tiny_config(dropout=0.0)), seed=1).train()
    grads(model, features_only=True)
    copied = copy.deepcopy(model)  # deepcopy drops tensor hooks
    copied_grads = grads(copied, features_only=True)
    assert not copied_grads["encoder.embed_tokens.weight"].is_sparse


def test_evaluation_uses_the_plain_lookup():
    emb = TokenEmbedding(10, 4, padding_idx=1)
    tokens = torch.tensor([[2, 1, 5]])
    with torch.no_grad():
        assert torch.equal(emb(tokens), nn.functional.embedding(tokens, emb.weight, 1))
    assert getattr(emb.weight, "_ofa_densify_hook", None) is None  # no hook without autograd


def _copies_of_the_tied_gradient(model) -> int:
    """[V, D] copies during one training backward (autograd's out-of-place dense + sparse adds)."""
    from torch.profiler import ProfilerActivity, profile
    vocab, dim = model.decoder.output_projection.weight.shape
    model.zero_grad(set_to_none=True)
    out, _ = model(**batch())
    loss = (out.float() ** 2).mean()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    return sum(1 for e in prof.events() if e.name == "aten::copy_" and e.input_shapes
               and e.input_shapes[0] == [vocab, dim])


def test_the_lookups_rows_are_added_into_the_projection_gradient_in_place(monkeypatch):
    """The projection's dense gradient reaches the parameter last, so the lookups' rows need no
    copy of it; with the projection on the parameter itself, each lookup costs one copy."""
    model = randomize_(OFAModel.from_config(tiny_config(dropout=0.0)), seed=2).train()
    with_alias = grads(model)
    assert _copies_of_the_tied_gradient(model) == 0
    monkeypatch.setattr(TokenEmbedding, "projection_weight", lambda self: None)
    assert _copies_of_the_tied_gradient(model) == 2  # what the alias saves: V x D, twice
    without_alias = grads(model)
    assert with_alias.keys() == without_alias.keys()
    for name in with_alias:  # the same sums, added in another order
        torch.testing.assert_close(with_alias[name], without_alias[name], atol=1e-6, rtol=1e-5, msg=name)


def test_projection_weight_is_the_parameter_without_sparse_lookups():
    emb = TokenEmbedding(10, 4, padding_idx=1)
    assert emb.projection_weight() is not None
    with torch.no_grad():
        assert emb.projection_weight() is None  # nothing to order without autograd
    with fast_paths(sparse_embedding_grad=False):
        assert emb.projection_weight() is None
