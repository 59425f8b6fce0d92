"""ofa_cn/train/scst.py and scripts/build_cider_df.py: the SCST loss, the df cache, one criterion step."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from fairseq import metrics

import ofa_cn.train.scst  # noqa: F401  (registers scst_reward_criterion; the package may not import it yet)
from helpers import randomize_, tiny_config
from ofa_cn.metrics.caption import char_tokens
from ofa_cn.metrics.cider import build_document_frequency, cider_d
from ofa_cn.model.ofa import OFAModel
from ofa_cn.train.scst import ScstRewardCriterion, load_document_frequency, scst_loss
from ofa_cn.tasks.caption import CaptionConfig, CaptionTask

REPO = Path(__file__).resolve().parents[1]
SCST_ARGS = {"beam": 2, "max_len_b": 4}


# ---- the pure loss -------------------------------------------------------------------------------
def test_scst_loss_leave_one_out_by_hand():
    # 2 images x 3 samples. Image A rewards 1, 2, 3: baselines (2+3)/2, (1+3)/2, (1+2)/2
    # = 2.5, 2, 1.5 -> advantages -1.5, 0, 1.5. Image B rewards 0, 0, 6: baselines 3, 3, 0
    # -> advantages -3, -3, 6.
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])
    lprobs = torch.tensor([[-1.0, -2.0, -9.0],  # last token is padding
                           [-0.5, -0.5, -0.5],
                           [-1.0, -1.0, -1.0],
                           [-2.0, -9.0, -9.0],  # one real token
                           [-1.0, -1.0, -1.0],
                           [-0.5, -1.5, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    loss, ntokens = scst_loss(lprobs, mask, rewards, group_size=3)
    # per-sample sums of real-token lprobs: -3, -1.5, -3, -2, -3, -2
    expected = -((-3) * -1.5 + (-1.5) * 0 + (-3) * 1.5 + (-2) * -3 + (-3) * -3 + (-2) * 6)
    assert expected == pytest.approx(-3.0)
    assert loss.item() == pytest.approx(expected)
    assert int(ntokens) == 14
    loss.backward()
    advantages = torch.tensor([-1.5, 0, 1.5, -3, -3, 6])
    torch.testing.assert_close(lprobs.grad, -advantages[:, None] * mask)


def test_scst_loss_equal_rewards_give_zero_loss():
    lprobs = torch.randn(6, 5).log_softmax(-1)
    mask = torch.ones(6, 5, dtype=torch.bool)
    for value in (2.5, 3.7):  # 3.7 is not a binary fraction; the baseline is exact up to 1e-15
        loss, _ = scst_loss(lprobs, mask, torch.full((6,), value), group_size=3)
        assert loss.item() == pytest.approx(0.0, abs=1e-9)


def test_scst_loss_needs_two_samples_per_image():
    with pytest.raises(ValueError, match="beam >= 2"):
        scst_loss(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2), group_size=1)


# ---- the document-frequency cache ------------------------------------------------------------------
def load_script():
    spec = importlib.util.spec_from_file_location("build_cider_df", REPO / "scripts" / "build_cider_df.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_df_cache_round_trip_from_tsv(tmp_path):
    rows = [
        ("7", "not-an-image", "一只猫在睡觉.&&猫在床上"),
        ("8", "not-an-image", "两只狗在草地上跑"),
        ("7", "not-an-image", "一只白猫"),  # same image again: one document
    ]
    tsv = tmp_path / "train.tsv"
    tsv.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "df.json"
    assert load_script().main(["--refs", str(tsv), "--out", str(out)]) == 0

    df, ref_len = load_document_frequency(out)
    corpus = [[char_tokens(c) for c in ("一只猫在睡觉", "猫在床上", "一只白猫")], [char_tokens("两只狗在草地上跑")]]
    expected_df, expected_len = build_document_frequency(corpus)
    assert df == expected_df
    assert ref_len == pytest.approx(expected_len) == pytest.approx(math.log(2))
    assert json.loads(out.read_text(encoding="utf-8"))["num_images"] == 2

    # The JSONL form of the same references gives the same cache.
    jsonl = tmp_path / "refs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"image_id": i, "captions": c}, ensure_ascii=False) for i, c in [
        (7, ["一只猫在睡觉.", "猫在床上", "一只白猫"]), (8, ["两只狗在草地上跑"])]), encoding="utf-8")
    assert load_script().main(["--refs", str(jsonl), "--out", str(tmp_path / "df2.json")]) == 0
    assert load_document_frequency(tmp_path / "df2.json") == (expected_df, pytest.approx(expected_len))


def test_bad_cache_is_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"df": {}}', encoding="utf-8")
    with pytest.raises(ValueError, match="build_cider_df"):
        load_document_frequency(path)


# ---- one criterion step on a tiny model --------------------------------------------------------------
@pytest.fixture(scope="module")
def task():
    return CaptionTask.setup_task(CaptionConfig(scst=True, scst_args=json.dumps(SCST_ARGS), patch_image_size=32))


@pytest.fixture
def model(task):
    return randomize_(OFAModel.from_config(tiny_config(), task.dictionary), seed=1).train()


def make_batch(references: list[list[str]]) -> dict:
    g = torch.Generator().manual_seed(4)
    src = torch.randint(4, 30000, (2, 6), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    target = torch.tensor([[15, 16, 2], [17, 2, 1]])
    return {
        "id": torch.tensor([0, 1]), "nsentences": 2, "ntokens": 5,
        "net_input": {"src_tokens": src, "src_lengths": torch.tensor([6, 6]),
                      "patch_images": torch.randn(2, 3, 32, 32, generator=g),
                      "patch_masks": torch.tensor([True, True]),
                      "prev_output_tokens": torch.tensor([[0, 15, 16], [0, 17, 1]])},
        "target": target, "references": references, "image_ids": ["a", "b"],
    }


def decoded_beams(task, model, batch) -> list[list[str]]:
    """The samples SCST should draw, generated here independently (eval mode)."""
    model.eval()
    out = task.inference_step(task.build_generator([model], SCST_ARGS), [model], batch)
    model.train()
    return [[task.decode_text(h["tokens"]) for h in beams] for beams in out]


def test_criterion_step(task, model):
    batch = make_batch([["占位"], ["占位"]])
    beams = decoded_beams(task, model, batch)
    # References built from some hypotheses, so rewards differ inside each group.
    batch["references"] = [[beams[0][0]], [beams[1][1] + "红色"]]
    shapes = {k: tuple(v.shape) for k, v in batch["net_input"].items()}

    criterion = ScstRewardCriterion(task, sentence_avg=False)
    loss, sample_size, log = criterion(model, batch)
    loss.backward()

    assert model.training, "the criterion must give the model back in train mode"
    assert {k: tuple(v.shape) for k, v in batch["net_input"].items()} == shapes, "sample was modified"
    assert torch.isfinite(loss) and loss.item() != 0.0
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("decoder.layers") and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "no gradient reached the decoder"

    # Reward = CIDEr-D on characters, idf over the batch's two images, computed directly.
    image_refs = [[char_tokens(r) for r in refs] for refs in batch["references"]]
    df, ref_len = build_document_frequency(image_refs)
    hyps = [char_tokens(h) for image in beams for h in image]
    expected = cider_d(hyps, [image_refs[i // 2] for i in range(4)], df, ref_len)
    assert expected[0] != expected[1] and expected[2] != expected[3]
    assert log["score"] == pytest.approx(sum(expected))
    assert log["nsentences"] == 4 and sample_size == log["ntokens"] > 0
    with metrics.aggregate() as agg:
        ScstRewardCriterion.reduce_metrics([log])
        assert agg.get_smoothed_values()["score"] == pytest.approx(sum(expected) / 4, abs=1e-3)


def test_criterion_equal_rewards_give_zero_loss(task, model):
    # Both images share their references: every n-gram then has idf log(2/2) = 0 in corpus
    # mode, so every reward is 0 and so is every advantage.
    batch = make_batch([["一只猫在睡觉"], ["一只猫在睡觉"]])
    loss, _, log = ScstRewardCriterion(task, sentence_avg=True)(model, batch)
    assert log["score"] == 0.0 and loss.item() == 0.0
    assert log["sample_size"] == 4
    loss.backward()  # still a valid graph
