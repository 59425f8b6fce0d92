"""What the caption, grounding and OCR datasets share: rows in, sample dicts out, one collate.

A sample (one row) is::

    id                   int           the row index, so a skipped row never shifts later ids
    source               LongTensor    [bos] + encode(prompt) + [eos]
    target               LongTensor    encode(answer) + [eos]
    prev_output_tokens   LongTensor    [bos] + encode(answer)   (decoding starts from bos, not eos)
    patch_image          FloatTensor   [3, S, S]
    patch_mask           bool          True: every sample has an image
    <task extras>                      listed in each dataset's EXTRAS

A bad row raises ``DataError``; with ``skip_bad_rows`` it is logged once, counted and returned as
None instead, and ``collate`` drops it.

One path from picture to model input: each dataset's ``build_inputs`` (image + text -> ``source``,
``patch_image``, ``patch_mask`` and what maps the answer back, e.g. resize ratios) calls its task's
pure function (``caption_inputs``, ``grounding_inputs``, ``ocr_inputs``). ``build_sample`` adds the
answer to it for training and evaluation; ``inference_sample`` is the same without an answer, for
images given directly (``ofa_cn.apps.inference.Predictor``), through a dataset built by the task from
``NoRows``, so that both read the same settings.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from fairseq.data import FairseqDataset
from PIL import Image

from ..tokenizer import BOS, EOS, PAD, ChineseTokenizer
from .collate import collate
from .errors import FIX_OR_SKIP, DataError
from .image import MEAN_STD, decode_image
from .tsv import TSVFile

logger = logging.getLogger(__name__)


def model_inputs(source_ids: list[int], patch_image: torch.Tensor) -> dict:
    """The keys every sample gives the model: ``source`` = [bos] + ids + [eos], the image, its mask."""
    return {
        "source": torch.tensor([BOS] + source_ids + [EOS], dtype=torch.long),
        "patch_image": patch_image,
        "patch_mask": True,
    }


class NoRows:
    """A stand-in for ``TSVFile`` with no rows: a dataset built on it only makes ``inference_sample``s.

    Args:
        field_names: the dataset's FIELDS.
    """

    path = "(no TSV file: inputs given directly)"
    other_rows = ()  # rows whose field count differs from the file's (TSVFile): none

    def __init__(self, field_names: tuple[str, ...]):
        self.field_names = list(field_names)

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> dict[str, str]:
        raise IndexError(f"{self.path} has no rows; use inference_sample")


class TSVDataset(FairseqDataset):
    """Base class: subclasses set FIELDS, EXTRAS and PROMPT and implement ``build_sample``.

    Args:
        tsv: the rows; its field names must be the subclass's FIELDS.
        tokenizer: text -> dictionary ids (``ofa_cn.tokenizer.get_tokenizer()``).
        split: "train" turns on training-only behaviour (caption target cleaning, OCR random
            padding); any other name means evaluation.
        patch_image_size: S, the side of the square image the model sees (task config).
        max_src_length: word limit of grounding expressions (task config, default 128).
        max_tgt_length: token limit of caption targets, character limit of OCR targets.
        imagenet_default_mean_and_std: normalise with ImageNet mean/std instead of 0.5/0.5.
        skip_bad_rows: return None for rows that raise DataError instead of raising.
    """

    FIELDS: tuple[str, ...] = ()  # field names, in the order of selected_cols
    EXTRAS: tuple[str, ...] = ()  # per-sample keys that collate copies to the batch
    PROMPT: str = ""

    def __init__(
        self,
        tsv: TSVFile,
        tokenizer: ChineseTokenizer,
        split: str,
        patch_image_size: int,
        max_src_length: int = 128,
        max_tgt_length: int = 30,
        imagenet_default_mean_and_std: bool = False,
        skip_bad_rows: bool = False,
    ):
        if tuple(tsv.field_names) != self.FIELDS:
            raise ValueError(
                f"{type(self).__name__} reads the fields {self.FIELDS}, but {tsv.path} was opened with "
                f"{tuple(tsv.field_names)}; open it as TSVFile(path, selected_cols, {type(self).__name__}.FIELDS)."
            )
        if patch_image_size <= 0 or max_src_length <= 0 or max_tgt_length <= 0:
            raise ValueError(
                f"patch_image_size ({patch_image_size}), max_src_length ({max_src_length}) and "
                f"max_tgt_length ({max_tgt_length}) must be positive"
            )
        if len(tsv.other_rows) and not skip_bad_rows:
            tsv.check_field_count(int(tsv.other_rows[0]))  # fail before training, not when the row comes up
        elif len(tsv.other_rows):
            logger.warning("%s: %d rows have another number of fields than the file's %d and will be skipped "
                           "(first: row %d)", tsv.path, len(tsv.other_rows), tsv.num_fields, int(tsv.other_rows[0]))
        self.tsv = tsv
        self.tokenizer = tokenizer
        self.split = split
        self.is_train = split == "train"
        self.patch_image_size = patch_image_size
        self.max_src_length = max_src_length
        self.max_tgt_length = max_tgt_length
        self.mean, self.std = MEAN_STD[bool(imagenet_default_mean_and_std)]
        self.skip_bad_rows = skip_bad_rows
        self.prompt_ids = tokenizer.encode(self.PROMPT) if self.PROMPT else []
        self.epoch = 1
        self._skipped_rows: set[int] = set()  # per process: DataLoader workers count their own

    # ------------------------------------------------------------------ rows -> samples

    def build_sample(self, index: int, row: dict[str, str]) -> dict:
        """Row ``index`` (fields by name) -> sample dict; raises DataError for a bad row."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_sample")

    def build_inputs(self, image: Image.Image, text: str | None, where: str, rng: random.Random | None = None) -> dict:
        """An RGB image (+ the task's text, if it reads one) -> the model's inputs and what maps the
        answer back (the task's pure ``*_inputs`` function with this dataset's settings).

        Args:
            where: names the input in errors (a TSV location, or an image's name).
            rng: the training-time random source (OCR padding), None at evaluation.

        Raises:
            DataError: the text leaves nothing to encode.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement build_inputs")

    def inference_sample(self, sample_id: int, image: Image.Image, text: str | None = None, where: str = "") -> dict:
        """A sample without an answer for an image given directly, exactly as evaluation makes it."""
        return {"id": sample_id, **self.build_inputs(image, text, where or f"input {sample_id}")}

    def inference_collater(self, samples: list[dict]) -> dict:
        """``collater`` for ``inference_sample``s: no targets, and only the extras they have (the ratios)."""
        return collate(samples, PAD, EOS, [k for k in self.EXTRAS if k in samples[0]])

    def __getitem__(self, index: int) -> dict | None:
        try:
            return self.build_sample(index, self.tsv[index])
        except DataError as e:
            if not self.skip_bad_rows:
                raise
            if index not in self._skipped_rows:
                self._skipped_rows.add(index)
                logger.warning("skipping a bad row: %s", e)
            return None

    @property
    def num_skipped_rows(self) -> int:
        """Distinct rows skipped so far in this process (workers keep their own counts)."""
        return len(self._skipped_rows)

    def __len__(self) -> int:
        return len(self.tsv)

    # ------------------------------------------------------------------ helpers for subclasses

    def decode_image(self, index: int, row: dict[str, str]) -> Image.Image:
        return decode_image(row["image"], self.tsv.where(index, "image"))

    def encode_text(self, index: int, field: str, text: str) -> list[int]:
        """Text -> ids; raises DataError when nothing is left to encode."""
        ids = self.tokenizer.encode(text)
        if not ids:
            raise DataError(
                self.tsv.where(index, field),
                f"expected non-empty text, found {text!r} (no tokens after cleaning). {FIX_OR_SKIP}",
            )
        return ids

    def make_sample(
        self,
        index: int,
        answer_ids: list[int],
        patch_image: torch.Tensor,
        source_ids: list[int] | None = None,
        **extras,
    ) -> dict:
        """The common sample keys around the prompt (or ``source_ids``) and the answer, plus extras."""
        source_ids = self.prompt_ids if source_ids is None else source_ids
        return self.with_answer(index, model_inputs(source_ids, patch_image), answer_ids, **extras)

    @staticmethod
    def with_answer(index: int, inputs: dict, answer_ids: list[int], **extras) -> dict:
        """``inputs`` (from ``build_inputs``) plus the answer as target and teacher-forcing input."""
        return {
            "id": index,
            **inputs,
            "target": torch.tensor(answer_ids + [EOS], dtype=torch.long),
            "prev_output_tokens": torch.tensor([BOS] + answer_ids, dtype=torch.long),
            **extras,
        }

    def sample_rng(self, index: int, seed: int) -> random.Random:
        """A random source for one sample that depends only on (seed, epoch, index).

        So the draws do not depend on which worker loads the row or in which order. fairseq calls
        ``set_epoch`` in the main process; with persistent DataLoader workers (fairseq's default)
        the workers keep the epoch they started with, and the draws repeat every epoch.
        """
        return random.Random(f"{seed}/{self.epoch}/{index}")  # str seeds are hashed (SHA-512): stable

    # ------------------------------------------------------------------ fairseq hooks

    def nominal_sizes(self) -> tuple[int, int]:
        """(source, target) lengths in tokens that fairseq batches and filters by: fixed per dataset
        (upper bounds where they are known), so that no row, image column and all, is read for them."""
        raise NotImplementedError(f"{type(self).__name__} must implement nominal_sizes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def collater(self, samples: list[dict | None]) -> dict:
        return collate(samples, PAD, EOS, self.EXTRAS)

    def size(self, index: int) -> tuple[int, int]:
        return self.nominal_sizes()

    def num_tokens(self, index: int) -> int:
        return max(self.nominal_sizes())

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return np.full(len(indices), max(self.nominal_sizes()), dtype=np.int64)
