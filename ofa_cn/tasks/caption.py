"""The `caption` task (MUGE): image -> Chinese caption; validation CIDEr-D on characters."""


import logging
from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task

from ..data.caption import CaptionDataset
from ..metrics.caption import char_tokens, score_captions
from ..metrics.cider import cider_d
from .base import OFATask, OFATaskConfig

logger = logging.getLogger(__name__)


@dataclass
class CaptionConfig(OFATaskConfig):
    eval_cider: bool = field(default=False, metadata={
        "help": "CIDEr-D of generated captions at validation (characters as tokens); needs eval_args"})
    eval_bleu: bool = field(default=False, metadata={"help": "accepted for released configs; CIDEr-D is reported"})
    eval_cider_cached_tokens: Optional[str] = field(default=None, metadata={
        "help": "accepted for released configs (document frequencies come from the validation references)"})
    scst: bool = field(default=False, metadata={"help": "self-critical training (stage 2); see checkpoints.md"})
    scst_args: str = field(default="{}", metadata={"help": "generation settings for SCST samples, JSON"})


@register_task("caption", dataclass=CaptionConfig)
class CaptionTask(OFATask):
    FIELDS = ("image_id", "image", "caption")
    DEFAULT_COLS = "0,1,2"
    DEFAULT_GENERATION = {"beam": 8, "max_len_a": 0, "max_len_b": 128, "min_len": 1, "no_repeat_ngram_size": 3}  # MUGE
    METRIC_NAME = "cider"

    def build_dataset(self, tsv, split, epoch):
        return CaptionDataset(tsv, self.tokenizer, **self.common_dataset_args(split, epoch))

    def eval_generation_args(self):
        return super().eval_generation_args() if self.cfg.eval_cider else {}

    def score_batch(self, sample, best_tokens):
        hyps = [char_tokens(self.decode_text(t)) for t in best_tokens]
        refs = [[char_tokens(r) for r in refs] for refs in sample["references"]]
        scores = cider_d(hyps, refs)
        if self.cfg.eval_print_samples and hyps:
            logger.info("example hypothesis: %s | reference: %s", hyps[0], refs[0][0])
        return float(sum(scores)), len(scores)

    def prediction_rows(self, sample, best_tokens):
        return [{"image_id": str(image_id), "caption": caption, "references": list(refs)}
                for image_id, caption, refs in zip(sample["image_ids"], self.answers(sample, best_tokens),
                                                   sample["references"])]

    def corpus_metrics(self, rows, tokenize: str = "char"):
        return score_captions({r["image_id"]: r["caption"] for r in rows},
                              {r["image_id"]: r["references"] for r in rows}, tokenize=tokenize)
