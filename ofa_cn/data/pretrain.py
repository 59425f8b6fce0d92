"""Pretraining samples: the original OFA's objectives on Chinese data.

One dataset index = one row of the image-text file, which gives one or two samples of the first
batch, plus (every ``extra_every``-th row, training only) samples of the second batch from the
optional extra files::

    image-text rows  uniq_id, image, caption, question, refs, gt_objects, dataset_name, type
      type caption            captioning; + image-text matching (train)
      type qa                 visual question answering (refs "conf|!+answer&&..."), answer weight
                              = its confidence; + question-answer matching (train)
      type visual_grounding   grounding (refs "x0,y0,x1,y1"); + grounded captioning
    text rows       uniq_id, text          text infilling, two rows at a time (weight 2)
    image rows      image_id, image, code  image infilling: the c x c centre of a 2c x 2c image
                                           is blanked, the target is its VQGAN codes, one per
                                           8 x 8 pixels of the centre (weight 2)
    detection rows  image_id, image, label detection: "x0,y0,x1,y1,cat_id,name&&..." (weight 2)

The extra rows are taken in turn (row ``k`` of each file at the ``k``-th extra draw), so they do
not depend on the DataLoader's workers. The Chinese pretraining prompts were never released;
``PROMPTS`` are ours, in the style of the released finetuning prompts.

Fixed from the original: captions are cut to ``max_*_length`` tokens (it counted whitespace
words, which never cuts unspaced Chinese); ``cc12m`` rows' targets keep their first two tokens
(the original padded them away, an English-only trick); text rows keep their first 256 tokens
(it kept the last).
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from PIL import Image

from ..tokenizer import BOS, EOS, PAD
from . import augment
from .base import TSVDataset
from .boxes import box_to_bins, parse_box
from .caption import CaptionDataset, clean_caption
from .collate import collate
from .errors import FIX_OR_SKIP, DataError
from .grounding import GroundingDataset, pre_caption
from .image import decode_image, normalize, resize_square, resize_with_box, to_tensor
from .infilling import text_infilling, word_start_table
from .matching import NO, YES
from .matching import PROMPT_TEMPLATE as MATCHING_PROMPT
from .negatives import Negatives
from .tsv import TSVFile

logger = logging.getLogger(__name__)

PROMPTS = {
    "caption": CaptionDataset.PROMPT,  # the released finetuning prompts
    "image_text_match": MATCHING_PROMPT,
    "question_answer_match": '问题" {} "的答案是" {} "吗?',
    "grounding": GroundingDataset.PROMPT_TEMPLATE,
    "grounded_caption": "这个区域描述了什么内容? 区域:",
    "text_infilling": '" {} "的完整文本是什么?',
    "image_infilling": "图片中间部分是什么?",
    "detection": "图片中有哪些物体?",
}
PAIR_CONF, EXTRA_CONF = 1.0, 2.0
# The original's pretraining sizes (unify_dataset.py):
MAX_PAIR_IMAGE_SIDE = 480  # image-text pairs are resized to a short side in [patch_image_size, this] ...
MAX_PAIR_LONG_SIDE = 672  # ... with the long side at most this, then centre-cropped
DETECTION_SCALE = (1.0, 1.5)  # large_scale_jitter's scale_min, scale_max
TEXT_INFILLING_MAX_TOKENS = 256
VQGAN_FACTOR = 8  # one code per 8 x 8 pixels of the blanked c x c centre
QA_SEPARATOR, QA_CONF_SEPARATOR = "&&", "|!+"


class PretrainDataset(TSVDataset):
    """Pretraining rows -> ``(first-batch samples, second-batch samples)``; ``collater`` returns
    one batch, or a list of two when the second is not empty (the criterion adds their losses).

    Args:
        tsv: the image-text rows (FIELDS).
        texts, images, detections: the extra files (TEXT_FIELDS, IMAGE_FIELDS, DETECTION_FIELDS),
            each optional.
        negatives: the matching task's negatives; None drops the matching examples.
        max_image_size: box coordinates are divided by this before quantisation.
        num_bins, code_dict_size: the dictionary's bin and code blocks.
        code_image_size: c; image-infilling images are 2c x 2c with the centre c x c blanked.
        mask_ratio, poisson_lambda, replace_length: text infilling (``ofa_cn.data.infilling``).
        extra_every: one extra draw per this many image-text rows.
        seed: of the per-sample randomness (with the epoch and the index).
        others: those of ``TSVDataset``.
    """

    FIELDS = ("uniq_id", "image", "caption", "question", "refs", "gt_objects", "dataset_name", "type")
    TEXT_FIELDS = ("uniq_id", "text")
    IMAGE_FIELDS = ("image_id", "image", "code")
    DETECTION_FIELDS = ("image_id", "image", "label")
    TYPES = ("caption", "qa", "visual_grounding")

    def __init__(self, *args, texts: TSVFile | None = None, images: TSVFile | None = None,
                 detections: TSVFile | None = None, negatives: Negatives | None = None, max_image_size: int = 512,
                 num_bins: int = 1000, code_dict_size: int = 8192, code_image_size: int = 128,
                 mask_ratio: float = 0.3, poisson_lambda: float = 3.0, replace_length: int = 1,
                 extra_every: int = 8, seed: int = 7, **kwargs):
        super().__init__(*args, **kwargs)
        tokenizer, split, patch_image_size = self.tokenizer, self.split, self.patch_image_size
        for name, extra, fields in (("texts", texts, self.TEXT_FIELDS), ("images", images, self.IMAGE_FIELDS),
                                    ("detections", detections, self.DETECTION_FIELDS)):
            if extra is not None and tuple(extra.field_names) != fields:
                raise ValueError(f"{name}: {extra.path} must be opened with the fields {fields}, "
                                 f"found {tuple(extra.field_names)}")
            if extra is not None and len(extra) == 0:
                raise ValueError(f"{name}: {extra.path} has no rows")
        if num_bins != tokenizer.num_bins:
            raise ValueError(f"num_bins ({num_bins}) differs from the tokenizer's ({tokenizer.num_bins})")
        self.texts, self.images, self.detections = texts, images, detections
        self.negatives = negatives
        self.max_image_size = max_image_size
        self.num_bins = num_bins
        self.code_dict_size = code_dict_size
        self.code_offset = len(tokenizer) - code_dict_size - num_bins  # id of <code_0>
        self.code_image_size = code_image_size
        self.mask_ratio, self.poisson_lambda, self.replace_length = mask_ratio, poisson_lambda, replace_length
        self.extra_every = extra_every
        self.seed = seed
        self.mask_idx = tokenizer.indices["<mask>"]
        self.word_starts = word_start_table(tokenizer.symbols)
        self.scales = list(range(patch_image_size, MAX_PAIR_IMAGE_SIDE + 1)) or [patch_image_size]
        # each prompt's text around its "{}" slots, tokenized once
        self.prompt_pieces = {name: [tokenizer.encode(piece) for piece in template.split("{}")]
                              for name, template in PROMPTS.items()}
        # what fairseq batches by, an estimate: the longest prompt with a full-length text in it
        longest_prompt = max(sum(map(len, pieces)) for pieces in self.prompt_pieces.values())
        self._nominal_sizes = (longest_prompt + self.max_src_length + 2, self.max_tgt_length + 1)
        if negatives is None and split == "train":
            logger.info("no neg_sample_dir: pretraining without the image-text matching examples")

    def nominal_sizes(self) -> tuple[int, int]:
        return self._nominal_sizes

    # ------------------------------------------------------------------ helpers

    def _text(self, text: str, limit: int) -> list[int]:
        return self.tokenizer.encode(text)[:limit]

    def _prompt(self, name: str, *parts: list[int]) -> list[int]:
        """The prompt ``name`` with token lists in place of its ``{}`` slots."""
        first, *rest = self.prompt_pieces[name]
        ids = list(first)
        for part, piece in zip(parts, rest):
            ids += part + piece
        return ids

    def _sample(self, index, answer_ids, image, source_ids, conf, code_mask=False, patch_mask=True):
        sample = self.make_sample(index, answer_ids, image, source_ids=source_ids)
        sample.update(conf=float(conf), code_mask=code_mask, patch_mask=patch_mask)
        return sample

    def _pixels(self, img: Image.Image) -> torch.Tensor:
        return normalize(to_tensor(img), self.mean, self.std)

    def _bins(self, box) -> list[int]:
        return [self.tokenizer.bin_id(k) for k in box_to_bins(box, self.max_image_size, self.num_bins)]

    # ------------------------------------------------------------------ image-text rows

    def build_sample(self, index: int, row: dict[str, str]):
        rng = self.sample_rng(index, self.seed)
        kind = row["type"].strip()
        if kind not in self.TYPES:
            raise DataError(self.tsv.where(index, "type"),
                            f"expected one of {', '.join(self.TYPES)}, found {kind!r}. {FIX_OR_SKIP}")
        image = self.decode_image(index, row)
        build = {"caption": self._caption, "qa": self._qa, "visual_grounding": self._grounding}[kind]
        pairs = build(index, row, image, rng)
        extras = []
        if self.is_train and index % self.extra_every == 0:
            extras = self._extras(index, index // self.extra_every, rng)
        return pairs, extras

    def _pair_image(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        if not self.is_train:
            return resize_square(image, self.patch_image_size, self.mean, self.std)
        image, _ = augment.random_resize(image, self.scales, MAX_PAIR_LONG_SIDE, rng)
        image = augment.center_crop(image, self.patch_image_size)
        return self._pixels(augment.random_augment(image, rng))

    def _matching(self, index, image, text_ids, conf, matches: bool) -> dict:
        return self._sample(index, self.tokenizer.encode(YES if matches else NO), image, text_ids, conf)

    def _caption(self, index, row, image, rng):
        caption = clean_caption(row["caption"])
        target = self.encode_text(index, "caption", caption)[: self.max_tgt_length]
        pixels = self._pair_image(image, rng)
        samples = [self._sample(index, target, pixels, self._prompt("caption"), PAIR_CONF)]
        if self.is_train and self.negatives is not None:
            matches = rng.random() >= 0.5
            text = caption if matches else clean_caption(self.negatives.caption(caption, row["gt_objects"], rng))
            source = self._prompt("image_text_match", self._text(text, self.max_src_length))
            samples.append(self._matching(index, pixels, source, PAIR_CONF, matches))
        return samples

    def _qa(self, index, row, image, rng):
        question = self.encode_text(index, "question", row["question"])[: self.max_src_length]
        answers = {}
        for item in row["refs"].split(QA_SEPARATOR):
            conf, sep, answer = item.partition(QA_CONF_SEPARATOR)
            try:
                answers[answer.strip()] = float(conf)
            except ValueError:
                sep = ""
            if not sep or not answer.strip():
                raise DataError(self.tsv.where(index, "refs"),
                                f'expected "confidence|!+answer" items joined by "&&", found {item!r}. {FIX_OR_SKIP}')
        answer = max(answers, key=answers.get)
        conf = answers[answer]
        pixels = self._pair_image(image, rng)
        samples = [self._sample(index, self.encode_text(index, "refs", answer), pixels, question, conf)]
        if self.is_train and self.negatives is not None:
            matches = rng.random() >= 0.5
            shown = answer if matches else self.negatives.answer(answer, conf, rng)
            source = self._prompt("question_answer_match", question, self._text(shown, self.max_src_length))
            samples.append(self._matching(index, pixels, source, conf, matches))
        return samples

    def _grounding(self, index, row, image, rng):
        box = parse_box(row["refs"], self.tsv.where(index, "refs"), image.size)
        expression = self._text(pre_caption(row["caption"], self.max_src_length), self.max_src_length)
        if not expression:
            raise DataError(self.tsv.where(index, "caption"), f"expected a referring expression, found "
                            f"{row['caption']!r}. {FIX_OR_SKIP}")
        if self.is_train:
            image, boxes = augment.random_resize(image, self.scales, MAX_PAIR_LONG_SIDE, rng, [box])
            image, box = augment.object_center_crop(image, boxes[0], self.patch_image_size)
            pixels = self._pixels(image)
        else:
            pixels, box, _, _ = resize_with_box(image, box, self.patch_image_size, self.mean, self.std)
        region = self._bins(box)
        caption = self._text(clean_caption(row["caption"]), self.max_tgt_length)
        return [
            self._sample(index, region, pixels, self._prompt("grounding", expression), PAIR_CONF),
            self._sample(index, caption, pixels, self._prompt("grounded_caption") + region, PAIR_CONF),
        ]

    # ------------------------------------------------------------------ the second batch

    def _extras(self, index: int, draw: int, rng: random.Random) -> list[dict]:
        """The second-batch samples of draw ``draw`` (their ``id`` is the image-text row's)."""
        samples = []
        if self.texts is not None:
            for k in (2 * draw, 2 * draw + 1):  # two text rows per draw, as the original
                samples.append(self._text_infilling(index, k % len(self.texts), rng))
        if self.images is not None:
            samples.append(self._image_infilling(index, draw % len(self.images)))
        if self.detections is not None:
            samples.append(self._detection(index, draw % len(self.detections), rng))
        return samples

    def _blank_image(self) -> torch.Tensor:
        side = 2 * self.code_image_size
        return torch.zeros(3, side, side)

    def _text_infilling(self, index: int, row_index: int, rng: random.Random) -> dict:
        row = self.texts[row_index]
        ids = self.tokenizer.encode(row["text"].strip())[:TEXT_INFILLING_MAX_TOKENS]
        if not ids:
            raise DataError(self.texts.where(row_index, "text"), f"expected text, found {row['text']!r}. {FIX_OR_SKIP}")
        tokens = torch.tensor([BOS] + ids + [EOS])
        noisy = text_infilling(tokens, self.word_starts, self.mask_idx, np.random.default_rng(rng.getrandbits(64)),
                               self.mask_ratio, self.poisson_lambda, self.replace_length)
        source = self._prompt("text_infilling", noisy[1:-1].tolist())
        return self._sample(index, ids, self._blank_image(), source, EXTRA_CONF, patch_mask=False)

    def _image_infilling(self, index: int, row_index: int) -> dict:
        row = self.images[row_index]
        image = decode_image(row["image"], self.images.where(row_index, "image"))
        side, c = 2 * self.code_image_size, self.code_image_size
        if image.size != (side, side):
            raise DataError(self.images.where(row_index, "image"),
                            f"expected a {side}x{side} image (2 x code_image_size), found {image.size[0]}x"
                            f"{image.size[1]}. Resize the images when you compute their codes. {FIX_OR_SKIP}")
        expected = (c // VQGAN_FACTOR) ** 2
        try:
            codes = [int(v) for v in row["code"].split()]
        except ValueError:
            codes = []
        if len(codes) != expected or not all(0 <= v < self.code_dict_size for v in codes):
            raise DataError(self.images.where(row_index, "code"),
                            f"expected {expected} space-separated VQGAN codes in [0, {self.code_dict_size}), found "
                            f"{row['code'][:60]!r}. {FIX_OR_SKIP}")
        pixels = self._pixels(image)
        pixels[:, c // 2: c // 2 + c, c // 2: c // 2 + c] = 0
        target = [self.code_offset + v for v in codes]
        return self._sample(index, target, pixels, self._prompt("image_infilling"), EXTRA_CONF, code_mask=True)

    def _detection(self, index: int, row_index: int, rng: random.Random) -> dict:
        row = self.detections[row_index]
        image = decode_image(row["image"], self.detections.where(row_index, "image"))
        boxes, names = [], []
        for k, item in enumerate(row["label"].strip().split("&&")):
            parts = item.split(",", 5)
            where = self.detections.where(row_index, "label")
            if len(parts) != 6:
                raise DataError(where, f'object {k}: expected "x0,y0,x1,y1,category_id,name", found {item!r}. '
                                f"{FIX_OR_SKIP}")
            boxes.append(parse_box(",".join(parts[:4]), f"{where}, object {k}", image.size))
            names.append(parts[5])
        image, box_t = augment.random_hflip(image, boxes, rng)
        image, box_t, names = augment.large_scale_jitter(image, box_t, names, 2 * self.code_image_size,
                                                         *DETECTION_SCALE, rng)
        target = []
        for box, name in zip(box_t, names):  # boxes the crop left out are gone with their names
            target += self._bins(box) + self.tokenizer.encode(name)
        return self._sample(index, target, self._pixels(image), self._prompt("detection"), EXTRA_CONF)

    # ------------------------------------------------------------------ fairseq hooks

    def collater(self, items):
        return collate_two_batches(items)


def collate_two_batches(items: list[tuple[list[dict], list[dict]] | None]) -> dict | list[dict]:
    """``(first, second)`` sample lists per index -> the first batch, or [first, second] batches
    when any index brought second-batch samples (None items, skipped rows, are dropped)."""
    items = [item for item in items if item is not None]
    first = [s for pairs, _ in items for s in pairs]
    second = [s for _, extras in items for s in extras]
    batch = collate(first, PAD, EOS)
    return [batch, collate(second, PAD, EOS)] if second else batch
