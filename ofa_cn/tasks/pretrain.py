"""The `unify_task`: OFA pretraining, and multitask training on the finetuning formats.

Two kinds of sources, any combination:

- the original pretraining files (`ofa_cn.data.pretrain`): `data` = image-text rows 'train,valid'
  (caption / qa / visual_grounding, each with its matching or grounded-caption companion), and
  the extra files `text_data` (text infilling), `image_data` (image infilling from VQGAN codes)
  and `detection_data`, read every 8th image-text row into a second batch;
- the finetuning TSVs `caption_data`, `grounding_data`, `ocr_data` (each row keeps its own task's
  prompt and target), which is how `configs/demo` trains one model for all three tasks, and
  `matching_data`, image-text pairs with their 是/否 answer written out (`ofa_cn.data.matching`).

Field names are the original's, so a released `unify_task` checkpoint sets the task up unchanged.
The released CN pretraining data and prompts were never published (see `PROMPTS`).
"""


import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from fairseq.data import FairseqDataset
from fairseq.tasks import register_task

from ..data.caption import CaptionDataset
from ..data.grounding import GroundingDataset
from ..data.matching import MatchingDataset
from ..data.negatives import Negatives
from ..data.ocr import OCRDataset
from ..data.pretrain import PretrainDataset, collate_two_batches
from ..data.tsv import TSVFile
from .base import OFATask, OFATaskConfig

logger = logging.getLogger(__name__)


@dataclass
class UnifyConfig(OFATaskConfig):
    caption_data: Optional[str] = field(default=None, metadata={"help": "caption TSVs 'train,valid' (id, image, caption)"})
    grounding_data: Optional[str] = field(default=None, metadata={
        "help": "grounding TSVs 'train,valid' (id, image, expression, box)"})
    ocr_data: Optional[str] = field(default=None, metadata={"help": "OCR TSVs 'train,valid' (id, image, text)"})
    matching_data: Optional[str] = field(default=None, metadata={
        "help": "image-text matching TSVs 'train,valid' (id, image, text, answer 是 or 否)"})
    max_image_size: int = field(default=512, metadata={"help": "grounding: box coordinates are divided by this"})
    text_data: Optional[str] = field(default=None, metadata={"help": "text-infilling TSV (uniq_id, text)"})
    image_data: Optional[str] = field(default=None, metadata={
        "help": "image-infilling TSV (image_id, image, code): 2c x 2c images and their VQGAN codes"})
    detection_data: Optional[str] = field(default=None, metadata={
        "help": "detection TSV (image_id, image, 'x0,y0,x1,y1,category_id,name&&...')"})
    text_selected_cols: Optional[str] = field(default=None, metadata={"help": "columns of text_data"})
    image_selected_cols: Optional[str] = field(default=None, metadata={"help": "columns of image_data"})
    detection_selected_cols: Optional[str] = field(default=None, metadata={"help": "columns of detection_data"})
    neg_sample_dir: Optional[str] = field(default=None, metadata={
        "help": "folder with all_captions.txt, object.txt, type2ans.json: negatives of the matching task"})
    code_image_size: int = field(default=128, metadata={"help": "c: image infilling blanks the centre c x c of 2c x 2c"})
    pretrain_seed: int = field(default=7, metadata={"help": "seed of the per-sample randomness"})
    mask_ratio: float = field(default=0.3, metadata={"help": "text infilling: share of words masked"})
    random_ratio: float = field(default=0.0, metadata={"help": "must be 0 (random replacement is not supported)"})
    keep_ratio: float = field(default=0.0, metadata={"help": "unused, as in the original"})
    mask_length: str = field(default="span-poisson", metadata={"help": "must be span-poisson"})
    poisson_lambda: float = field(default=3.0, metadata={"help": "text infilling: mean span length (words)"})
    replace_length: int = field(default=1, metadata={"help": "1: a span -> one <mask>; 0: deleted; -1: all masked"})


class MixtureDataset(FairseqDataset):
    """Several datasets behind one index space; every batch mixes tasks (same image size).

    A part's item is a sample dict, or (first-batch samples, second-batch samples) for
    `PretrainDataset`; batches are built by `collate_two_batches`.
    """

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
        item = dataset[local]
        if item is None:
            return None
        first, second = item if isinstance(item, tuple) else ([item], [])
        # ids stay unique across the mixture
        return [{**s, "id": index} for s in first], [{**s, "id": index} for s in second]

    def num_tokens(self, index):
        dataset, local = self._locate(index)
        return dataset.num_tokens(local)

    def size(self, index):
        dataset, local = self._locate(index)
        return dataset.size(local)

    def collater(self, items):
        return collate_two_batches(items)

    def ordered_indices(self):
        """A random order of all parts' rows (fairseq seeds numpy with seed + epoch around this call).

        fairseq cuts batches from this order as it is, so the default (0, 1, 2, ...) made every
        batch one task. Measured on the demo data from random initialisation (batch 16): with
        one-task batches the model learned to count objects but not their colours (single-object
        captions with the right colour: 6 of 60 after 1,200 updates of caption + grounding; 51 of
        51 after 600 of captions alone); with mixed batches of all three tasks, 43 of 51 colours,
        grounding Acc@0.5 32 % and OCR 17 % after 2,100 updates. Sizes vary little across the
        parts: nothing to gain from sorting.
        """
        return np.random.permutation(len(self)).astype(np.int64)

    def set_epoch(self, epoch):
        for p in self.parts:
            if hasattr(p, "set_epoch"):
                p.set_epoch(epoch)


@register_task("unify_task", dataclass=UnifyConfig)
class UnifyTask(OFATask):
    DEFAULT_COLS = "0,1,2,3,4,5,6,7"  # the image-text file, in PretrainDataset.FIELDS order
    FIELDS = PretrainDataset.FIELDS

    def __init__(self, cfg: UnifyConfig, dictionary):
        super().__init__(cfg, dictionary)
        self._negatives = None

    def build_model(self, cfg, from_checkpoint: bool = False):
        model = super().build_model(cfg, from_checkpoint)
        model_size = getattr(getattr(model, "cfg", None), "code_image_size", self.cfg.code_image_size)
        if self.cfg.image_data and model_size != self.cfg.code_image_size:
            raise ValueError(f"task.code_image_size={self.cfg.code_image_size} but the model's is {model_size}: "
                             "the image-infilling codes would get the wrong positions; set both to the same value")
        return model

    def _extra_file(self, path: Optional[str], cols: Optional[str], fields) -> Optional[TSVFile]:
        return TSVFile(path, cols, fields) if path else None

    @property
    def negatives(self) -> Optional[Negatives]:
        if self._negatives is None and self.cfg.neg_sample_dir:
            self._negatives = Negatives.from_dir(self.cfg.neg_sample_dir)
        return self._negatives

    def build_pretrain_dataset(self, split: str, epoch: int) -> PretrainDataset:
        train = split == "train"
        if train and self.cfg.text_data and (self.cfg.random_ratio != 0.0 or self.cfg.mask_length != "span-poisson"):
            raise ValueError(f"text infilling supports mask_length=span-poisson with random_ratio=0 (the original "
                             f"scripts' settings), found mask_length={self.cfg.mask_length!r}, "
                             f"random_ratio={self.cfg.random_ratio}")
        return PretrainDataset(
            self.open_tsv(self.split_path(split, epoch)), self.tokenizer, **self.common_dataset_args(split, epoch),
            texts=self._extra_file(self.cfg.text_data if train else None, self.cfg.text_selected_cols,
                                   PretrainDataset.TEXT_FIELDS),
            images=self._extra_file(self.cfg.image_data if train else None, self.cfg.image_selected_cols,
                                    PretrainDataset.IMAGE_FIELDS),
            detections=self._extra_file(self.cfg.detection_data if train else None, self.cfg.detection_selected_cols,
                                        PretrainDataset.DETECTION_FIELDS),
            negatives=self.negatives, max_image_size=self.cfg.max_image_size, num_bins=self.cfg.num_bins,
            code_dict_size=self.cfg.code_dict_size, code_image_size=self.cfg.code_image_size,
            mask_ratio=self.cfg.mask_ratio, poisson_lambda=self.cfg.poisson_lambda,
            replace_length=self.cfg.replace_length, seed=self.cfg.pretrain_seed,
        )

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        common = self.common_dataset_args(split, epoch)
        parts = []
        if self.cfg.data:
            parts.append(self.build_pretrain_dataset(split, epoch))
            logger.info("%s: %d image-text rows from %s", split, len(parts[-1]), parts[-1].tsv.path)
        sources = (
            (self.cfg.caption_data, ("image_id", "image", "caption"),
             lambda tsv: CaptionDataset(tsv, self.tokenizer, **common)),
            (self.cfg.grounding_data, ("uniq_id", "image", "text", "box"),
             lambda tsv: GroundingDataset(tsv, self.tokenizer, max_image_size=self.cfg.max_image_size,
                                          num_bins=self.cfg.num_bins, **common)),
            (self.cfg.ocr_data, ("uniq_id", "image", "text"),
             lambda tsv: OCRDataset(tsv, self.tokenizer, is_document=False, **common)),
            (self.cfg.matching_data, MatchingDataset.FIELDS, lambda tsv: MatchingDataset(tsv, self.tokenizer, **common)),
        )
        for data, fields, build in sources:
            if not data:
                continue
            paths = [p for p in data.split(",") if p]
            path = paths[0] if split == "train" else paths[-1]
            parts.append(build(TSVFile(path, None, fields)))
            logger.info("%s: %d rows from %s", split, len(parts[-1]), path)
        if not parts:
            raise ValueError("unify_task needs data (the image-text pretraining rows) or at least one of "
                             "caption_data, grounding_data, ocr_data, matching_data")
        self.datasets[split] = MixtureDataset(parts)
