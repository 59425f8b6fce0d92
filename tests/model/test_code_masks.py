"""Teacher-forced decoding of image-code targets (`code_masks`, the original's image infilling).

The expected values are recomputed here from the formulas, with the model's parameters and its
decoder layers (which the golden tests cover), so a swap of any image-code variant for its text
counterpart (positions, position norm, relative tables, embedding norm) shows up.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import randomize_, tiny_config
from ofa_cn.model.ofa import OFAModel

CODE_IDS = (21133, 29325)  # <code_0> .. <code_8191>
PAD = 1


def tiny_model(**overrides):
    return randomize_(OFAModel.from_config(tiny_config(**overrides)), seed=2).eval()


def inputs(batch: int, tgt: int, seed: int = 0):
    """Sources (row 1 padded), images, and bos + code-id targets (the last row padded)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 20000, (batch, 6), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    src[1, -2:] = torch.tensor([2, PAD])
    images = torch.randn(batch, 3, 48, 48, generator=g)
    prev = torch.randint(*CODE_IDS, (batch, tgt), generator=g)
    prev[:, 0] = 0
    prev[-1, -3:] = PAD
    return src, images, prev


def layer_norm(x, ln):
    return F.layer_norm(x, (x.size(-1),), ln.weight, ln.bias, eps=1e-5)


def linear(x, lin):
    return x @ lin.weight.T + lin.bias


def reference_code_logits(model, src, images, prev, positions="image", pos_norm="image_pos_ln",
                          rel="image", embed_norm="code_layernorm_embedding"):
    """Logits of all-image-code rows from the formulas; the keyword arguments pick (wrong) variants."""
    dec, cfg = model.decoder, model.cfg
    enc = model.encoder(src, patch_images=images)
    B, T = prev.shape
    H = cfg.decoder_attention_heads
    d = cfg.decoder_embed_dim // H
    scaling = (d * cfg.attn_scale_factor) ** -0.5
    idx = dec.image_position_idx[:T]
    if positions == "image":
        raw = dec.embed_image_positions.weight[idx]  # [T, D]
    else:
        raw = dec.embed_positions.weight[:T]
    p = layer_norm(raw, getattr(dec, pos_norm))

    def heads(x):  # [..., N, D] -> list of H [..., N, d]
        return [x[..., h * d:(h + 1) * d] for h in range(H)]

    q_self, k_self = heads(linear(p, dec.self_pos_q_linear)), heads(linear(p, dec.self_pos_k_linear))
    abs_self = torch.stack([(q * scaling) @ k.T for q, k in zip(q_self, k_self)])  # [H, T, T]
    k_enc = heads(linear(enc.position_embeddings, dec.cross_pos_k_linear))  # H x [B|1, S, d]
    q_cross = heads(linear(p, dec.cross_pos_q_linear))
    cross = torch.stack([(q * scaling) @ k.transpose(-1, -2) for q, k in zip(q_cross, k_enc)], dim=1)
    cross = cross.expand(B, -1, -1, -1).masked_fill(enc.padding_mask[:, None, None, :], float("-inf"))

    blocked = torch.zeros(B, 1, T, T, dtype=torch.bool)
    for b in range(B):
        for i in range(T):
            for j in range(T):
                blocked[b, 0, i, j] = j > i or prev[b, j] == PAD

    x = dec.embed_tokens.weight[prev]  # [B, T, D]
    if not cfg.disable_entangle:
        x = x + raw
    x = layer_norm(x, getattr(dec, embed_norm))
    for i, layer in enumerate(dec.layers):
        if rel == "image":
            table, bucket = dec.image_rel_pos_table_list[i].weight, dec.image_rp_bucket[idx[:, None], idx[None, :]]
        else:
            table, bucket = dec.token_rel_pos_table_list[i].weight, dec.token_rp_bucket[:T, :T]
        bias = (abs_self + table[bucket].permute(2, 0, 1))[None].masked_fill(blocked, float("-inf"))
        x, _ = layer(x, None, bias, layer.encoder_attn.project_kv(enc.out), cross)
    return layer_norm(x, dec.layer_norm) @ dec.embed_tokens.weight.T


@torch.no_grad()
def test_no_code_rows_is_the_text_path():
    model = tiny_model()
    src, images, prev = inputs(batch=3, tgt=9)
    text, _ = model(src, None, prev, patch_images=images)
    none, _ = model(src, None, prev, patch_images=images, code_masks=None)
    false, _ = model(src, None, prev, patch_images=images, code_masks=torch.zeros(3, dtype=torch.bool))
    assert torch.equal(none, text) and torch.equal(false, text)
    # and the code path is a different computation
    true, _ = model(src, None, prev, patch_images=images, code_masks=torch.ones(3, dtype=torch.bool))
    assert (true - text).abs().max() > 1e-2


@pytest.mark.parametrize("disable_entangle", [True, False])
@torch.no_grad()
def test_code_rows_follow_the_formulas(disable_entangle):
    model = tiny_model(disable_entangle=disable_entangle)
    src, images, prev = inputs(batch=3, tgt=11)
    out, _ = model(src, None, prev, patch_images=images, code_masks=torch.ones(3, dtype=torch.bool))
    expected = reference_code_logits(model, src, images, prev)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # the reference tells each image variant from its text counterpart
    for wrong in (dict(positions="text"), dict(pos_norm="pos_ln"), dict(rel="token"),
                  dict(embed_norm="layernorm_embedding")):
        assert (out - reference_code_logits(model, src, images, prev, **wrong)).abs().max() > 1e-3, wrong


@torch.no_grad()
def test_mixed_batch_equals_separate_batches():
    model = tiny_model(disable_entangle=False)
    src, images, prev = inputs(batch=4, tgt=10)
    codes = torch.tensor([True, False, False, True])  # rows 1 (padded source) and 3 (padded target) differ
    mixed, _ = model(src, None, prev, patch_images=images, code_masks=codes)
    code_part, _ = model(src[codes], None, prev[codes], patch_images=images[codes],
                         code_masks=torch.ones(2, dtype=torch.bool))
    text_part, _ = model(src[~codes], None, prev[~codes], patch_images=images[~codes])
    torch.testing.assert_close(mixed[codes], code_part, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mixed[~codes], text_part, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_incremental_decoding_of_code_rows_is_refused():
    model = tiny_model()
    src, images, prev = inputs(batch=2, tgt=4)
    enc = model.encoder(src, patch_images=images)
    with pytest.raises(NotImplementedError, match="code_masks"):
        model.decoder(prev[:, :1], enc, incremental_state={}, code_masks=torch.tensor([False, True]))
    # all-False is the ordinary text decoding
    state, plain = {}, {}
    step = model.decoder(prev[:, :1], enc, incremental_state=state, code_masks=torch.zeros(2, dtype=torch.bool))[0]
    assert torch.equal(step, model.decoder(prev[:, :1], enc, incremental_state=plain)[0])


@torch.no_grad()
def test_bad_code_masks_say_what_is_wrong():
    model = tiny_model(code_image_size=32)  # code grid 4 x 4: at most bos + 16 code positions
    src, images, prev = inputs(batch=2, tgt=18)
    enc = model.encoder(src, patch_images=images)
    with pytest.raises(ValueError, match="at most 17 positions"):
        model.decoder(prev, enc, code_masks=torch.ones(2, dtype=torch.bool))
    model.decoder(prev[:, :17], enc, code_masks=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B\] = \[2\] bool"):
        model.decoder(prev, enc, code_masks=torch.ones(2))
    with pytest.raises(ValueError, match=r"\[B\] = \[2\] bool"):
        model.decoder(prev, enc, code_masks=torch.ones(3, dtype=torch.bool))
