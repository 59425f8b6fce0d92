"""Label-smoothed cross entropy as OFA trains with it: a pure function plus the fairseq criterion.

Per target token y, with smoothing eps over the A allowed ids (all V, or the specials plus a
`constraint_range`):

    loss = (1 - eps - eps_i) * nll + eps_i * sum_{v allowed} -log p(v),   eps_i = eps / (A - 1)

so the target gets weight 1 - eps and every other allowed id eps / (A - 1). With
`drop_worst_ratio` r, after `drop_worst_after` updates only the (1 - r) smallest token losses
of a batch count.

Pretraining (`unify_task`) adds two things, as the original: a batch may carry `conf` [B], a
weight that multiplies each sample's log-probabilities (so its loss); and a training batch may
come as a list of two batches, the image-text pairs and the extra tasks (text and image
infilling, detection), whose losses are averaged per token separately and added:

    loss = loss_1 / tokens_1 + loss_2 / tokens_2      (sample size 1)

with `sample_patch_num` random image patches kept in the first batch's images.
"""


import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from ..generate import mask_outside_range, parse_constraint_range

CONSTRAINED_EPS = 1e-6  # the original adds this to eps_i when a range is set


def label_smoothed_nll_loss(lprobs: torch.Tensor, target: torch.Tensor, epsilon: float,
                            allowed: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token smoothed loss and nll.

    Args:
        lprobs: [N, V] log-probabilities (-inf outside the allowed ids).
        target: [N] ids.
        epsilon: label smoothing.
        allowed: (start, end) of a constraint range (ids 0..3 stay allowed), or None for all V.
    Returns:
        loss [N], nll [N]
    """
    nll = -lprobs.gather(-1, target[:, None]).squeeze(-1)
    if allowed is None:
        n_allowed = lprobs.size(-1)
        smooth = -lprobs.sum(-1)
        eps_i = epsilon / (n_allowed - 1)
    else:
        start, end = allowed
        n_allowed = 4 + end - start
        smooth = -(lprobs[:, :4].sum(-1) + lprobs[:, start:end].sum(-1))
        eps_i = epsilon / (n_allowed - 1) + CONSTRAINED_EPS
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss, nll


def drop_worst(loss: torch.Tensor, nll: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the int(n * (1 - ratio)) smallest token losses (and their nll)."""
    keep = int(loss.numel() * (1 - ratio))
    loss, idx = torch.topk(loss, k=keep, largest=False)
    return loss, nll[idx]


@dataclass
class AdjustLabelSmoothedCrossEntropyConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.0, metadata={"help": "eps: weight moved from the target to the other ids"})
    report_accuracy: bool = field(default=False, metadata={"help": "log token accuracy"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "do not score the first N target positions"})
    ignore_eos: bool = field(default=False, metadata={"help": "do not score the eos of each target"})
    sentence_avg: bool = II("optimization.sentence_avg")
    drop_worst_ratio: float = field(default=0.0, metadata={"help": "drop this share of the worst token losses"})
    drop_worst_after: int = field(default=0, metadata={"help": "... only after this many updates"})
    use_rdrop: bool = field(default=False, metadata={"help": "R-Drop (not supported; must stay off)"})
    reg_alpha: float = field(default=1.0, metadata={"help": "R-Drop weight (unused)"})
    sample_patch_num: int = field(default=196, metadata={
        "help": "pretraining: image patches kept per image in the first of two batches (0 = all)"})
    # The task's 'start,end' (ofa_cn/tasks/base.py): the loss smooths and predicts only the ids that
    # generation may emit (plus the 4 specials), as in the original, where one --constraint-range set both.
    constraint_range: Optional[str] = II("task.constraint_range")


@register_criterion("adjust_label_smoothed_cross_entropy", dataclass=AdjustLabelSmoothedCrossEntropyConfig)
class AdjustLabelSmoothedCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, ignore_eos=False,
                 report_accuracy=False, drop_worst_ratio=0.0, drop_worst_after=0, use_rdrop=False,
                 reg_alpha=1.0, sample_patch_num=196, constraint_range=None):
        super().__init__(task)
        if use_rdrop:
            raise ValueError("use_rdrop=True is not supported by ofa_cn; set criterion.use_rdrop=false")
        self.sentence_avg = sentence_avg
        self.eps = label_smoothing
        self.ignore_prefix_size = ignore_prefix_size
        self.ignore_eos = ignore_eos
        self.report_accuracy = report_accuracy
        self.drop_worst_ratio = drop_worst_ratio
        self.drop_worst_after = drop_worst_after
        self.allowed = parse_constraint_range(constraint_range)
        self.sample_patch_num = sample_patch_num

    def token_losses(self, logits: torch.Tensor, target: torch.Tensor, conf: torch.Tensor | None = None):
        """logits [B, T, V], target [B, T], conf [B] or None -> per scored token: loss [N], nll [N],
        lprobs [N, V], target [N]"""
        logits = mask_outside_range(logits, self.allowed)
        lprobs = F.log_softmax(logits.float(), dim=-1)
        if conf is not None:
            lprobs = lprobs * conf[:, None, None].to(lprobs)
        if self.ignore_prefix_size > 0:
            lprobs, target = lprobs[:, self.ignore_prefix_size:], target[:, self.ignore_prefix_size:]
        if self.ignore_eos:
            keep = target.ne(self.task.target_dictionary.eos())
            lprobs, target = lprobs[keep], target[keep]
        keep = target.ne(self.padding_idx)
        lprobs, target = lprobs[keep], target[keep]  # [N, V], [N]
        loss, nll = label_smoothed_nll_loss(lprobs, target, self.eps, self.allowed)
        return loss, nll, lprobs, target

    def forward(self, model, sample, update_num: int = 0, reduce: bool = True):
        if isinstance(sample, (list, tuple)):
            return self.forward_two_batches(model, sample, update_num)
        if not sample:  # an all-skipped batch
            zero = torch.zeros((), requires_grad=True)
            return zero, 0, {"loss": 0.0, "nll_loss": 0.0, "ntokens": 0, "nsentences": 0, "sample_size": 0}
        logits, _ = model(**sample["net_input"])
        loss, nll, lprobs, target = self.token_losses(logits, sample["target"], sample.get("conf"))
        if self.drop_worst_ratio > 0 and update_num > self.drop_worst_after and model.training:
            loss, nll = drop_worst(loss, nll, self.drop_worst_ratio)
        ntokens = loss.numel()
        nsentences = sample["target"].size(0)
        sample_size = nsentences if self.sentence_avg else ntokens
        logging_output = {
            "loss": loss.sum().data, "nll_loss": nll.sum().data, "ntokens": ntokens,
            "nsentences": nsentences, "sample_size": sample_size,
        }
        if self.report_accuracy:
            logging_output["n_correct"] = lprobs.argmax(-1).eq(target).sum().item()
            logging_output["total"] = target.numel()
        return loss.sum(), sample_size, logging_output

    def forward_two_batches(self, model, samples, update_num: int):
        """Pretraining: [pairs, extras] -> loss_1 / size_1 + loss_2 / size_2 with sample size 1."""
        pairs, extras = samples
        if self.sample_patch_num > 0 and pairs:
            pairs = {**pairs, "net_input": {**pairs["net_input"], "sample_patch_num": self.sample_patch_num}}
        total, log = 0.0, {"ntokens": 0, "nsentences": 0, "nll_loss": 0.0, "n_correct": 0, "total": 0}
        for name, batch in (("v1", pairs), ("v2", extras)):
            loss, size, out = self.forward(model, batch, update_num)
            if size > 0:
                total = total + loss / size
            log[f"loss_{name}"] = out["loss"] / max(size, 1)
            for key in ("ntokens", "nsentences", "nll_loss", "n_correct", "total"):
                log[key] = log[key] + out.get(key, 0)
        if not isinstance(total, torch.Tensor):  # both batches empty
            total = torch.zeros((), requires_grad=True)
        log["loss"] = total.data
        log["sample_size"] = 1
        if not self.report_accuracy:
            del log["n_correct"], log["total"]
        return total, 1, log

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        loss, nll, ntokens = total("loss"), total("nll_loss"), total("ntokens")
        sample_size = total("sample_size")
        metrics.log_scalar("loss", loss / max(sample_size, 1) / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", nll / max(ntokens, 1) / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda m: 2 ** m["nll_loss"].avg if "nll_loss" in m else float("nan"))
        metrics.log_scalar("ntokens", ntokens)
        metrics.log_scalar("nsentences", total("nsentences"))
        for part in ("loss_v1", "loss_v2"):  # pretraining: the two batches' per-token losses
            count = sum(part in log for log in logging_outputs)  # updates without extras lack them
            if count:
                metrics.log_scalar(part, total(part) / count / math.log(2), count, round=3)
        if total("total") > 0:
            metrics.log_scalar("_n_correct", total("n_correct"))
            metrics.log_scalar("_total", total("total"))
            metrics.log_derived("accuracy", lambda m: round(
                m["_n_correct"].sum * 100.0 / m["_total"].sum, 3) if m["_total"].sum > 0 else float("nan"))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
