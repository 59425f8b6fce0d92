"""The one collate: right padding, lengths, token counts, extras, and skipped samples."""

from __future__ import annotations

import torch

from ofa_cn.data.collate import batch_key, collate

PAD, EOS = 1, 2


def _sample(index, source, answer, size=4, **extras):
    return {
        "id": index,
        "source": torch.tensor([0] + source + [EOS]),
        "target": torch.tensor(answer + [EOS]),
        "prev_output_tokens": torch.tensor([0] + answer),
        "patch_image": torch.full((3, size, size), float(index)),
        "patch_mask": True,
        **extras,
    }


def test_padding_lengths_and_counts():
    batch = collate([_sample(7, [5, 6, 7], [9]), _sample(3, [8], [10, 11, 12])], PAD, EOS)
    assert batch["id"].tolist() == [7, 3]
    assert batch["nsentences"] == 2
    assert batch["ntokens"] == 2 + 4  # non-pad target tokens, eos included
    net = batch["net_input"]
    assert net["src_tokens"].tolist() == [[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]]
    assert net["src_lengths"].tolist() == [5, 3]
    assert net["prev_output_tokens"].tolist() == [[0, 9, 1, 1], [0, 10, 11, 12]]
    assert batch["target"].tolist() == [[9, 2, 1, 1], [10, 11, 12, 2]]
    assert net["patch_images"].shape == (2, 3, 4, 4) and net["patch_images"][1].eq(3.0).all()
    assert net["patch_masks"].dtype == torch.bool and net["patch_masks"].tolist() == [True, True]
    assert set(batch) == {"id", "nsentences", "ntokens", "net_input", "target"}


def test_golden_caption_batch(golden_inputs):
    # The original's caption batch: captions "一个人" and "一个穿红色衣服的人站在草地上".
    answers = [[675, 706, 786], [675, 706, 4963, 5277, 5686, 6136, 3306, 4642, 786, 4995, 1766, 5774, 1769, 681]]
    prompt = [1749, 4279, 2993, 6839, 753, 788, 724, 1083, 2163, 140]
    batch = collate([_sample(i, prompt, a) for i, a in enumerate(answers)], PAD, EOS)
    assert torch.equal(batch["net_input"]["src_tokens"], golden_inputs["caption_src_tokens"])
    assert torch.equal(batch["net_input"]["src_lengths"], golden_inputs["caption_src_lengths"])
    assert torch.equal(batch["net_input"]["prev_output_tokens"], golden_inputs["caption_prev_output_tokens"])
    assert torch.equal(batch["target"], golden_inputs["caption_target"])


def test_extras_are_stacked_or_listed():
    samples = [
        _sample(0, [5], [9], uniq_id="a", w_resize_ratio=torch.tensor(0.5), region_coord=torch.tensor([1.0, 2, 3, 4]),
                references=["x", "y"]),
        _sample(1, [5], [9], uniq_id="b", w_resize_ratio=torch.tensor(2.0), region_coord=torch.tensor([5.0, 6, 7, 8]),
                references=["z"]),
    ]
    batch = collate(samples, PAD, EOS, extras=("uniq_id", "w_resize_ratio", "region_coord", "references"))
    assert batch["uniq_ids"] == ["a", "b"]
    assert batch["w_resize_ratios"].tolist() == [0.5, 2.0]
    assert batch["region_coords"].shape == (2, 4) and batch["region_coords"][1].tolist() == [5, 6, 7, 8]
    assert batch["references"] == [["x", "y"], ["z"]]
    assert batch_key("image_id") == "image_ids" and batch_key("references") == "references"


def test_skipped_samples_are_dropped():
    batch = collate([None, _sample(4, [5], [9]), None], PAD, EOS)
    assert batch["id"].tolist() == [4] and batch["nsentences"] == 1
    assert collate([None, None], PAD, EOS) == {}
    assert collate([], PAD, EOS) == {}


def test_samples_without_targets():
    sample = _sample(0, [5, 6], [9])
    del sample["target"], sample["prev_output_tokens"]
    batch = collate([sample], PAD, EOS)
    assert batch["target"] is None and batch["ntokens"] == 0
    assert "prev_output_tokens" not in batch["net_input"]
