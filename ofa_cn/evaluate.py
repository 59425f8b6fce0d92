"""Evaluate a checkpoint on a TSV split: predictions (JSONL) and metrics (JSON).

The task's own dataset, generator and metrics are used, set up from the checkpoint's saved task
config (so image size, bins and normalisation travel with the weights). Runs on CPU or GPU, and
across processes under `torchrun` (rows are split by rank and gathered on rank 0).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm import tqdm

from .fairseq_import import import_fairseq

import_fairseq()  # first: fairseq's own import would configure logging (scripts/evaluate.py's basicConfig)

from fairseq import tasks  # noqa: E402

from .checkpoint import load_pretrained  # noqa: E402
from .generate import check_generation_options  # noqa: E402
from .no_references import PlaceholderReferences, lacks_references, write_predictions_only  # noqa: E402

logger = logging.getLogger(__name__)

TASK_NAMES = ("caption", "refcoco", "ocr")


class ScoringError(RuntimeError):
    """Scoring failed after generation; the message names the saved predictions file."""


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


@functools.lru_cache(maxsize=None)
def _log_once(message: str) -> None:
    logger.warning(message)


def setup_task(saved: dict[str, Any], task_name: str | None = None, **overrides: Any):
    """A registered OFA-CN task from a checkpoint's saved task config (plus overrides)."""
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


def load_for_evaluation(checkpoint: str | Path, task_name: str | None = None, device: str = "cpu",
                        dtype: torch.dtype = torch.float32, any_task: bool = False, **task_overrides: Any):
    """(model, task) ready for generation; the model in eval mode on `device`.

    A task other than the checkpoint's own is an error unless `any_task` (multitask checkpoints
    may be evaluated on any of the three).
    """
    model, saved = load_pretrained(checkpoint, dtype=dtype, device=device)
    expected = saved.get("_name")
    if task_name and expected in TASK_NAMES and task_name != expected and not any_task:
        raise ValueError(f"{checkpoint} was trained for the {expected!r} task, not {task_name!r}; "
                         "use a checkpoint of that task (multitask 'unify_task' checkpoints can do all)")
    return model, setup_task(saved, task_name, **task_overrides)


def _to_device(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device=device, dtype=dtype if batch.is_floating_point() else batch.dtype)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, dtype) for k, v in batch.items()}
    return batch


def predict(model, task, dataset, indices: Iterable[int], generation: dict[str, Any], batch_size: int = 16,
            progress: bool = True) -> list[dict[str, Any]]:
    """Generate for `indices` of `dataset`; one prediction row per sample (with its reference)."""
    param = next(model.parameters())
    generator = task.build_generator([model], generation)
    indices = list(indices)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(indices), desc="evaluate", unit="sample", disable=not progress)
    for start in range(0, len(indices), batch_size):
        samples = [dataset[i] for i in indices[start:start + batch_size]]
        batch = dataset.collater(samples)
        if batch:
            batch["net_input"] = _to_device(batch["net_input"], param.device, param.dtype)
            hyps = task.inference_step(generator, [model], batch)
            rows += task.prediction_rows(batch, [h[0]["tokens"].cpu() for h in hyps])
        bar.update(len(samples))
    bar.close()
    return rows


def evaluate(checkpoint: str | Path, data: str | Path, out_dir: str | Path, task_name: str | None = None,
             selected_cols: str | None = None, batch_size: int = 16, generation: dict[str, Any] | None = None,
             device: str | None = None, dtype: torch.dtype = torch.float32, progress: bool = True,
             any_task: bool = False, tokenize: str | None = None, command: str | None = None,
             **task_overrides: Any) -> dict[str, Any] | None:
    """Evaluate `checkpoint` on the TSV `data`; writes predictions.jsonl and metrics.json in out_dir.

    A split without references (its first row's caption / box / text column empty, as MUGE's test
    split) gets predictions.jsonl only, plus MUGE's submission file for captions
    (``no_references.py``). `tokenize` picks the caption metrics' tokens ("char", the default, or
    "jieba"); `command`, the command line that ran this, is recorded in metrics.json.

    Returns the metrics on rank 0 (None on other ranks); for a split without references, what
    was written instead.

    Raises:
        ValueError: a bad generation option (before loading), or DataError: a bad row (with its file,
            row and field). ScoringError: scoring failed; predictions.jsonl is written already.
    """
    check_generation_options(generation or {})  # before minutes of loading, not after
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    model, task = load_for_evaluation(checkpoint, task_name, device=device, dtype=dtype, any_task=any_task,
                                      data=str(data), selected_cols=selected_cols, **task_overrides)
    gen = {**task.DEFAULT_GENERATION, **(generation or {})}
    name = task.cfg._name
    if tokenize is not None and name != "caption":
        raise ValueError(f"--tokenize {tokenize} applies to caption metrics; the task is {name!r}")
    tsv = task.open_tsv(str(data))
    has_references = not lacks_references(tsv, name)
    dataset = task.build_dataset(tsv if has_references else PlaceholderReferences(tsv, name), "test", 1)
    rows = predict(model, task, dataset, range(rank, len(dataset), world), gen, batch_size,
                   progress=progress and rank == 0)
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
        if rank != 0:
            return None
    info = {"task": type(task).__name__, "checkpoint": str(checkpoint), "data": str(data), "generation": gen,
            **({"command": command} if command else {})}
    if not has_references:
        return write_predictions_only(rows, Path(out_dir), name, info)
    # The predictions are written before scoring, so a scoring error never loses the generation.
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            public = {k: v for k, v in row.items() if k not in ("reference", "references")}
            f.write(json.dumps(public, ensure_ascii=False) + "\n")
    try:
        scores = task.corpus_metrics(rows, **({"tokenize": tokenize} if tokenize else {}))
    except Exception as e:  # noqa: BLE001 - any failure: say where the predictions are
        raise ScoringError(f"scoring failed ({type(e).__name__}: {e}); the {len(rows)} predictions are saved in "
                           f"{out_dir / 'predictions.jsonl'}, so fix the cause and score that file with "
                           "`ofa-cn score` instead of generating again") from e
    metrics = {**scores, **info}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    logger.info("metrics: %s", json.dumps({k: v for k, v in metrics.items() if k != "generation"}, ensure_ascii=False))
    return metrics
