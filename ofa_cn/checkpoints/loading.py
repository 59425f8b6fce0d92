"""A checkpoint on disk -> a model that carries its preprocessing settings, and the task to run it.

The one boundary between files and the apps (Predictor, evaluate, the CLI, the demo's image
reliance): none of them reads a checkpoint or sets up a task another way.

    model = load_model("caption_cn_base.pt")       # eval mode, strict; model.task_config is the saved task config
    task = setup_task(model.task_config, "caption")  # the registered task, with the checkpoint's image size, bins, ...

As timm attaches ``pretrained_cfg`` to a model, ``model.task_config`` travels with the weights:
image size, normalisation, bins and prompts come from the checkpoint, not from the caller.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..fairseq_import import import_fairseq

import_fairseq()  # first: the model and the tasks import fairseq, whose own import would configure logging

from .formats import load_pretrained  # noqa: E402

logger = logging.getLogger(__name__)

TASK_NAMES = ("caption", "refcoco", "ocr")  # the tasks a checkpoint can be evaluated or run on
MULTITASK = "unify_task"  # saved task name of checkpoints that can do all three


def parse_task_args(items: list[str]) -> dict[str, Any]:
    """["max_image_size=256", "bins_only=false"] -> {"max_image_size": 256, "bins_only": False}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"task argument {item!r}: expected KEY=VALUE, e.g. max_image_size=512")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a plain string
    return out


def load_model(checkpoint: str | Path, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """The checkpoint's model, loaded strictly, in eval mode, with ``model.task_config`` (a dict,
    the saved task config: ``_name``, patch_image_size, num_bins, ...) attached."""
    model, saved = load_pretrained(checkpoint, dtype=dtype, device=device)
    model.task_config = dict(saved)
    return model


def check_task(source: str | Path, saved_task: str | None, task_name: str, any_task: bool = False) -> None:
    """Refuse to run a checkpoint trained for one task on another (multitask checkpoints run all).

    Raises:
        ValueError: `saved_task` is one of TASK_NAMES other than `task_name`, and not `any_task`.
    """
    if saved_task in TASK_NAMES and saved_task != task_name and not any_task:
        raise ValueError(f"{source} was trained for the {saved_task!r} task, not {task_name!r}; use a {task_name!r} "
                         f"(or multitask {MULTITASK!r}) checkpoint, or any_task=True (--any-task)")


@functools.lru_cache(maxsize=None)
def _log_once(message: str) -> None:
    logger.warning(message)


def setup_task(saved: dict[str, Any], task_name: str | None = None, **overrides: Any):
    """A registered OFA-CN task from a checkpoint's saved task config (plus overrides).

    Args:
        saved: the saved task config (``model.task_config``).
        task_name: caption, refcoco or ocr; default the saved one.
        overrides: task config values that win over the saved ones (None values are ignored).
    """
    from fairseq import tasks
    from omegaconf import OmegaConf

    import ofa_cn.tasks  # noqa: F401  (registers the tasks)

    name = task_name or saved.get("_name")
    if name not in TASK_NAMES:
        raise ValueError(
            f"the checkpoint's task is {saved.get('_name')!r}; evaluation needs one of {TASK_NAMES} "
            "(pass --task to evaluate a multitask checkpoint on one of them)")
    values = {k: v for k, v in saved.items() if not isinstance(v, (dict, list)) or k == "_name"}
    if name != saved.get("_name"):
        values.pop("selected_cols", None)  # the saved columns describe the other task's TSV layout
    values.update({k: v for k, v in overrides.items() if v is not None})
    if name == "refcoco" and "max_image_size" not in values and "patch_image_size" in values:
        # A caption or OCR checkpoint saved no max_image_size; the refcoco default (512) would scale
        # its boxes by 512 / patch_image_size (2x for a 256 px checkpoint). Bins that span the
        # resized image, as the fine-tuned grounding configs have them, are the expected choice.
        values["max_image_size"] = values["patch_image_size"]
        _log_once(f"the checkpoint's task config ({saved.get('_name')!r}) has no max_image_size; grounding "
                  f"uses its patch_image_size, {values['patch_image_size']} (override with max_image_size=...)")
    values["_name"] = name
    return tasks.setup_task(OmegaConf.create(values), from_checkpoint=True)


def load_for_task(checkpoint: str | Path, task_name: str | None = None, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, any_task: bool = False, **task_overrides: Any):
    """(model, task) ready for generation: `load_model`, `check_task`, then `setup_task`."""
    model = load_model(checkpoint, dtype=dtype, device=device)
    if task_name:
        check_task(checkpoint, model.task_config.get("_name"), task_name, any_task)
    return model, setup_task(model.task_config, task_name, **task_overrides)
