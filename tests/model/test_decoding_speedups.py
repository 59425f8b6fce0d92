"""The decoder's speed-ups (CrossMemory, incremental self bias) compute what the plain path computes."""

from __future__ import annotations

import contextlib

import pytest
import torch

from helpers import randomize_, tiny_config
from ofa_cn.generate import build_generator, generate
from ofa_cn.model.decoder import CrossMemory
from ofa_cn.model.fast_paths import fast_paths
from ofa_cn.model.ofa import OFAModel
from ofa_cn.tokenizer import build_dictionary


@contextlib.contextmanager
def plain(model):
    """No speed-ups: eager attention, cross K/V recomputed each step, full self bias each step."""
    with fast_paths(sdpa=False, cross_memory=False, incremental_self_bias=False):
        yield


def tiny_model():
    return randomize_(OFAModel.from_config(tiny_config()), seed=2).eval()


def inputs(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 30000, (batch, 6), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    src[1, -2:] = torch.tensor([2, 1])  # one padded row: the cross bias masks it
    return src, torch.randn(batch, 3, 48, 48, generator=g)


def memory(rows):
    kv = [(torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 4, 5) + 10 * i, torch.randn(3, 2, 4, 5))
          for i in range(2)]
    return CrossMemory(kv=kv, pos_k=torch.randn(1, 2, 4, 5), pad=torch.tensor([[False] * 4, [False, False, True, True],
                                                                               [False] * 4]),
                       rows=None if rows is None else torch.tensor(rows))


def test_regroup_follows_beam_layouts():
    m = memory([0, 0, 1, 1, 2, 2])  # three sentences, two beams each
    original = [kv[1].clone() for kv in m.kv]
    assert m.regroup() == 2 and m.kv[0][0].size(0) == 3
    m.reorder(torch.tensor([1, 1, 2, 3, 5, 4]))  # beams move within their sentence
    assert m.regroup() == 2 and m.kv[0][0].size(0) == 3
    m.reorder(torch.tensor([0, 1, 4, 5]))  # sentence 1 finished
    assert m.regroup() == 2
    assert m.kv[0][0][:, 0, 0, 0].tolist() == [0.0, 2.0] and m.pad[1].tolist() == [False] * 4
    torch.testing.assert_close(m.kv[1][1], original[1][[0, 2]], rtol=0, atol=0)
    assert m.regroup(allow_groups=False) == 1 and m.kv[0][0][:, 0, 0, 0].tolist() == [0.0, 0.0, 2.0, 2.0]


def test_regroup_falls_back_to_one_copy_per_row():
    m = memory([2, 0, 0, 1])  # not grouped: each row gets its own copy
    assert m.regroup() == 1 and m.rows is None
    assert m.kv[0][0][:, 0, 0, 0].tolist() == [2.0, 0.0, 0.0, 1.0]
    assert m.pad.tolist()[3] == [False, False, True, True]
    assert memory(None).regroup() == 1


@torch.no_grad()
def test_step_by_step_with_repeated_rows_matches_the_plain_path():
    """Rows repeated and shuffled within sentences as beam search does, one sentence dropped."""
    model = tiny_model()
    src, images = inputs()
    beam = 2
    enc = model.encoder(src, patch_images=images)
    prev = torch.randint(4, 30000, (3 * beam, 7), generator=torch.Generator().manual_seed(1))
    prev[:, 0] = 0
    orders = [torch.tensor([1, 0, 2, 3, 5, 4]), torch.tensor([0, 0, 3, 2, 4, 5]), torch.tensor([0, 1, 4, 5])]

    def run():
        out, state = [], {}
        rows = prev
        e = enc.index_select(torch.arange(3).repeat_interleave(beam))
        for t in range(prev.size(1)):
            if 2 <= t <= 4:  # reorder as fairseq does: cache, encoder output and the prefix
                order = orders[t - 2]
                model.decoder.reorder_cache(state["ofa_decoder_cache"], order)
                e, rows = e.index_select(order), rows.index_select(0, order)
            out.append(model.decoder(rows[:, : t + 1], e, incremental_state=state)[0])
        return out

    fast = run()
    with plain(model):
        reference = run()
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_beam_search_matches_the_plain_path():
    model = tiny_model()
    src, images = inputs()
    sample = {"net_input": {"src_tokens": src, "src_lengths": None, "patch_images": images}}
    generator = build_generator([model], build_dictionary(), beam=4, max_len_b=8, min_len=2, no_repeat_ngram_size=3)
    fast = generate(generator, sample)
    with plain(model):
        reference = generate(generator, sample)
    for row_fast, row_ref in zip(fast, reference):
        for a, b in zip(row_fast, row_ref):
            assert a["tokens"].tolist() == b["tokens"].tolist()
            torch.testing.assert_close(a["positional_scores"], b["positional_scores"], atol=1e-5, rtol=0)


def test_onednn_linear_modes_agree_with_torch_linear():
    """Linear's inference paths (oneDNN with the weight as is or packed; W x^T for few rows) give
    nn.Linear's result up to rounding, for encoder-sized and decoding-step-sized inputs; the packed
    copy follows an in-place change of the weight."""
    from ofa_cn.model.linear import Linear

    torch.manual_seed(0)
    layer = Linear(40, 24)
    with torch.no_grad():
        for rows in (1, 5, 300):
            x = torch.randn(rows, 2, 40)
            expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
            for mode in ("packed", "plain", "off"):
                with fast_paths(onednn_linear=mode):
                    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5, msg=f"{mode}, {rows} rows")
        with fast_paths(onednn_linear="packed"):
            layer.weight.mul_(2)  # e.g. load_state_dict copies in place
            torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias),
                                       atol=1e-5, rtol=1e-5)


def test_a_linear_with_a_packed_weight_can_be_copied_and_saved(tmp_path):
    """After CPU inference has packed the output projection, deepcopy (fairseq's EMA) and
    torch.save of the module still work, and the copy repacks its own weight."""
    import copy

    from ofa_cn.model.linear import Linear

    layer = Linear(8, 5)
    layer.pack_weight = True
    x = torch.randn(3, 8)
    with torch.no_grad():
        expected = layer(x)
    assert "_onednn_packed" in layer.__dict__
    copied = copy.deepcopy(layer)
    torch.save(layer, tmp_path / "layer.pt")
    with torch.no_grad():
        torch.testing.assert_close(copied(x), expected)
        copied.weight.mul_(2)  # its own weight, its own packed copy
        torch.testing.assert_close(layer(x), expected)


@torch.no_grad()
def test_a_decoding_step_reads_packed_copies_of_its_weights():
    """On a CPU the decoder layers' step products (self-attention, cross queries and output, FFN)
    and the output projection use oneDNN-packed weights; the cross keys/values (once per sentence)
    and the encoder keep theirs plain; the beams are torch's BLAS path's."""
    from ofa_cn.model.linear import Linear, _onednn_linear_available

    if not _onednn_linear_available():
        pytest.skip("this torch build has no oneDNN linear ops")
    model = tiny_model()
    src, images = inputs()
    sample = {"net_input": {"src_tokens": src, "src_lengths": None, "patch_images": images}}
    generator = build_generator([model], build_dictionary(), beam=3, max_len_b=6, min_len=2)
    packed = generate(generator, sample)
    layer = model.decoder.layers[0]
    stepped = [layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.q_proj, layer.self_attn.out_proj,
               layer.encoder_attn.q_proj, layer.encoder_attn.out_proj, layer.fc1, layer.fc2,
               model.decoder.output_projection]
    assert all("_onednn_packed" in m.__dict__ for m in stepped)
    plain_ones = [layer.encoder_attn.k_proj, layer.encoder_attn.v_proj,
                  *(m for m in model.encoder.modules() if isinstance(m, Linear))]
    assert not any(m.pack_weight or "_onednn_packed" in m.__dict__ for m in plain_ones)
    with fast_paths(onednn_linear="off"):
        reference = generate(generator, sample)
    for row_packed, row_ref in zip(packed, reference):
        for a, b in zip(row_packed, row_ref):
            assert a["tokens"].tolist() == b["tokens"].tolist()
            torch.testing.assert_close(a["positional_scores"], b["positional_scores"], atol=1e-5, rtol=0)
