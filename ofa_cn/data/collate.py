"""One collate for every task: sample dicts -> the batch the model, criterion and task read.

Batch layout (B = samples kept, Ls/Lt = longest source/target)::

    id                     LongTensor [B]          dataset row of each sample
    nsentences, ntokens    int                     ntokens = non-pad target tokens
    net_input.src_tokens           [B, Ls] long    right-padded with pad
    net_input.src_lengths          [B] long        non-pad tokens per row
    net_input.patch_images         [B, 3, S, S] float
    net_input.patch_masks          [B] bool        True = the sample has an image
    net_input.prev_output_tokens   [B, Lt] long    right-padded (absent without targets)
    net_input.code_masks           [B] bool        True = the target is image codes (pretraining only)
    target                         [B, Lt] long    right-padded (None without targets)
    conf                           [B] float       per-sample loss weight (pretraining only)
    <extras>                       see ``collate``

The original had three copies of this function (caption, OCR, refcoco with three more keys).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from fairseq.data import data_utils


def batch_key(sample_key: str) -> str:
    """The batch name of a per-sample extra: ``uniq_id`` -> ``uniq_ids``; ``references`` stays."""
    return sample_key if sample_key.endswith("s") else sample_key + "s"


def _merge(samples: list[dict], key: str, pad_idx: int, eos_idx: int) -> torch.Tensor:
    # fairseq's collate_tokens, right padding (left_pad=False), as the original's data_utils did.
    return data_utils.collate_tokens([s[key] for s in samples], pad_idx, eos_idx, left_pad=False)


def _stack_extra(values: list[Any]) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(values)  # e.g. [B] ratios from 0-dim tensors, [B, 4] boxes
    return values  # strings, lists of references


def collate(
    samples: Sequence[dict | None],
    pad_idx: int,
    eos_idx: int,
    extras: Sequence[str] = (),
) -> dict:
    """Merge sample dicts into a batch (layout in the module docstring).

    Args:
        samples: dicts with ``id``, ``source`` [Ls_i], ``patch_image`` [3, S, S], ``patch_mask``
            (bool), and optionally ``target`` [Lt_i] with ``prev_output_tokens`` [Lt_i],
            ``code_mask`` (bool, default False) and ``conf`` (float, default 1.0). None entries
            (rows a dataset skipped) are dropped.
        pad_idx, eos_idx: the dictionary's pad and eos ids.
        extras: per-sample keys copied to the batch top level under ``batch_key(key)``: tensors are
            stacked (0-dim -> [B], [4] -> [B, 4]), other values listed.

    Returns:
        The batch, or ``{}`` when no sample is left (fairseq treats it as an empty batch).
    """
    samples = [s for s in samples if s is not None]
    if not samples:
        return {}
    src_tokens = _merge(samples, "source", pad_idx, eos_idx)  # [B, Ls]
    src_lengths = src_tokens.ne(pad_idx).long().sum(dim=1)  # [B]
    net_input = {
        "src_tokens": src_tokens,
        "src_lengths": src_lengths,
        "patch_images": torch.stack([s["patch_image"] for s in samples]),  # [B, 3, S, S]
        "patch_masks": torch.tensor([bool(s["patch_mask"]) for s in samples]),  # [B]
    }
    if any("code_mask" in s for s in samples):
        net_input["code_masks"] = torch.tensor([bool(s.get("code_mask", False)) for s in samples])  # [B]
    target = None
    ntokens = 0
    if "target" in samples[0]:
        target = _merge(samples, "target", pad_idx, eos_idx)  # [B, Lt]
        net_input["prev_output_tokens"] = _merge(samples, "prev_output_tokens", pad_idx, eos_idx)  # [B, Lt]
        ntokens = int(target.ne(pad_idx).sum())
    batch = {
        "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
        "nsentences": len(samples),
        "ntokens": ntokens,
        "net_input": net_input,
        "target": target,
    }
    if any("conf" in s for s in samples):
        batch["conf"] = torch.tensor([float(s.get("conf", 1.0)) for s in samples])  # [B]
    for key in extras:
        batch[batch_key(key)] = _stack_extra([s[key] for s in samples])
    return batch
