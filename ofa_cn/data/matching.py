"""Image-text matching: ``uniq_id, image, text, answer`` rows -> samples ("does the image show this?").

Source: ``图片描述的是" {} "吗?`` around the text (the pretraining prompt). Image: square resize, as
captioning. Target: ``是`` (yes) or ``否`` (no), the ``answer`` column. Pretraining makes these pairs
itself from caption rows (``ofa_cn.data.pretrain``); this reader takes pairs written out in advance,
e.g. the demo's, whose negatives swap one colour or shape so that only reading the text can tell.
"""

from __future__ import annotations

from .base import TSVDataset, model_inputs
from .errors import FIX_OR_SKIP, DataError
from .image import resize_square

PROMPT_TEMPLATE = '图片描述的是" {} "吗?'
YES, NO = "是", "否"


class MatchingDataset(TSVDataset):
    """Matching rows -> samples (keys in ``ofa_cn.data.base``), plus ``uniq_id``.

    Args: those of ``TSVDataset`` (``max_src_length`` limits the text's tokens).
    """

    FIELDS = ("uniq_id", "image", "text", "answer")
    EXTRAS = ("uniq_id",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the prompt's tokens before and after the text, encoded once (as pretraining's prompt pieces)
        self.head_ids, self.tail_ids = (self.tokenizer.encode(piece) for piece in PROMPT_TEMPLATE.split("{}"))

    def nominal_sizes(self) -> tuple[int, int]:
        return len(self.head_ids) + len(self.tail_ids) + 2 + self.max_src_length, 2

    def build_sample(self, index: int, row: dict[str, str]) -> dict:
        answer = row["answer"].strip()
        if answer not in (YES, NO):
            raise DataError(self.tsv.where(index, "answer"), f"expected {YES} or {NO}, found {answer!r}. {FIX_OR_SKIP}")
        self.encode_text(index, "text", row["text"])  # raises DataError when the text has no tokens
        inputs = self.build_inputs(self.decode_image(index, row), row["text"], self.tsv.where(index, "image"))
        return self.with_answer(index, inputs, self.tokenizer.encode(answer), uniq_id=row["uniq_id"])

    def build_inputs(self, image, text, where, rng=None):
        source = self.head_ids + self.tokenizer.encode(text or "")[: self.max_src_length] + self.tail_ids
        return model_inputs(source, resize_square(image, self.patch_image_size, self.mean, self.std))
