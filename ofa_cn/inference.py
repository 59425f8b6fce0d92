"""Single images in, captions / boxes / text out: the Python API behind `ofa-cn caption|ground|ocr`.

    from ofa_cn.inference import Predictor
    p = Predictor("caption_cn_base.pt")
    p.caption(["cat.jpg"])                      # ['一只猫躺在沙发上']
    Predictor("refcoco_cn_base.pt").ground(["street.jpg"], ["穿红色衣服的人"])   # [[x0, y0, x1, y1]]

Preprocessing settings (image size, normalisation, bins, max_image_size) are read from the
checkpoint's saved task config; several images are batched in one forward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from .data.caption import CaptionDataset
from .data.collate import collate
from .data.grounding import GroundingDataset, pre_caption
from .data.image import MEAN_STD, ocr_resize, resize_square
from .data.ocr import OCRDataset
from .evaluate import load_pretrained, setup_task
from .tokenizer import BOS, EOS, PAD

# which saved task names can do what ("unify_task" multitask checkpoints can do all three)
CAPABLE = {"caption": ("caption", "unify_task"), "refcoco": ("refcoco", "unify_task"), "ocr": ("ocr", "unify_task")}


def open_image(path: str | Path | Image.Image) -> Image.Image:
    """An RGB image from a path (or an Image); clear errors for a missing or unreadable file."""
    if isinstance(path, Image.Image):
        return path.convert("RGB")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {path} could not be read as a picture ({e}); is it a PNG/JPEG file?") from None


class Predictor:
    """A checkpoint loaded once, for one of the three tasks.

    Args:
        checkpoint: released .pt, our own checkpoint, or an exported folder.
        device: "cpu" / "cuda" (default: cuda when available).
        dtype: torch.float32 (default) or torch.bfloat16.
        task_args: overrides of the saved task config (e.g. {"max_image_size": 256}).
        any_task: allow a command that the checkpoint was not trained for (e.g. grounding with a
            caption checkpoint); by default that is an error.
    """

    def __init__(self, checkpoint: str | Path, device: str | None = None, dtype: torch.dtype = torch.float32,
                 any_task: bool = False, task_args: dict[str, Any] | None = None):
        self.any_task = any_task
        self.task_args = task_args or {}
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.checkpoint = str(checkpoint)
        self.model, self.saved = load_pretrained(checkpoint, dtype=dtype, device=self.device)
        self.saved_task = self.saved.get("_name")
        self._tasks: dict[str, Any] = {}

    def task(self, name: str):
        if self.saved_task not in CAPABLE[name] and not self.any_task:
            raise ValueError(f"{self.checkpoint} was trained for the {self.saved_task!r} task; "
                             f"use a {name!r} (or multitask) checkpoint for this command, or --any-task")
        if name not in self._tasks:
            self._tasks[name] = setup_task(self.saved, name, **self.task_args)
        return self._tasks[name]

    def _generate(self, task, samples: list[dict], generation: dict[str, Any]) -> list[torch.Tensor]:
        batch = collate(samples, PAD, EOS)
        param = next(self.model.parameters())
        net_input = {k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device))
                     for k, v in batch["net_input"].items()}
        generator = task.build_generator([self.model], {**task.DEFAULT_GENERATION, **generation})
        hyps = task.inference_step(generator, [self.model], {"net_input": net_input})
        return [h[0]["tokens"].cpu() for h in hyps]

    def _sample(self, task, source_text: str, pixels: torch.Tensor) -> dict:
        source = [BOS] + task.tokenizer.encode(source_text) + [EOS]
        return {"id": 0, "source": torch.tensor(source), "target": torch.tensor([EOS]),
                "prev_output_tokens": torch.tensor([BOS]), "patch_image": pixels, "patch_mask": True}

    def _norm(self, task):
        return MEAN_STD[bool(task.cfg.imagenet_default_mean_and_std)]

    @torch.no_grad()
    def caption(self, images: Sequence[str | Path | Image.Image], **generation) -> list[str]:
        task = self.task("caption")
        mean, std = self._norm(task)
        size = task.cfg.patch_image_size
        samples = [self._sample(task, CaptionDataset.PROMPT, resize_square(open_image(im), size, mean, std))
                   for im in images]
        return [task.decode_text(t) for t in self._generate(task, samples, generation)]

    @torch.no_grad()
    def ground(self, images: Sequence[str | Path | Image.Image], texts: Sequence[str], **generation) -> list[list[float]]:
        """Boxes [x0, y0, x1, y1] in each image's own pixels."""
        if len(images) != len(texts):
            raise ValueError(f"ground needs one expression per image: {len(images)} images, {len(texts)} texts")
        task = self.task("refcoco")
        mean, std = self._norm(task)
        size = task.cfg.patch_image_size
        samples, ratios = [], []
        for im, text in zip(images, texts):
            expression = pre_caption(text, task.cfg.max_src_length)
            if not expression:
                raise ValueError(f"the expression for {im} is empty; say which region to find, e.g. '穿红色衣服的人'")
            img = open_image(im)
            ratios.append((size / img.width, size / img.height))
            samples.append(self._sample(task, GroundingDataset.PROMPT_TEMPLATE.format(expression),
                                        resize_square(img, size, mean, std)))
        tokens = self._generate(task, samples, generation)
        return [task.tokens_to_box(t, w, h) for t, (w, h) in zip(tokens, ratios)]

    @torch.no_grad()
    def ocr(self, images: Sequence[str | Path | Image.Image], **generation) -> list[str]:
        task = self.task("ocr")
        mean, std = self._norm(task)
        size = task.cfg.patch_image_size
        samples = [self._sample(task, OCRDataset.PROMPT,
                                ocr_resize(open_image(im), size, mean, std, rng=None,
                                           is_document=getattr(task.cfg, "is_document", False)))
                   for im in images]
        return [task.decode_text(t).replace(" ", "") for t in self._generate(task, samples, generation)]
