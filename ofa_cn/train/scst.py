"""Self-critical sequence training (caption stage 2): a pure loss plus the fairseq criterion.

For each image the generator's beam hypotheses are the samples (G of them, all kept). Each
sample's reward r_j is its character-level CIDEr-D against the image's references; its baseline
is the mean reward of the *other* G - 1 samples of the same image (leave-one-out), so

    advantage_j = r_j - (sum_k r_k - r_j) / (G - 1),    loss = -sum_j sum_t log p(y_jt) * advantage_j

over the non-pad tokens of each sample (teacher-forced in train mode, target = the hypothesis
including its eos). The gradient is normalised by the token count (or by the sample count with
``sentence_avg``).

Differences from the original (``criterions/scst_loss.py``), on purpose:
  * Rewards are CIDEr-D on characters (``metrics.caption.char_tokens`` of ``task.decode_text``),
    the same tokens as the caption task's validation CIDEr. The original's English preprocessing
    is not reproduced: stripping a final ``.`` from hypotheses and appending `` <eos>`` to every
    hypothesis and reference (an extra "word" that every sentence shares).
  * Without a document-frequency cache the idf comes from the batch's own references, one
    document per image (coco-caption's corpus mode over the batch's images). The original's
    corpus mode counted each image once per sample, which gives n-grams absent from every
    reference a larger idf (log(N) instead of log(images)). With a single image in a batch every
    reward is 0 (log of one document); give ``scst_cider_cached_tokens`` for real training
    (``scripts/build_cider_df.py`` builds it).
  * The criterion never writes into ``sample``: the repeated encoder inputs are a new dict.
"""

# No `from __future__ import annotations`: fairseq reads the config dataclass's field types at runtime.
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.data import data_utils
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from ..generate import GENERATION_DEFAULTS, mask_outside_range, parse_constraint_range
from ..metrics.caption import char_tokens
from ..metrics.cider import NGram, build_document_frequency, cider_d

logger = logging.getLogger(__name__)

ENCODER_INPUTS = ("src_tokens", "src_lengths", "patch_images", "patch_masks")  # repeated per sample


def scst_loss(lprobs: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor,
              group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy-gradient loss with a leave-one-out baseline inside each image's group of samples.

    Args:
        lprobs: [N, T] log-probability of each sampled token (N = images * group_size; the
            samples of one image are consecutive rows).
        mask: [N, T] True (or 1) at tokens that count, False at padding.
        rewards: [N] reward of each sample (no gradient flows through it).
        group_size: G >= 2, samples per image.

    Returns:
        (loss, ntokens): loss = -sum(lprobs * advantage * mask), a scalar; ntokens = mask.sum().
    """
    if group_size < 2:
        raise ValueError(f"scst_loss needs at least 2 samples per image for the leave-one-out baseline, got "
                         f"group_size={group_size}; generate with beam >= 2 (task.scst_args)")
    n = rewards.numel()
    if n % group_size != 0 or lprobs.shape != mask.shape or lprobs.size(0) != n:
        raise ValueError(f"scst_loss: expected lprobs and mask [N, T] and rewards [N] with N a multiple of "
                         f"group_size={group_size}; got lprobs {tuple(lprobs.shape)}, mask {tuple(mask.shape)}, "
                         f"rewards {tuple(rewards.shape)}")
    grouped = rewards.detach().double().view(-1, group_size)  # [B, G]; float64 so equal rewards cancel
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)  # mean of the others
    advantage = (grouped - baseline).view(-1, 1).to(lprobs.dtype)  # [N, 1]
    mask = mask.to(lprobs.dtype)
    loss = -(lprobs * mask * advantage).sum()
    return loss, mask.sum()


def save_document_frequency(path: str | Path, df: dict[NGram, int], ref_len: float, num_images: int) -> None:
    """Write a CIDEr-D document-frequency cache as JSON (n-grams joined by single spaces)."""
    payload = {
        "document_frequency": {" ".join(gram): count for gram, count in df.items()},
        "ref_len": ref_len,
        "num_images": num_images,
    }
    Path(path).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")


def load_document_frequency(path: str | Path) -> tuple[dict[NGram, int], float]:
    """Read a cache written by ``save_document_frequency`` -> (df, log_ref_len) for ``cider_d``."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        table, ref_len = payload["document_frequency"], float(payload["ref_len"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a CIDEr document-frequency cache ({e!r}); expected JSON with "
                         "'document_frequency' and 'ref_len'. Build one with scripts/build_cider_df.py "
                         "(the original's pickled coco-train-words.p is English and is not read).") from None
    return {tuple(gram.split(" ")): int(count) for gram, count in table.items()}, ref_len


@dataclass
class ScstRewardCriterionConfig(FairseqDataclass):
    scst_cider_cached_tokens: Optional[str] = field(default=None, metadata={
        "help": "JSON document-frequency cache from scripts/build_cider_df.py; None: idf from each batch's references"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "do not score the first N target positions"})
    sentence_avg: bool = II("optimization.sentence_avg")
    constraint_range: Optional[str] = field(default=None, metadata={
        "help": "'start,end': normalise teacher-forced scores over these ids only (plus the 4 specials)"})


@register_criterion("scst_reward_criterion", dataclass=ScstRewardCriterionConfig)
class ScstRewardCriterion(FairseqCriterion):
    """SCST with a character-level CIDEr-D reward; samples come from the task's ``scst_args``."""

    def __init__(self, task, sentence_avg, scst_cider_cached_tokens=None, ignore_prefix_size=0,
                 constraint_range=None):
        super().__init__(task)
        self.sentence_avg = sentence_avg
        self.ignore_prefix_size = ignore_prefix_size
        self.allowed = parse_constraint_range(constraint_range)
        self.document_frequency = None
        if scst_cider_cached_tokens:
            self.document_frequency = load_document_frequency(scst_cider_cached_tokens)
            logger.info("SCST: %d cached n-grams from %s", len(self.document_frequency[0]), scst_cider_cached_tokens)
        self.generation_args = json.loads(getattr(task.cfg, "scst_args", None) or "{}")
        if int(self.generation_args.get("beam", GENERATION_DEFAULTS["beam"])) < 2:
            raise ValueError(f"scst_args {self.generation_args}: SCST samples every beam hypothesis and needs "
                             "beam >= 2 for its leave-one-out baseline")
        self._generator = None
        self._generator_model = None

    # ---- (a) samples ---------------------------------------------------------------------------
    def sample_hypotheses(self, model, sample) -> list[list[torch.Tensor]]:
        """All beam hypotheses per image (each ends with eos), generated in eval mode."""
        was_training = model.training  # read first: building fairseq's generator calls model.eval()
        model.eval()  # no dropout while sampling, as the original
        try:
            if self._generator is None or self._generator_model is not model:
                self._generator = self.task.build_generator([model], self.generation_args)
                self._generator_model = model
            with torch.no_grad():
                out = self.task.inference_step(self._generator, [model], sample)
        finally:
            model.train(was_training)
        return [[hyp["tokens"] for hyp in beams] for beams in out]

    # ---- (b) rewards ---------------------------------------------------------------------------
    def rewards(self, hypotheses: list[list[torch.Tensor]], references: list[list[str]]) -> list[float]:
        """Character-level CIDEr-D of every hypothesis against its image's references, flattened [N]."""
        refs = [[char_tokens(r) for r in image_refs] for image_refs in references]
        df, ref_len = self.document_frequency or build_document_frequency(refs)
        hyps, hyp_refs = [], []
        for image_hyps, image_refs in zip(hypotheses, refs):
            for tokens in image_hyps:
                hyps.append(char_tokens(self.task.decode_text(tokens)))
                hyp_refs.append(image_refs)
        return cider_d(hyps, hyp_refs, df, ref_len)

    # ---- (c) teacher forcing -------------------------------------------------------------------
    def teacher_forcing_input(self, net_input: dict[str, Any], hypotheses: list[torch.Tensor],
                              group_size: int) -> tuple[dict[str, Any], torch.Tensor]:
        """Encoder inputs repeated group_size times, prev = [bos] + hyp[:-1], target = hyp (ends with eos)."""
        dictionary = self.task.target_dictionary
        bos, eos = dictionary.bos(), dictionary.eos()
        targets = []
        for tokens in hypotheses:
            if tokens.numel() == 0 or tokens[-1] != eos:
                tokens = torch.cat([tokens, tokens.new_tensor([eos])])
            targets.append(tokens)
        # collate_tokens with move_eos_to_beginning and eos_idx=bos: [bos] + tokens[:-1]
        prev = data_utils.collate_tokens(targets, self.padding_idx, bos, left_pad=False, move_eos_to_beginning=True)
        target = data_utils.collate_tokens(targets, self.padding_idx, eos, left_pad=False)  # [N, T]
        order = torch.arange(len(hypotheses) // group_size, device=target.device).repeat_interleave(group_size)
        repeated = {key: value.index_select(0, order.to(value.device)) for key, value in net_input.items()
                    if key in ENCODER_INPUTS and isinstance(value, torch.Tensor)}
        return {**repeated, "prev_output_tokens": prev}, target

    def forward(self, model, sample, update_num: int = 0, reduce: bool = True):
        if not sample:  # an all-skipped batch
            zero = torch.zeros((), requires_grad=True)
            return zero, 0, {"loss": 0.0, "score": 0.0, "ntokens": 0, "nsentences": 0, "sample_size": 0}
        per_image = self.sample_hypotheses(model, sample)
        group_size = len(per_image[0])
        if any(len(h) != group_size for h in per_image):
            raise ValueError(f"SCST expected the same number of hypotheses for every image, got "
                             f"{[len(h) for h in per_image]}")
        rewards = self.rewards(per_image, sample["references"])
        flat = [tokens for image_hyps in per_image for tokens in image_hyps]
        net_input, target = self.teacher_forcing_input(sample["net_input"], flat, group_size)

        logits, _ = model(**net_input)  # [N, T, V]
        lprobs = F.log_softmax(mask_outside_range(logits, self.allowed).float(), dim=-1)
        token_lprobs = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [N, T]
        mask = target.ne(self.padding_idx)
        if self.ignore_prefix_size > 0:
            token_lprobs, mask = token_lprobs[:, self.ignore_prefix_size:], mask[:, self.ignore_prefix_size:]
        loss, ntokens = scst_loss(token_lprobs, mask, torch.tensor(rewards, device=lprobs.device), group_size)

        ntokens, nsentences = int(ntokens), len(flat)
        sample_size = nsentences if self.sentence_avg else ntokens
        logging_output = {
            "loss": loss.data, "score": float(sum(rewards)), "ntokens": ntokens,
            "nsentences": nsentences, "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """loss per token (or sentence) and score = mean CIDEr-D reward of the samples."""
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size, nsentences = total("sample_size"), total("nsentences")
        metrics.log_scalar("loss", total("loss") / max(sample_size, 1), sample_size, round=3)
        metrics.log_scalar("score", total("score") / max(nsentences, 1), nsentences, round=3)
        metrics.log_scalar("ntokens", total("ntokens"))
        metrics.log_scalar("nsentences", nsentences)
        metrics.log_scalar("sample_size", sample_size)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
