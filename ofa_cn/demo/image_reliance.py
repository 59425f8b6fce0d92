"""Does a model look at its inputs? Its loss with each row's own image against another row's image,
and, where the rows' prompts differ (grounding: the expression), with another row's prompt.

    from ofa_cn.demo.image_reliance import image_reliance_on_data
    image_reliance_on_data("demo_out/run/checkpoint_last.pt", {"ocr": "demo_out/data/ocr_test.tsv"})
    # {'ocr': {'own': 3.735, 'other': 4.388, 'rows': 64, 'tokens': 335}}

A model that ignores the image predicts the same targets equally well with any picture, so the
two losses agree; one that reads the picture loses the more, the more it relies on it. The same
holds for the expression of a grounding row: a model that boxes some object whatever it is asked
for (the demo's pretrained model of 2026-12-06 did: README, demo) loses nothing with another
row's expression. The demo prints these losses for each task, beside the metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def target_nll(model: torch.nn.Module, batch: dict[str, Any], pad: int) -> tuple[float, int]:
    """Teacher-forced mean negative log-likelihood of the batch's targets, in nats per token.

    batch: a collated batch (`net_input`, `target` [B, T]); padded target positions are skipped.
    Returns (mean nll, number of target tokens).
    """
    with torch.no_grad():
        logits = model(**batch["net_input"])[0]  # [B, T, V]
        target = batch["target"]
        nll = F.cross_entropy(logits.float().transpose(1, 2), target, ignore_index=pad, reduction="sum")
    tokens = int((target != pad).sum())
    return float(nll) / tokens, tokens


def image_reliance(model: torch.nn.Module, batch: dict[str, Any], pad: int) -> dict[str, float]:
    """Mean target nll with the rows' own images and with the images moved one row down.

    Row i is scored with the image of row i - 1 (the first with the last row's), so every row
    gets a picture of the same data that is not its own. Where the rows' source tokens differ,
    also with the sources (and their lengths) moved one row down, the images kept.
    Returns {"own": nats/token, "other": nats/token, "rows": B, "tokens": target tokens}, plus
    "other_text": nats/token when the sources differ.
    """
    images = batch["net_input"].get("patch_images")
    if images is None or images.size(0) < 2:
        raise ValueError(f"image_reliance needs a batch of at least 2 rows with images; found "
                         f"{'no patch_images' if images is None else f'{images.size(0)} row'}")
    own, tokens = target_nll(model, batch, pad)
    other, _ = target_nll(model, _moved(batch, "patch_images"), pad)
    result = {"own": own, "other": other, "rows": images.size(0), "tokens": tokens}
    source = batch["net_input"]["src_tokens"]
    if not torch.equal(source, source.roll(1, dims=0)):  # the prompts differ: does the model read them?
        result["other_text"], _ = target_nll(model, _moved(batch, "src_tokens", "src_lengths"), pad)
    return result


def _moved(batch: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The batch with each of net_input's ``keys`` moved one row down (row i gets row i - 1's)."""
    net_input = batch["net_input"]
    return {**batch, "net_input": {**net_input, **{k: net_input[k].roll(1, dims=0) for k in keys}}}


def image_reliance_on_data(checkpoint: str | Path, data: dict[str, str | Path], rows: int = 64,
                           device: str = "cpu") -> dict[str, dict[str, float]]:
    """`image_reliance` of a checkpoint, loaded once, on the first `rows` rows of each TSV.

    data: task name (caption, refcoco or ocr) -> TSV, read as that task reads its test split.
    Returns task name -> `image_reliance`'s result.
    """
    from fairseq.utils import apply_to_sample

    from ..checkpoints.loading import load_model, setup_task

    model = load_model(checkpoint, device=device)
    results = {}
    for task_name, path in data.items():
        task = setup_task(model.task_config, task_name, data=str(path))
        dataset = task.build_dataset(task.open_tsv(str(path)), "test", 1)
        batch = dataset.collater([dataset[i] for i in range(min(rows, len(dataset)))])
        batch = apply_to_sample(lambda t: t.to(device), batch)
        results[task_name] = image_reliance(model, batch, task.target_dictionary.pad())
    return results
