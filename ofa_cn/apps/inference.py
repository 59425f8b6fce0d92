"""Pictures in, captions / boxes / text out: the Python API behind ``ofa-cn caption|ground|ocr``.

    import ofa_cn
    captioner = ofa_cn.load("caption_cn_base.pt")
    captioner("cat.jpg")                                   # '一只猫躺在沙发上'
    captioner(["a.jpg", pil_image, array], batch_size=8)   # a list in, a list out
    ofa_cn.load("refcoco_cn_base.pt")("street.jpg", "穿红色衣服的人")   # [x0, y0, x1, y1] in pixels
    ofa_cn.load("ocr_cn_base.pt").ocr("sign.png", return_scores=True)   # {'text': ..., 'score': ...}

There is no preprocessing here: every image goes through the task's evaluation dataset
(``task.inference_dataset().inference_sample``, the same function and settings that
``scripts/evaluate.py`` uses for TSV rows), and answers come from ``task.answers``, which
evaluation's ``predictions.jsonl`` uses too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from tqdm import tqdm

from ..fairseq_import import import_fairseq

import_fairseq()  # first: the datasets import fairseq, whose own import would configure logging

from .inputs import ImageInput, describe, read_image  # noqa: E402
from ..checkpoints.loading import check_task, load_model, setup_task  # noqa: E402

# command (method) -> the fairseq task that answers it
COMMAND_TASKS = {"caption": "caption", "ground": "refcoco", "ocr": "ocr"}
TASK_ALIASES = {"caption": "caption", "ground": "ground", "grounding": "ground", "refcoco": "ground", "ocr": "ocr"}
# the generator's settings a call may change (ofa_cn.tasks.base.OFATask.build_generator)
GENERATION_OPTIONS = ("beam", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram_size", "lenpen", "unkpen",
                      "temperature")
CALL_OPTIONS = ("batch_size", "return_scores", "progress")
DEFAULT_BATCH_SIZE = 8
ANSWER_KEYS = {"caption": "caption", "ground": "box", "ocr": "text"}  # names in results with scores
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32"/"fp32"/"bfloat16"/"bf16" (or the torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)} (or torch.float32 / torch.bfloat16)")


def parse_device(device: str | torch.device | None) -> torch.device:
    """None -> cuda when available, else cpu; a device that does not exist here is a ValueError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device {device!r}: {e}; expected cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; use device='cpu'")
    return parsed


def check_options(options: dict[str, Any]) -> None:
    """Raises TypeError naming unknown options and listing the valid ones (as Python does for arguments)."""
    unknown = sorted(set(options) - set(GENERATION_OPTIONS) - set(CALL_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; valid options: "
                        f"{', '.join(CALL_OPTIONS + GENERATION_OPTIONS)}")


class Predictor:
    """A checkpoint loaded once, answering the task it was trained for (or any of the three).

    Args:
        checkpoint: released .pt, our own checkpoint, or a folder written by ``ofa-cn convert``.
        task: "caption", "ground" or "ocr"; by default the checkpoint's own task. Needed for
            ``predictor(...)`` with a multitask checkpoint (the methods work without it).
        device: "cpu", "cuda", "cuda:1", ... (default: cuda when available).
        dtype: "float32" (default) or "bfloat16".
        exif: turn photos upright by their EXIF orientation (default True).
        any_task: allow a task that the checkpoint was not trained for (e.g. grounding with a
            caption checkpoint); by default that is an error.
        task_args: overrides of the saved task config, e.g. {"max_image_size": 256}.
    """

    def __init__(self, checkpoint: str | Path, task: str | None = None, device: str | None = None,
                 dtype: str | torch.dtype = "float32", exif: bool = True, any_task: bool = False,
                 task_args: dict[str, Any] | None = None):
        if task is not None and task not in TASK_ALIASES:
            raise ValueError(f"task {task!r}: expected one of caption, ground, ocr")
        self.checkpoint = str(checkpoint)
        self.exif = exif
        self.any_task = any_task
        self.task_args = dict(task_args or {})
        self.device = parse_device(device)
        self.model = load_model(checkpoint, dtype=parse_dtype(dtype), device=self.device)
        self.saved_task = self.model.task_config.get("_name")
        self._tasks: dict[str, tuple[Any, Any]] = {}  # command -> (task, its inference dataset)
        own = {v: k for k, v in COMMAND_TASKS.items()}.get(self.saved_task)
        self.task = TASK_ALIASES[task] if task else own
        if self.task is not None:
            self._task(self.task)  # fails now, not at the first call, when the checkpoint cannot do it

    def __repr__(self) -> str:
        return f"Predictor({self.checkpoint!r}, task={self.task!r}, device={str(self.device)!r})"

    # ---- the three tasks ------------------------------------------------------------------------
    def __call__(self, images, texts=None, **options):
        """``caption``, ``ground`` or ``ocr``, whichever is this predictor's task."""
        if self.task is None:
            raise TypeError(f"{self.checkpoint} is a multitask checkpoint: call .caption(), .ground() or .ocr(), "
                            "or load it with task='caption' (or 'ground', 'ocr')")
        if self.task == "ground":
            return self.ground(images, texts, **options)
        if texts is not None:
            raise TypeError(f"{self.task} takes no text; use predictor(images, **options)")
        return getattr(self, self.task)(images, **options)

    def caption(self, images: ImageInput | Sequence[ImageInput], **options):
        """A Chinese caption for each image (a str, or a list for a list).

        Args:
            images: one input or a list (see ``ofa_cn.apps.inputs.ImageInput``).
            options: batch_size (default 8), return_scores (answers as {"caption", "score"}),
                progress (a tqdm bar; default: shown on a terminal for more than one batch), and
                the generator's settings (beam, max_len_b, no_repeat_ngram_size, ...; default: the
                task's published ones).
        """
        return self._predict("caption", images, None, options)

    def ground(self, images: ImageInput | Sequence[ImageInput], texts: str | Sequence[str], **options):
        """The box [x0, y0, x1, y1] (the image's pixels) that each expression describes.

        ``texts`` is one expression per image, or one str for every image. Options as ``caption``;
        with return_scores the answers are {"box", "score"}.
        """
        if texts is None:
            raise TypeError("ground needs texts: the expression that says which region to find, "
                            "e.g. '穿红色衣服的人'")
        return self._predict("ground", images, texts, options)

    def ocr(self, images: ImageInput | Sequence[ImageInput], **options):
        """The text in each image of a text line. Options as ``caption``; answers {"text", "score"}."""
        return self._predict("ocr", images, None, options)

    # ---- one path for all three -----------------------------------------------------------------
    def _task(self, command: str):
        if command not in self._tasks:
            name = COMMAND_TASKS[command]
            check_task(self.checkpoint, self.saved_task, name, self.any_task)
            task = setup_task(self.model.task_config, name, **self.task_args)
            self._tasks[command] = (task, task.inference_dataset())
        return self._tasks[command]

    def _predict(self, command: str, images, texts, options: dict[str, Any]):
        check_options(options)
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if command == "ground":
            if isinstance(texts, str):
                texts = [texts] * len(images)
            elif single or len(texts) != len(images):
                raise ValueError(f"ground needs one expression per image (or one str for all): {len(images)} "
                                 f"image{'s' if len(images) != 1 else ''}, {len(texts)} texts")
        else:
            texts = [None] * len(images)
        answers = self.run(command, images, list(texts), **options)
        return answers[0] if single else answers

    def run(self, command: str, images: list, texts: list, **options) -> list:
        """The answers for lists of images and texts (None for tasks without text); see ``iter_answers``."""
        return list(self.iter_answers(command, images, texts, **options))

    def iter_answers(self, command: str, images: list, texts: list, batch_size: int = DEFAULT_BATCH_SIZE,
                     return_scores: bool = False, progress: bool | None = None, names: list[str] | None = None,
                     **generation) -> Iterator:
        """Each image's answer, in order, ``batch_size`` images at a time (a batch's answers come
        together, as soon as it is done).

        Args:
            command: "caption", "ground" or "ocr".
            texts: one per image (None for tasks without text).
            names: how errors name each input (default: ``inputs.describe``).
            others: the options of ``caption``.
        """
        check_options({**generation, "batch_size": batch_size})
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r}: expected a positive whole number")
        task, dataset = self._task(command)
        generator = task.build_generator([self.model], {**task.DEFAULT_GENERATION, **generation})
        param = next(self.model.parameters())
        names = names or [describe(src, i) for i, src in enumerate(images)]
        bar = tqdm(total=len(images), desc=command, unit="image",
                   disable=(not progress) if progress is not None else (len(images) <= batch_size or None))
        for start in range(0, len(images), batch_size):
            end = min(start + batch_size, len(images))
            samples = [dataset.inference_sample(i, read_image(images[i], names[i], self.exif), texts[i], names[i])
                       for i in range(start, end)]
            batch = dataset.inference_collater(samples)
            batch["net_input"] = {k: v.to(param.device, param.dtype if v.is_floating_point() else v.dtype)
                                  for k, v in batch["net_input"].items()}
            with torch.no_grad():
                hyps = task.inference_step(generator, [self.model], batch)
            answers = task.answers(batch, [h[0]["tokens"].cpu() for h in hyps])
            bar.update(end - start)
            for answer, h in zip(answers, hyps):
                yield {ANSWER_KEYS[command]: answer, "score": float(h[0]["score"])} if return_scores else answer
        bar.close()
