"""Evaluate a checkpoint on a TSV split: predictions (JSONL) and metrics (JSON).

The task's own dataset, generator and metrics are used, set up from the checkpoint's saved task
config (so image size, bins and normalisation travel with the weights). Runs on CPU or GPU, and
across processes under `torchrun` (rows are split by rank and gathered on rank 0).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..fairseq_import import import_fairseq

import_fairseq()  # first: fairseq's own import would configure logging (scripts/evaluate.py's basicConfig)

from ..generate import check_generation_options  # noqa: E402
from ..checkpoints.loading import load_for_task  # noqa: E402
from .no_references import PlaceholderReferences, lacks_references, write_predictions_only  # noqa: E402

logger = logging.getLogger(__name__)


class ScoringError(RuntimeError):
    """Scoring failed after generation; the message names the saved predictions file."""


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
    model, task = load_for_task(checkpoint, task_name, device=device, dtype=dtype, any_task=any_task,
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
