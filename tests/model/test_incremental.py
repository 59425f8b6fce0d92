"""Properties of the model on a tiny config with every dimension different."""

from __future__ import annotations

import torch

from helpers import randomize_, tiny_config
from ofa_cn.generate import build_generator, generate
from ofa_cn.model.ofa import OFAModel
from ofa_cn.tokenizer import build_dictionary


def tiny_model(**overrides):
    return randomize_(OFAModel.from_config(tiny_config(**overrides)), seed=1).eval()


def inputs(batch=2, size=48, text=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 30000, (batch, text), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    if batch > 1:
        src[1, -2:] = torch.tensor([2, 1])  # one padded row
    images = torch.randn(batch, 3, size, size, generator=g)
    return src, images


@torch.no_grad()
def test_incremental_equals_full_decoding():
    model = tiny_model()
    src, images = inputs()
    prev = torch.randint(4, 30000, (2, 9), generator=torch.Generator().manual_seed(3))
    prev[:, 0] = 0
    full, _ = model(src, None, prev, patch_images=images)
    enc = model.encoder(src, patch_images=images)
    state = {}
    steps = [model.decoder(prev[:, : t + 1], enc, incremental_state=state)[0] for t in range(prev.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_batch_of_identical_rows_equals_one_row():
    model = tiny_model()
    src, images = inputs(batch=1)
    prev = torch.tensor([[0, 5, 6, 7]])
    one, _ = model(src, None, prev, patch_images=images)
    two, _ = model(src.repeat(2, 1), None, prev.repeat(2, 1), patch_images=images.repeat(2, 1, 1, 1))
    torch.testing.assert_close(two[0], one[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(two[1], one[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_does_not_change_a_row():
    model = tiny_model()
    src, images = inputs(batch=1)
    prev = torch.tensor([[0, 5, 6, 7]])
    alone, _ = model(src, None, prev, patch_images=images)
    padded_src = torch.cat([src, torch.ones(1, 3, dtype=torch.long)], dim=1)
    batch_src = torch.cat([padded_src, torch.randint(4, 300, (1, padded_src.size(1)))])
    out, _ = model(batch_src, None, prev.repeat(2, 1), patch_images=images.repeat(2, 1, 1, 1))
    torch.testing.assert_close(out[0], alone[0], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_generation_with_cache_equals_greedy_full_recompute():
    """Beam 1 through fairseq's generator (cached, incremental) = argmax of full forwards."""
    model = tiny_model()
    src, images = inputs()
    gen = build_generator([model], build_dictionary(), beam=1, max_len_b=6, min_len=6)
    hyps = generate(gen, {"net_input": {"src_tokens": src, "src_lengths": None, "patch_images": images}})
    for row in range(2):
        prev = torch.tensor([[0]])
        for _ in range(6):
            logits, _ = model(src[row:row + 1], None, prev, patch_images=images[row:row + 1])
            lp = torch.log_softmax(logits[0, -1].float(), -1)
            lp[[1, 2]] = -float("inf")  # pad never; eos not before min_len
            prev = torch.cat([prev, lp.argmax().view(1, 1)], dim=1)
        assert hyps[row][0]["tokens"][:6].tolist() == prev[0, 1:].tolist()


def test_flags_change_the_keys():
    keys = set(OFAModel.from_config(tiny_config(scale_attn=False, scale_heads=False, scale_resids=True)).state_dict())
    assert "encoder.layers.0.attn_ln.weight" not in keys and "decoder.layers.0.self_attn.c_attn" not in keys
    assert "encoder.layers.0.w_resid" in keys
