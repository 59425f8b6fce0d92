"""image_reliance: the targets' loss with each row's own image against a neighbour's image."""

from __future__ import annotations

import pytest
import torch

from helpers import randomize_, tiny_config
from ofa_cn.demo.image_reliance import image_reliance, target_nll
from ofa_cn.model.ofa import OFAModel

PAD = 1


def tiny_model():
    return randomize_(OFAModel.from_config(tiny_config()), seed=3).eval()


def batch(rows: int, seed: int = 0) -> dict:
    """Caption-like rows: bos + words + eos sources, random images, targets with the last row padded."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 20000, (rows, 7), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    target = torch.randint(4, 20000, (rows, 5), generator=g)
    target[:, -1] = 2
    target[-1, -2:] = torch.tensor([2, PAD])
    prev = torch.cat([torch.zeros(rows, 1, dtype=torch.long), target[:, :-1]], dim=1)
    prev[-1, -1] = PAD
    return {"net_input": {"src_tokens": src, "src_lengths": torch.full((rows,), 7),
                          "prev_output_tokens": prev, "patch_images": torch.randn(rows, 3, 48, 48, generator=g),
                          "patch_masks": torch.ones(rows, dtype=torch.bool)},
            "target": target}


def nll_by_hand(model, b) -> float:
    """Mean -log p(target) over the non-pad target tokens, from log_softmax and a gather."""
    with torch.no_grad():
        lprobs = torch.log_softmax(model(**b["net_input"])[0].double(), dim=-1)
    picked = -lprobs.gather(-1, b["target"][..., None]).squeeze(-1)
    keep = b["target"] != PAD
    return float(picked[keep].mean())


def test_other_is_the_loss_with_each_row_given_the_previous_rows_image():
    model, b = tiny_model(), batch(3)
    result = image_reliance(model, b, PAD)
    images = b["net_input"]["patch_images"]
    moved = {**b, "net_input": {**b["net_input"], "patch_images": images[[2, 0, 1]]}}
    assert result["own"] == pytest.approx(nll_by_hand(model, b), abs=1e-5)
    assert result["other"] == pytest.approx(nll_by_hand(model, moved), abs=1e-5)
    assert abs(result["other"] - result["own"]) > 1e-3  # this model's outputs do depend on the image
    assert result["rows"] == 3 and result["tokens"] == 3 * 5 - 1


def test_a_model_blind_to_the_image_loses_nothing_with_another_image():
    model, b = tiny_model(), batch(4, seed=1)
    with torch.no_grad():  # every image token becomes the same vector: the picture cannot matter
        model.encoder.image_proj.weight.zero_()
        model.encoder.image_proj.bias.zero_()
    result = image_reliance(model, b, PAD)
    assert result["other"] == pytest.approx(result["own"], abs=1e-6)
    assert result["own"] == pytest.approx(target_nll(model, b, PAD)[0], abs=1e-9)


def test_one_row_is_refused():
    with pytest.raises(ValueError, match="at least 2 rows"):
        image_reliance(tiny_model(), batch(1), PAD)


def test_reliance_table_rows_follow_the_tasks():
    from ofa_cn.demo.report import reliance_table

    pair = lambda own, other: {"own": own, "other": other}  # noqa: E731
    table = reliance_table({"untrained": {"caption": pair(10.4, 10.4), "ocr": pair(10.2, 10.25)},
                            "trained": {"caption": pair(0.6064, 0.6624), "ocr": pair(3.7348, 4.3882)}})
    lines = table.splitlines()
    assert lines[0] == "| task | untrained: own / other image | trained: own / other image |" and len(lines) == 4
    assert lines[2] == "| caption | 10.400 / 10.400 | 0.606 / 0.662 |"
    assert lines[3] == "| ocr | 10.200 / 10.250 | 3.735 / 4.388 |"


def test_rows_with_different_prompts_are_also_scored_with_the_previous_rows_prompt():
    model, b = tiny_model(), batch(3, seed=2)
    src = b["net_input"]["src_tokens"]
    src[0, -2:] = torch.tensor([2, PAD])  # row 0 is one token shorter: its padding moves with it
    b["net_input"]["src_lengths"] = torch.tensor([6, 7, 7])
    result = image_reliance(model, b, PAD)
    order = [2, 0, 1]
    moved = {**b, "net_input": {**b["net_input"], "src_tokens": src[order],
                                "src_lengths": b["net_input"]["src_lengths"][order]}}
    assert result["other_text"] == pytest.approx(nll_by_hand(model, moved), abs=1e-5)
    assert abs(result["other_text"] - result["own"]) > 1e-3


def test_rows_with_one_prompt_have_no_text_score():
    b = batch(3)
    b["net_input"]["src_tokens"][:] = b["net_input"]["src_tokens"][0]
    assert "other_text" not in image_reliance(tiny_model(), b, PAD)


def test_reliance_table_adds_a_row_for_another_rows_text():
    from ofa_cn.demo.report import reliance_table

    table = reliance_table({"a": {"refcoco": {"own": 2.0894, "other": 3.974, "other_text": 2.0901}},
                            "b": {"refcoco": {"own": 1.5, "other": 4.0, "other_text": 3.25}}})
    assert table.splitlines()[2:] == ["| refcoco | 2.089 / 3.974 | 1.500 / 4.000 |",
                                      "| refcoco, another row's text instead | 2.089 / 2.090 | 1.500 / 3.250 |"]
