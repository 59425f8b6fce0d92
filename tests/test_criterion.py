"""The label-smoothed criterion by hand: smoothing, constraint range, `conf` weights, and the
pretraining two-batch loss (loss_1 / tokens_1 + loss_2 / tokens_2)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from fairseq.data import Dictionary

from ofa_cn.train.criterion import AdjustLabelSmoothedCrossEntropyCriterion, label_smoothed_nll_loss

V = 7  # 4 specials + 3 symbols


def make_task():
    d = Dictionary()
    for s in ("a", "b", "c"):
        d.add_symbol(s)
    assert len(d) == V
    return SimpleNamespace(target_dictionary=d, source_dictionary=d)


class TableModel(torch.nn.Module):
    """logits[b, t] = table[prev_output_tokens[b, t]]; records the net_input it was given."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(V, V, generator=torch.Generator().manual_seed(0)))
        self.seen = []

    def forward(self, prev_output_tokens, **net_input):
        self.seen.append(net_input)
        return self.table[prev_output_tokens], {}


def criterion(eps=0.0, **kwargs):
    return AdjustLabelSmoothedCrossEntropyCriterion(make_task(), sentence_avg=False, label_smoothing=eps, **kwargs)


def batch(prev, target, conf=None):
    out = {"net_input": {"prev_output_tokens": torch.tensor(prev), "src_tokens": torch.zeros(len(prev), 1)},
           "target": torch.tensor(target), "ntokens": 0, "nsentences": len(prev)}
    if conf is not None:
        out["conf"] = torch.tensor(conf)
    return out


def test_smoothing_by_hand():
    lprobs = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    loss, nll = label_smoothed_nll_loss(lprobs, torch.tensor([2]), 0.3)
    eps_i = 0.3 / 3
    expected = (1 - 0.3 - eps_i) * -math.log(0.3) + eps_i * -sum(math.log(p) for p in (0.1, 0.2, 0.3, 0.4))
    assert abs(loss.item() - expected) < 1e-6 and abs(nll.item() + math.log(0.3)) < 1e-6
    # a constraint range (5, 7) smooths over the 4 specials and ids 5, 6 only
    lprobs = torch.log_softmax(torch.arange(8.0)[None], -1)
    loss, _ = label_smoothed_nll_loss(lprobs, torch.tensor([6]), 0.2, allowed=(5, 7))
    eps_i = 0.2 / 5 + 1e-6
    smooth = -(lprobs[0, :4].sum() + lprobs[0, 5:7].sum())
    assert abs(loss.item() - ((1 - 0.2 - eps_i) * -lprobs[0, 6] + eps_i * smooth).item()) < 1e-5


def test_conf_scales_each_sample():
    model = TableModel()
    prev, target = [[0, 4], [0, 5]], [[4, 2], [5, 2]]
    plain, size, _ = criterion()(model, batch(prev, target))
    weighted, _, _ = criterion()(model, batch(prev, target, conf=[2.0, 0.5]))
    lp = F.log_softmax(model.table[torch.tensor(prev)], -1)
    per_row = -lp.gather(-1, torch.tensor(target)[..., None]).squeeze(-1).sum(-1)  # [2]
    assert size == 4
    assert torch.allclose(plain, per_row.sum()) and torch.allclose(weighted, 2.0 * per_row[0] + 0.5 * per_row[1])


def test_two_batches_average_per_token_then_add():
    model = TableModel()
    first = batch([[0, 4, 5]], [[4, 5, 2]])
    second = batch([[0, 6], [0, 4]], [[6, 2], [4, 2]], conf=[2.0, 2.0])
    crit = criterion(sample_patch_num=3)
    loss_1, size_1, _ = criterion()(model, first)
    loss_2, size_2, _ = criterion()(model, second)
    model.seen.clear()
    loss, size, log = crit(model, [first, second])
    assert size == 1 and log["sample_size"] == 1 and (size_1, size_2) == (3, 4)
    assert torch.allclose(loss, loss_1 / 3 + loss_2 / 4)
    assert log["ntokens"] == 7 and log["nsentences"] == 3
    assert abs(float(log["loss_v1"]) - loss_1.item() / 3) < 1e-6
    # patches are sampled in the first batch's images only
    assert model.seen[0]["sample_patch_num"] == 3 and "sample_patch_num" not in model.seen[1]


def test_batch_losses_are_averaged_over_the_updates_that_had_them():
    """An update without extra samples logs no loss_v2; it must not dilute the average."""
    import math

    from fairseq import metrics

    logs = [{"loss": 3.0, "nll_loss": 3.0, "ntokens": 3, "nsentences": 1, "sample_size": 1,
             "loss_v1": 1.0 * math.log(2), "loss_v2": 2.0 * math.log(2)},
            {"loss": 1.0, "nll_loss": 1.0, "ntokens": 2, "nsentences": 1, "sample_size": 2}]
    with metrics.aggregate() as agg:
        AdjustLabelSmoothedCrossEntropyCriterion.reduce_metrics(logs)
    values = agg.get_smoothed_values()
    assert values["loss_v1"] == 1.0 and values["loss_v2"] == 2.0


def test_constraint_range_is_the_tasks():
    """One `constraint_range` for generation and the loss: the criterion's default interpolates the task's."""
    from omegaconf import OmegaConf

    from ofa_cn.train.criterion import AdjustLabelSmoothedCrossEntropyConfig

    cfg = OmegaConf.create({"task": {"constraint_range": "4,6"}, "optimization": {"sentence_avg": False},
                            "criterion": OmegaConf.structured(AdjustLabelSmoothedCrossEntropyConfig)})
    assert cfg.criterion.constraint_range == "4,6"
    assert criterion(constraint_range=cfg.criterion.constraint_range).allowed == (4, 6)
