"""Visual grounding (RefCOCO-CN): ``uniq_id, image, text, "x0,y0,x1,y1"`` rows -> samples.

Source: ``这段文字" {} "描述的是哪个区域？`` around the cleaned expression. Image: resized to S x S
with the box. Target: the box as four ``<bin_k>`` tokens (x0 y0 x1 y1), quantised after the
resize and relative to ``max_image_size``.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from PIL import Image

from ..tokenizer import ChineseTokenizer
from .base import TSVDataset, model_inputs
from .boxes import box_to_bins, parse_box
from .errors import DataError
from .image import resize_square, scale_box

_WHITESPACE_RUNS = re.compile(r"\s{2,}")


def pre_caption(text: str, max_words: int) -> str:
    """The original's expression cleaning: lower-case, drop leading ``,.!?*#:;~``, ``-`` and ``/``
    -> space, ``<person>`` -> ``person``, collapse whitespace, keep the first ``max_words`` words.

    Example: ``"~Left-Side/Man  "`` -> ``"left side man"`` (a leading space keeps the ``~``).
    """
    text = text.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = _WHITESPACE_RUNS.sub(" ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words])


# ASCII quotes with a space inside each, full-width ？ at the end
PROMPT_TEMPLATE = '这段文字" {} "描述的是哪个区域？'


def grounding_inputs(
    image: Image.Image,
    text: str,
    tokenizer: ChineseTokenizer,
    patch_image_size: int,
    max_src_length: int,
    mean: Sequence[float],
    std: Sequence[float],
    where: str,
) -> dict:
    """An RGB image and an expression -> the model's inputs and the resize ratios that map a box back.

    The expression is cleaned (``pre_caption``) and put in the prompt; the image is resized to
    S x S whatever its aspect ratio (the original's ``RandomResize([S], max_size=S)``).

    Returns:
        {"source": LongTensor [Ls], "patch_image": float32 [3, S, S], "patch_mask": True,
        "w_resize_ratio": float32 0-dim S / width, "h_resize_ratio": float32 0-dim S / height}

    Raises:
        DataError: nothing of the expression is left to encode (named by ``where``).
    """
    expression = pre_caption(text, max_src_length)
    if not tokenizer.encode(expression):
        raise DataError(where, f"expected non-empty text: the expression {text!r} has no tokens after cleaning; "
                               "say which region to find, e.g. '穿红色衣服的人'.")
    width, height = image.size
    return {
        **model_inputs(tokenizer.encode(PROMPT_TEMPLATE.format(expression)),
                       resize_square(image, patch_image_size, mean, std)),
        "w_resize_ratio": torch.tensor(patch_image_size / width, dtype=torch.float32),
        "h_resize_ratio": torch.tensor(patch_image_size / height, dtype=torch.float32),
    }


class GroundingDataset(TSVDataset):
    """Grounding rows -> samples (keys in ``ofa_cn.data.base``), plus:

    uniq_id          str
    w_resize_ratio   float32 0-dim   S / original width
    h_resize_ratio   float32 0-dim   S / original height
    region_coord     float32 [4]     the box in ORIGINAL pixels (x0, y0, x1, y1)

    Args:
        max_image_size: the divisor of resized coordinates before quantisation (task config,
            default 512); must be >= patch_image_size so every bin exists.
        num_bins: number of ``<bin_k>`` tokens (task config, 1000); must match the tokenizer.
        others: those of ``TSVDataset`` (``max_src_length`` limits the expression's words).
    """

    FIELDS = ("uniq_id", "image", "text", "box")
    EXTRAS = ("uniq_id", "w_resize_ratio", "h_resize_ratio", "region_coord")
    PROMPT_TEMPLATE = PROMPT_TEMPLATE

    def __init__(self, *args, max_image_size: int = 512, num_bins: int = 1000, **kwargs):
        super().__init__(*args, **kwargs)
        patch_image_size, tokenizer = self.patch_image_size, self.tokenizer
        if patch_image_size > max_image_size:
            raise ValueError(
                f"patch_image_size ({patch_image_size}) > max_image_size ({max_image_size}): resized boxes "
                f"would quantise past the last bin; use max_image_size >= patch_image_size."
            )
        if num_bins != tokenizer.num_bins:
            raise ValueError(
                f"num_bins ({num_bins}) differs from the tokenizer's ({tokenizer.num_bins}); build the "
                f"tokenizer with get_tokenizer(num_bins={num_bins})."
            )
        self.max_image_size = max_image_size
        self.num_bins = num_bins
        template_ids = tokenizer.encode(self.PROMPT_TEMPLATE.format(""))
        self._max_source = len(template_ids) + 2  # + the expression, bounded below

    def nominal_sizes(self) -> tuple[int, int]:
        # An estimate: the expression has at most max_src_length words, counted as one token each.
        return self._max_source + self.max_src_length, 5

    def build_sample(self, index: int, row: dict[str, str]) -> dict:
        expression = pre_caption(row["text"], self.max_src_length)
        self.encode_text(index, "text", expression)  # raises DataError when nothing is left
        image = self.decode_image(index, row)
        box = parse_box(row["box"], self.tsv.where(index, "box"), image.size)
        inputs = self.build_inputs(image, row["text"], self.tsv.where(index, "text"))
        width, height = image.size  # the ratios as Python floats, as the original scaled the box
        box_resized = scale_box(box, self.patch_image_size / width, self.patch_image_size / height)
        bins = box_to_bins(box_resized, self.max_image_size, self.num_bins)
        answer_ids = [self.tokenizer.bin_id(k) for k in bins]
        return self.with_answer(
            index, inputs, answer_ids, uniq_id=row["uniq_id"], region_coord=torch.tensor(box, dtype=torch.float32)
        )

    def build_inputs(self, image, text, where, rng=None):
        return grounding_inputs(image, text or "", self.tokenizer, self.patch_image_size, self.max_src_length,
                                self.mean, self.std, where)
