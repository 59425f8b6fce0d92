"""The `unify_task`: multitask training on a mixture of caption, grounding and OCR TSVs.

The released CN pretraining data and prompts were never published; this task trains on the
three finetuning formats at once (each row keeps its own task's prompt and target), which is how
`configs/demo` trains one model for all three tasks. A released `unify_task` checkpoint loads
through it unchanged.
"""


import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from fairseq.data import FairseqDataset
from fairseq.tasks import register_task

from ..data.caption import CaptionDataset
from ..data.collate import collate
from ..data.grounding import GroundingDataset
from ..data.ocr import OCRDataset
from ..data.tsv import TSVFile
from ..tokenizer import EOS, PAD
from .base import OFATask, OFATaskConfig

logger = logging.getLogger(__name__)


@dataclass
class UnifyConfig(OFATaskConfig):
    caption_data: Optional[str] = field(default=None, metadata={"help": "caption TSVs 'train,valid' (id, image, caption)"})
    grounding_data: Optional[str] = field(default=None, metadata={
        "help": "grounding TSVs 'train,valid' (id, image, expression, box)"})
    ocr_data: Optional[str] = field(default=None, metadata={"help": "OCR TSVs 'train,valid' (id, image, text)"})
    max_image_size: int = field(default=512, metadata={"help": "grounding: box coordinates are divided by this"})


class MixtureDataset(FairseqDataset):
    """Several datasets behind one index space; every batch may mix tasks (same image size)."""

    def __init__(self, parts: list[FairseqDataset]):
        super().__init__()
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self):
        return int(self.offsets[-1])

    def _locate(self, index: int):
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part], index - int(self.offsets[part])

    def __getitem__(self, index):
        dataset, local = self._locate(index)
        sample = dataset[local]
        if sample is not None:
            sample = {**sample, "id": index}  # ids stay unique across the mixture
        return sample

    def num_tokens(self, index):
        dataset, local = self._locate(index)
        return dataset.num_tokens(local)

    def size(self, index):
        dataset, local = self._locate(index)
        return dataset.size(local)

    def collater(self, samples):
        return collate(samples, pad_idx=PAD, eos_idx=EOS)

    def set_epoch(self, epoch):
        for p in self.parts:
            if hasattr(p, "set_epoch"):
                p.set_epoch(epoch)


@register_task("unify_task", dataclass=UnifyConfig)
class UnifyTask(OFATask):
    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        common = self.common_dataset_args(split, epoch)
        parts = []
        sources = (
            (self.cfg.caption_data, ("image_id", "image", "caption"),
             lambda tsv: CaptionDataset(tsv, self.tokenizer, **common)),
            (self.cfg.grounding_data, ("uniq_id", "image", "text", "box"),
             lambda tsv: GroundingDataset(tsv, self.tokenizer, max_image_size=self.cfg.max_image_size,
                                          num_bins=self.cfg.num_bins, **common)),
            (self.cfg.ocr_data, ("uniq_id", "image", "text"),
             lambda tsv: OCRDataset(tsv, self.tokenizer, is_document=False, **common)),
        )
        for data, fields, build in sources:
            if not data:
                continue
            paths = [p for p in data.split(",") if p]
            path = paths[0] if split == "train" else paths[-1]
            parts.append(build(TSVFile(path, None, fields)))
            logger.info("%s: %d rows from %s", split, len(parts[-1]), path)
        if not parts:
            raise ValueError("unify_task needs at least one of caption_data, grounding_data, ocr_data")
        self.datasets[split] = MixtureDataset(parts)
