"""The `ocr` task: image of a text line -> the text; validation exact-match accuracy."""


from dataclasses import dataclass, field

from fairseq.tasks import register_task

from ..data.ocr import OCRDataset
from ..metrics.ocr import normalize_ocr_text, ocr_scores
from .base import OFATask, OFATaskConfig


@dataclass
class OCRConfig(OFATaskConfig):
    is_document: bool = field(default=False, metadata={
        "help": "document mode: resize to 64x1920 and stack 4 strips (needs patch_image_size 480)"})
    eval_acc: bool = field(default=False, metadata={"help": "exact-match accuracy at validation"})


@register_task("ocr", dataclass=OCRConfig)
class OCRTask(OFATask):
    FIELDS = ("uniq_id", "image", "text")
    DEFAULT_COLS = "0,1,2"
    DEFAULT_GENERATION = {"beam": 5, "max_len_a": 0, "max_len_b": 64, "min_len": 1, "no_repeat_ngram_size": 0}
    METRIC_NAME = "acc"

    def build_dataset(self, tsv, split, epoch):
        return OCRDataset(tsv, self.tokenizer, is_document=self.cfg.is_document,
                          **self.common_dataset_args(split, epoch))

    def eval_generation_args(self):
        if not self.cfg.eval_acc:
            return {}
        return {**self.DEFAULT_GENERATION, **super().eval_generation_args()}

    def score_batch(self, sample, best_tokens):
        hits = sum(normalize_ocr_text(self.decode_text(t)) == normalize_ocr_text(ref)
                   for t, ref in zip(best_tokens, sample["references"]))
        return float(hits), len(best_tokens)

    def prediction_rows(self, sample, best_tokens):
        return [{"uniq_id": str(uid), "text": text, "reference": ref}
                for uid, text, ref in zip(sample["uniq_ids"], self.answers(sample, best_tokens), sample["references"])]

    def corpus_metrics(self, rows):
        return ocr_scores({r["uniq_id"]: r["text"] for r in rows}, {r["uniq_id"]: r["reference"] for r in rows})
