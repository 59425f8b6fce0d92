"""Image captioning (MUGE): ``image_id, image, caption`` rows -> samples.

Source: the fixed prompt ``图片描述了什么内容?``. Image: square bicubic resize (aspect ratio not
kept). Target: the caption without ASCII punctuation, at most ``max_tgt_length`` tokens.
"""

from __future__ import annotations

import string
from typing import Sequence

from PIL import Image

from .base import TSVDataset, model_inputs
from .errors import FIX_OR_SKIP, DataError
from .image import resize_square

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)  # ASCII only: ，。！ are kept, as in the original
REFERENCE_SEPARATOR = "&&"


def clean_caption(text: str) -> str:
    """Drop ASCII punctuation and collapse whitespace: ``"一只 猫, 在睡觉."`` -> ``"一只 猫 在睡觉"``."""
    return " ".join(text.translate(_NO_PUNCTUATION).split())


def caption_inputs(
    image: Image.Image, prompt_ids: list[int], patch_image_size: int, mean: Sequence[float], std: Sequence[float]
) -> dict:
    """An RGB image -> the model's inputs: the prompt as ``source``, the image resized to S x S.

    Returns:
        {"source": LongTensor [len(prompt_ids) + 2], "patch_image": float32 [3, S, S], "patch_mask": True}
    """
    return model_inputs(prompt_ids, resize_square(image, patch_image_size, mean, std))


class CaptionDataset(TSVDataset):
    """Caption rows -> samples (keys in ``ofa_cn.data.base``), plus ``image_id`` and ``references``.

    ``references`` is the list of cleaned reference captions: the caption column split on ``&&``
    in every split (SCST rewards need them at train time too). The original split the references
    only after a BERT round-trip had turned ``&&`` into ``& &``, so multi-reference Chinese rows
    were never split.

    The target is the first reference truncated to ``max_tgt_length`` tokens. The original counted
    whitespace-separated words, which never truncates unspaced Chinese; we truncate the token ids.

    Args: those of ``TSVDataset``.
    """

    FIELDS = ("image_id", "image", "caption")
    EXTRAS = ("image_id", "references")
    PROMPT = "图片描述了什么内容?"  # ASCII "?", as the original's BERT prompt

    def nominal_sizes(self) -> tuple[int, int]:
        return len(self.prompt_ids) + 2, self.max_tgt_length + 1

    def build_sample(self, index: int, row: dict[str, str]) -> dict:
        pieces = row["caption"].split(REFERENCE_SEPARATOR)
        references = [clean_caption(p) for p in pieces]
        for k, ref in enumerate(references):
            if not ref:
                which = "the caption" if len(references) == 1 else f"reference {k + 1} of {len(references)}"
                raise DataError(
                    self.tsv.where(index, "caption"),
                    f"expected a non-empty caption, but {which} is empty after removing ASCII punctuation "
                    f"(column text {row['caption'][:80]!r}). {FIX_OR_SKIP}",
                )
        answer_ids = self.encode_text(index, "caption", references[0])[: self.max_tgt_length]
        inputs = self.build_inputs(self.decode_image(index, row), None, self.tsv.where(index, "image"))
        return self.with_answer(index, inputs, answer_ids, image_id=row["image_id"], references=references)

    def build_inputs(self, image, text, where, rng=None):
        return caption_inputs(image, self.prompt_ids, self.patch_image_size, self.mean, self.std)
