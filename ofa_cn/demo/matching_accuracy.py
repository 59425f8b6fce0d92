"""How often a model answers image-text matching rows right: 是 or 否, whichever it scores higher.

    from ofa_cn.demo.matching_accuracy import matching_accuracy
    matching_accuracy("demo_out/pretrain/matching_2colours/checkpoint_last.pt",
                      "demo_out/pretrain/curriculum/matching_2colours_test.tsv")   # e.g. 99.5

The pretraining's curriculum starts with such rows (ofa_cn/demo/data/curriculum.py); the demo's
`--pretrain` prints this after that stage, as it prints Acc@0.5 after the grounding stages.
"""

from __future__ import annotations

from pathlib import Path

import torch


def answers_right(logits: torch.Tensor, target: torch.Tensor, yes: int, no: int) -> int:
    """How many rows' target first token is the higher scored of `yes` and `no`.

    logits: [B, T, V] teacher-forced; target: [B, T], each row's first token `yes` or `no`.
    """
    first = logits[:, 0]  # [B, V]
    predicted = torch.where(first[:, yes] > first[:, no], yes, no)  # [B]
    return int((predicted == target[:, 0]).sum())


def matching_accuracy(checkpoint: str | Path, tsv: str | Path, rows: int = 200, batch_size: int = 50) -> float:
    """The percentage of `answers_right` of a checkpoint on the first `rows` rows of a matching TSV (uniq_id,
    image, text, answer), read as unify_task's `matching_data` reads them, on the CPU."""
    from ..checkpoints.loading import load_model, setup_task
    from ..data.matching import NO, YES, MatchingDataset
    from ..data.tsv import TSVFile

    model = load_model(checkpoint)
    # the caption task: the same tokenizer and image settings as the checkpoint's unify_task
    task = setup_task(model.task_config, "caption", data=str(tsv))
    dataset = MatchingDataset(TSVFile(str(tsv), None, MatchingDataset.FIELDS), task.tokenizer,
                              **task.common_dataset_args("valid", 1))
    yes, no = (task.tokenizer.encode(word)[0] for word in (YES, NO))
    count = min(rows, len(dataset))
    correct = 0
    for start in range(0, count, batch_size):
        batch = dataset.collater([dataset[i] for i in range(start, min(start + batch_size, count))])
        with torch.no_grad():
            logits = model(**batch["net_input"])[0]
        correct += answers_right(logits, batch["target"], yes, no)
    return 100.0 * correct / count
