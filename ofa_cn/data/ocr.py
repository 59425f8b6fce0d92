"""OCR: ``uniq_id, image, text`` rows -> samples.

Source: the fixed prompt ``图片上的文字是什么?``. Image: aspect-preserving resize padded with edge
pixels (``image.ocr_resize``). Target: the text in simplified Chinese, NFKC, its first
``max_tgt_length`` characters, lower case.
"""

from __future__ import annotations

import random
import unicodedata
import warnings
from typing import Sequence

from PIL import Image

from .base import TSVDataset, model_inputs
from .image import DOCUMENT_PATCH_SIZE, ocr_resize

with warnings.catch_warnings():  # zhconv 1.4.3 tries the deprecated pkg_resources first
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", DeprecationWarning)
    import zhconv


def normalize_ocr_target(text: str) -> str:
    """Traditional -> simplified Chinese, then NFKC (full-width -> ASCII): ``"中國ＡＢ"`` -> ``"中国AB"``."""
    return unicodedata.normalize("NFKC", zhconv.convert(text, "zh-hans"))


def ocr_inputs(
    image: Image.Image,
    prompt_ids: list[int],
    patch_image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    rng: random.Random | None = None,
    is_document: bool = False,
) -> dict:
    """An RGB image of a text line -> the model's inputs: the prompt, the image by ``ocr_resize``.

    Args:
        rng: draws the padding offset at training time; None centres the image (evaluation).

    Returns:
        {"source": LongTensor [len(prompt_ids) + 2], "patch_image": float32 [3, S, S], "patch_mask": True}
    """
    return model_inputs(prompt_ids, ocr_resize(image, patch_image_size, mean, std, rng, is_document))


class OCRDataset(TSVDataset):
    """OCR rows -> samples (keys in ``ofa_cn.data.base``), plus ``uniq_id`` and ``reference``.

    ``reference`` is the whole normalised text, for the metrics; the target holds its first
    ``max_tgt_length`` characters (truncated before lower-casing, as the original).

    Training (split "train") pads the resized image at a random offset drawn from
    ``sample_rng(index, seed)``; evaluation centres it. The original padded at a random, unseeded
    offset at evaluation too, so its scores were not reproducible.

    Args:
        is_document: document mode (64 x 1920 strip cut into 4 stacked pieces); needs
            patch_image_size 480.
        seed: seed of the training-time padding offsets.
        others: those of ``TSVDataset``.
    """

    FIELDS = ("uniq_id", "image", "text")
    EXTRAS = ("uniq_id", "reference")
    PROMPT = "图片上的文字是什么?"  # ASCII "?"

    def __init__(self, *args, is_document: bool = False, seed: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        patch_image_size = self.patch_image_size
        if is_document and patch_image_size != DOCUMENT_PATCH_SIZE:
            raise ValueError(
                f"document mode needs patch_image_size {DOCUMENT_PATCH_SIZE}, got {patch_image_size}; "
                f"set patch_image_size={DOCUMENT_PATCH_SIZE} or is_document=False."
            )
        self.is_document = is_document
        self.seed = seed

    def nominal_sizes(self) -> tuple[int, int]:
        # A character is at most one token (BERT splits Chinese per character; a Latin word is
        # one or more wordpieces of several characters).
        return len(self.prompt_ids) + 2, self.max_tgt_length + 1

    def build_sample(self, index: int, row: dict[str, str]) -> dict:
        text = normalize_ocr_target(row["text"])
        answer_ids = self.encode_text(index, "text", text[: self.max_tgt_length].lower())
        rng = self.sample_rng(index, self.seed) if self.is_train else None
        inputs = self.build_inputs(self.decode_image(index, row), None, self.tsv.where(index, "image"), rng)
        return self.with_answer(index, inputs, answer_ids, uniq_id=row["uniq_id"], reference=text.lower())

    def build_inputs(self, image, text, where, rng=None):
        return ocr_inputs(image, self.prompt_ids, self.patch_image_size, self.mean, self.std, rng, self.is_document)
