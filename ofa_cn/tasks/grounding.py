"""The `refcoco` task (RefCOCO-CN visual grounding): image + expression -> box as 4 <bin_k>."""


from dataclasses import dataclass, field

import torch
from fairseq.tasks import register_task

from ..data.boxes import bins_to_box
from ..data.grounding import GroundingDataset
from ..metrics.grounding import box_hit, grounding_accuracy
from .base import OFATask, OFATaskConfig


BOX_DECIMALS = 3  # boxes in predictions.jsonl and the CLI's output: to a thousandth of a pixel


@dataclass
class RefcocoConfig(OFATaskConfig):
    max_image_size: int = field(default=512, metadata={"help": "box coordinates are divided by this before binning"})
    eval_acc: bool = field(default=False, metadata={"help": "Acc@0.5 of generated boxes at validation"})
    bins_only: bool = field(default=True, metadata={
        "help": "generate only <bin_k> tokens (the original allowed any token, so weak models emitted non-boxes)"})
    scst: bool = field(default=False, metadata={"help": "accepted for released configs; not supported"})
    scst_args: str = field(default="{}", metadata={"help": "accepted for released configs"})


@register_task("refcoco", dataclass=RefcocoConfig)
class RefcocoTask(OFATask):
    FIELDS = ("uniq_id", "image", "text", "box")
    DEFAULT_COLS = "0,1,2,3"
    DEFAULT_GENERATION = {"beam": 5, "max_len_a": 0, "max_len_b": 4, "min_len": 4, "no_repeat_ngram_size": 3}  # RefCOCO-CN
    METRIC_NAME = "acc"

    def build_dataset(self, tsv, split, epoch):
        return GroundingDataset(tsv, self.tokenizer, max_image_size=self.cfg.max_image_size,
                                num_bins=self.cfg.num_bins, **self.common_dataset_args(split, epoch))

    def generation_constraint(self):
        if self.cfg.constraint_range or not self.cfg.bins_only:
            return self.cfg.constraint_range
        first_bin = len(self.dictionary) - self.cfg.num_bins
        return f"{first_bin},{len(self.dictionary)}"

    BOX_TOKENS = 4  # x0 y0 x1 y1

    def answer_shape(self):
        # bins_only (the default): exactly four <bin_k>, then </s>
        if self.cfg.constraint_range or not self.cfg.bins_only:
            return None
        first_bin = len(self.dictionary) - self.cfg.num_bins
        return range(first_bin, len(self.dictionary)), self.BOX_TOKENS

    def eval_generation_args(self):
        if not self.cfg.eval_acc:
            return {}
        # the released configs' eval_args: the published settings without n-gram blocking
        return {**self.DEFAULT_GENERATION, "no_repeat_ngram_size": 0, **super().eval_generation_args()}

    def tokens_to_box(self, tokens: torch.Tensor, w_ratio: float, h_ratio: float) -> list[float]:
        """The first 4 generated ids -> [x0, y0, x1, y1] in the original image's pixels, inside the image
        (bins reach max_image_size, which may exceed the resized image: they are clipped to it).

        Raises:
            ValueError: one of the first 4 ids is not a <bin_k> (possible only with bins_only=false
                or a constraint_range of your own).
        """
        first_bin = len(self.dictionary) - self.cfg.num_bins
        ids = [int(t) for t in tokens[: self.BOX_TOKENS]]
        if len(ids) < self.BOX_TOKENS or not all(first_bin <= i < len(self.dictionary) for i in ids):
            raise ValueError(
                f"the model generated {[self.dictionary[i] for i in ids]} where a box needs 4 <bin_k> tokens; "
                "keep task.bins_only=true (the default), which allows nothing else."
            )
        return bins_to_box([i - first_bin for i in ids], self.cfg.max_image_size, self.cfg.num_bins, w_ratio, h_ratio,
                           resized_size=self.cfg.patch_image_size)

    def answers(self, sample, best_tokens):
        return [self.tokens_to_box(tokens, float(sample["w_resize_ratios"][i]), float(sample["h_resize_ratios"][i]))
                for i, tokens in enumerate(best_tokens)]

    def score_batch(self, sample, best_tokens):
        hits = sum(box_hit(box, sample["region_coords"][i].tolist())
                   for i, box in enumerate(self.answers(sample, best_tokens)))
        return float(hits), len(best_tokens)

    def prediction_rows(self, sample, best_tokens):
        rows = []
        for i, box in enumerate(self.answers(sample, best_tokens)):
            rows.append({"uniq_id": str(sample["uniq_ids"][i]), "box": [round(v, BOX_DECIMALS) for v in box],
                         "reference": sample["region_coords"][i].tolist()})
        return rows

    def corpus_metrics(self, rows):
        return grounding_accuracy({r["uniq_id"]: r["box"] for r in rows}, {r["uniq_id"]: r["reference"] for r in rows})
